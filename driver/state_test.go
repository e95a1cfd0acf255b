package driver

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FileStore's failures name the volume (or the file) and leave what was saved before intact.
func TestFileStoreFailures(t *testing.T) {
	base := t.TempDir()
	file := filepath.Join(base, "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := NewFileStore(filepath.Join(file, "state"))
	assertErr(t, err, nil, "state directory "+filepath.Join(file, "state"))

	s, err := NewFileStore(filepath.Join(base, "state"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(State{Name: "ok", Path: "/mnt/volumes/ok"}); err != nil {
		t.Fatal(err)
	}
	// A record that cannot be read (a directory in its place), and one that is corrupt.
	if err := os.Mkdir(filepath.Join(s.Dir, "dir.json"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Dir, "bad.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.Load("dir")
	assertErr(t, err, nil, "read state of volume dir")
	_, _, err = s.Load("bad")
	assertErr(t, err, nil, "state of volume bad", "is corrupt")
	all, err := s.All() // a directory is not a record: skipped
	assertErr(t, err, nil, "state of volume bad", "is corrupt")
	if len(all) != 1 || all[0].Name != "ok" {
		t.Errorf("All returned %+v besides the error, want the readable record", all)
	}
	// A record that cannot be replaced or removed (a non-empty directory in its place).
	if err := os.WriteFile(filepath.Join(s.Dir, "dir.json", "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	assertErr(t, s.Save(State{Name: "dir"}), nil, "save state of volume dir")
	assertErr(t, s.Delete("dir"), nil, "delete state of volume dir")
	if err := s.Delete("never-saved"); err != nil {
		t.Errorf("Delete of a volume without state: %v", err)
	}

	// The known volumes: a corrupt list, then one that cannot be written.
	if err := os.WriteFile(s.knownFile(), []byte("["), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = s.LoadKnown()
	assertErr(t, err, nil, "read "+s.knownFile())
	if err := os.Remove(s.knownFile()); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(s.knownFile(), "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err = s.LoadKnown()
	assertErr(t, err, nil, "read "+s.knownFile())
	assertErr(t, s.SaveKnown(map[string]time.Time{"ok": time.Now()}), nil, "save known volumes")

	// The directory gone: nothing can be saved or listed, and the error says which volume.
	gone := &FileStore{Dir: filepath.Join(base, "gone")}
	assertErr(t, gone.Save(State{Name: "v"}), nil, "save state of volume v")
	_, err = gone.All()
	assertErr(t, err, nil, "read state directory")
	assertErr(t, gone.Delete("v"), nil, "delete state of volume v")
	assertErr(t, gone.SaveKnown(map[string]time.Time{}), nil, "save known volumes")
}

// The CSI stage records fail the same way, naming the volume.
func TestFileStoreStageFailures(t *testing.T) {
	s, err := NewFileStore(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := s.AllStages(); err != nil || len(st) != 0 {
		t.Fatalf("AllStages before any stage: %v, %v", st, err)
	}
	if err := s.SaveStage(StageState{Name: "ok", StagingPath: stg}); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(s.stageDir(), "dir.json", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.stageDir(), "bad.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.LoadStage("dir")
	assertErr(t, err, nil, "read CSI state of volume dir")
	_, _, err = s.LoadStage("bad")
	assertErr(t, err, nil, "CSI state of volume bad", "is corrupt")
	all, err := s.AllStages()
	assertErr(t, err, nil, "CSI state of volume bad")
	if len(all) != 1 || all[0].Name != "ok" {
		t.Errorf("AllStages returned %+v besides the errors", all)
	}
	assertErr(t, s.SaveStage(StageState{Name: "dir"}), nil, "save CSI state of volume dir")
	assertErr(t, s.DeleteStage("dir"), nil, "delete CSI state of volume dir")

	// The stage directory cannot be made (a file in its place).
	f, err := NewFileStore(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.stageDir(), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	assertErr(t, f.SaveStage(StageState{Name: "v"}), nil, "save CSI state of volume v")
	_, err = f.AllStages()
	assertErr(t, err, nil, "read CSI state directory")
}
