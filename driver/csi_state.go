package driver

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// StageState is one volume's persisted CSI node state on this host: where the container
// orchestrator staged it and where it published it. The volume itself (claim, mapping, mount)
// is the core's State, held by one use with the caller ID StageState.ID.
type StageState struct {
	Name        string
	StagingPath string
	// ID is the core's caller ID of the stage ("csi:" + staging path): one use of the volume.
	ID string
	// ReadOnly: the staging bind (and so every publish) is read-only (SINGLE_NODE_READER_ONLY,
	// MULTI_NODE_READER_ONLY).
	ReadOnly bool `json:",omitempty"`
	// Shared: the core's use is a shared read-only claim, mapped read-only (Use.ReadOnly), which
	// other nodes may hold at once (MULTI_NODE_READER_ONLY). Always with ReadOnly.
	Shared bool `json:",omitempty"`
	// Single: at most one publish target (SINGLE_NODE_SINGLE_WRITER).
	Single bool `json:",omitempty"`
	// Block: the block access type: the core maps the volume raw (State.Raw), nothing is
	// bound at the staging path, and each target is a bind of the device node.
	Block bool `json:",omitempty"`
	// Targets are the publish targets, each with whether it is read-only.
	Targets map[string]bool `json:",omitempty"`
	// Released: the last target was unpublished, so the stage was released (the staging bind
	// removed, the core's use dropped, the claim released) while the record stays: the next
	// Publish stages the volume again. (Swarm never calls NodeUnstage, swarmkit#3178: without
	// this a volume would stay claimed by the node it last ran on.)
	Released bool `json:",omitempty"`
	// Op is the step in flight (OpStage, OpRestage, OpRelease, OpUnstage, OpPublish,
	// OpUnpublish) and OpPath its target: a crash mid-step leaves it set and the reconcile undoes
	// or finishes it.
	Op      Op     `json:",omitempty"`
	OpPath  string `json:",omitempty"`
	Updated time.Time
}

// StageStore persists StageStates across plugin restarts.
type StageStore interface {
	LoadStage(name string) (StageState, bool, error)
	SaveStage(st StageState) error
	DeleteStage(name string) error
	AllStages() ([]StageState, error)
}

var _ StageStore = (*FileStore)(nil)

// stageDir holds the CSI stage records, apart from the core's (a subdirectory: All skips it).
func (s *FileStore) stageDir() string { return filepath.Join(s.Dir, "csi") }

func (s *FileStore) stagePath(name string) string {
	return filepath.Join(s.stageDir(), name+".json")
}

// LoadStage implements StageStore; ok is false when the volume is not staged here.
func (s *FileStore) LoadStage(name string) (StageState, bool, error) {
	b, err := os.ReadFile(s.stagePath(name))
	if errors.Is(err, os.ErrNotExist) {
		return StageState{}, false, nil
	}
	if err != nil {
		return StageState{}, false, fmt.Errorf("read CSI state of volume %s: %w", name, err)
	}
	var st StageState
	if err := json.Unmarshal(b, &st); err != nil {
		return StageState{}, false, fmt.Errorf("CSI state of volume %s (%s) is corrupt: %w", name, s.stagePath(name), err)
	}
	return st, true, nil
}

// SaveStage implements StageStore: written atomically and durably, like Save.
func (s *FileStore) SaveStage(st StageState) error {
	if err := os.MkdirAll(s.stageDir(), 0o700); err != nil {
		return fmt.Errorf("save CSI state of volume %s: %w", st.Name, err)
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.stageDir(), "."+st.Name+".*.tmp")
	if err != nil {
		return fmt.Errorf("save CSI state of volume %s: %w", st.Name, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.stagePath(st.Name))
	}
	if err == nil {
		err = syncDir(s.stageDir())
	}
	if err != nil {
		return fmt.Errorf("save CSI state of volume %s: %w", st.Name, err)
	}
	return nil
}

// DeleteStage implements StageStore; none is success.
func (s *FileStore) DeleteStage(name string) error {
	if err := os.Remove(s.stagePath(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete CSI state of volume %s: %w", name, err)
	}
	if err := syncDir(s.stageDir()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete CSI state of volume %s: %w", name, err)
	}
	return nil
}

// AllStages implements StageStore, by name.
func (s *FileStore) AllStages() ([]StageState, error) {
	entries, err := os.ReadDir(s.stageDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read CSI state directory: %w", err)
	}
	return loadEach(entries, s.LoadStage, func(st StageState) string { return st.Name })
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
