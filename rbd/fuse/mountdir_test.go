package fuse

import (
	"os"
	"path/filepath"
	"testing"
)

// The undo of a failed Map removes the image's mount directory, and its pool's unless another
// image's is still there.
func TestRemoveMountDir(t *testing.T) {
	root := t.TempDir()
	a := filepath.Join(root, "volumes", "a")
	b := filepath.Join(root, "volumes", "b")
	for _, d := range []string{a, b} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := removeMountDir(a); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(b); err != nil {
		t.Fatalf("another image's directory went: %v", err)
	}
	if err := removeMountDir(b); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "volumes")); !os.IsNotExist(err) {
		t.Errorf("the pool's directory stayed: %v", err)
	}
	if err := removeMountDir(b); err != nil {
		t.Errorf("removing it again: %v", err)
	}
	// A directory that is not empty (an rbd-fuse still mounted there, say) is an error.
	if err := os.MkdirAll(filepath.Join(a, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := removeMountDir(a); err == nil {
		t.Error("a directory with content was removed, or its failure hidden")
	}
}
