package driver

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// FileStore keeps each volume's State in its own JSON file, written atomically (temporary file,
// fsync, rename, fsync of the directory) so that a crash leaves either the old or the new state.
type FileStore struct {
	Dir string
}

var _ StateStore = (*FileStore)(nil)

// NewFileStore creates dir if needed.
func NewFileStore(dir string) (*FileStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory %s: %w", dir, err)
	}
	return &FileStore{Dir: dir}, nil
}

func (s *FileStore) path(name string) string { return filepath.Join(s.Dir, name+".json") }

// Load reads a volume's state; ok is false when there is none.
func (s *FileStore) Load(name string) (State, bool, error) {
	b, err := os.ReadFile(s.path(name))
	if errors.Is(err, os.ErrNotExist) {
		return State{}, false, nil
	}
	if err != nil {
		return State{}, false, fmt.Errorf("read state of volume %s: %w", name, err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return State{}, false, fmt.Errorf("state of volume %s (%s) is corrupt: %w", name, s.path(name), err)
	}
	return st, true, nil
}

// Save writes a volume's state durably.
func (s *FileStore) Save(st State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.Dir, "."+st.Name+".*.tmp")
	if err != nil {
		return fmt.Errorf("save state of volume %s: %w", st.Name, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("save state of volume %s: %w", st.Name, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save state of volume %s: %w", st.Name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save state of volume %s: %w", st.Name, err)
	}
	if err := os.Rename(tmp.Name(), s.path(st.Name)); err != nil {
		return fmt.Errorf("save state of volume %s: %w", st.Name, err)
	}
	if err := s.syncDir(); err != nil {
		return fmt.Errorf("save state of volume %s: sync %s: %w", st.Name, s.Dir, err)
	}
	return nil
}

// Delete removes a volume's state; none is success.
func (s *FileStore) Delete(name string) error {
	if err := os.Remove(s.path(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete state of volume %s: %w", name, err)
	}
	if err := s.syncDir(); err != nil {
		return fmt.Errorf("delete state of volume %s: sync %s: %w", name, s.Dir, err)
	}
	return nil
}

// All returns every saved state, by name.
func (s *FileStore) All() ([]State, error) {
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		return nil, fmt.Errorf("read state directory: %w", err)
	}
	return loadEach(entries, s.Load, func(st State) string { return st.Name })
}

// loadEach loads the record of each <name>.json among entries (other files and hidden ones are
// skipped), sorted by name; the errors of records that cannot be read are joined.
func loadEach[T any](entries []os.DirEntry, load func(name string) (T, bool, error), nameOf func(T) string) ([]T, error) {
	var out []T
	var errs []error
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() || strings.HasPrefix(name, ".") {
			continue
		}
		st, found, err := load(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if found {
			out = append(out, st)
		}
	}
	sort.Slice(out, func(i, j int) bool { return nameOf(out[i]) < nameOf(out[j]) })
	return out, errors.Join(errs...)
}

func (s *FileStore) syncDir() error {
	d, err := os.Open(s.Dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// knownFile holds the names of the volumes the plugin has seen (no .json suffix: not a state).
func (s *FileStore) knownFile() string { return filepath.Join(s.Dir, "known-volumes") }

// LoadKnown implements KnownStore; none saved yet is an empty set.
func (s *FileStore) LoadKnown() (map[string]time.Time, error) {
	b, err := os.ReadFile(s.knownFile())
	if errors.Is(err, os.ErrNotExist) {
		return map[string]time.Time{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", s.knownFile(), err)
	}
	names := map[string]time.Time{}
	if err := json.Unmarshal(b, &names); err != nil {
		return nil, fmt.Errorf("read %s: %w", s.knownFile(), err)
	}
	return names, nil
}

// SaveKnown implements KnownStore: written whole, atomically.
func (s *FileStore) SaveKnown(names map[string]time.Time) error {
	b, err := json.Marshal(names)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.Dir, ".known-*")
	if err != nil {
		return fmt.Errorf("save known volumes: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("save known volumes: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save known volumes: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.knownFile()); err != nil {
		return fmt.Errorf("save known volumes: %w", err)
	}
	return nil
}
