package driver

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// The controller's reads (the CSI front end's): they wait for the start-up reconcile, answer
// from the backend, and name the volume in their errors.
func TestControllerReads(t *testing.T) {
	e := newUnreconciledDriver(t)
	e.prov.add("a", 1<<30, "")
	e.prov.add("b", 2<<30, "xfs")
	if e.d.Ready() {
		t.Fatal("Ready before the reconcile")
	}
	short, cancel := context.WithTimeout(bg, 20*time.Millisecond)
	defer cancel()
	_, err := e.d.Describe(short, "a")
	assertErr(t, err, ErrTimeout, "volume a", "still reconciling")
	_, err = e.d.Volumes(short)
	assertErr(t, err, ErrTimeout, "the plugin is still reconciling")

	if err := e.d.Reconcile(bg); err != nil {
		t.Fatal(err)
	}
	if !e.d.Ready() {
		t.Fatal("not Ready after the reconcile")
	}
	v, err := e.d.Describe(bg, "a")
	if err != nil || v.Name != "a" || v.FSType != "ext4" || v.Size != 1<<30 {
		t.Errorf("Describe a: %+v, %v; want 1 GiB with DEFAULT_FSTYPE ext4", v, err)
	}
	if v, err := e.d.Describe(bg, "b"); err != nil || v.FSType != "xfs" {
		t.Errorf("Describe b: %+v, %v; want its own xfs", v, err)
	}
	_, err = e.d.Describe(bg, "gone")
	assertErr(t, err, ErrNotFound, "volume gone")
	_, err = e.d.Describe(bg, "bad/name")
	assertErr(t, err, ErrInvalid)

	vols, err := e.d.Volumes(bg)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range vols {
		names = append(names, v.Name)
	}
	if !slices.Equal(names, []string{"a", "b"}) {
		t.Errorf("Volumes: %q", names)
	}
	e.prov.failNext("List", errors.New("backend down"))
	_, err = e.d.Volumes(bg)
	assertErr(t, err, nil, "list volumes", "backend down")

	if got := e.d.RoundSize(12345); got != 12345 {
		t.Errorf("RoundSize: %d, want the backend's", got)
	}
	if got := e.d.DefaultFSType(); got != "ext4" {
		t.Errorf("DefaultFSType %q", got)
	}
	if MinSize("xfs") != minXFSSize || MinSize("ext4") != minSize || minXFSSize <= minSize {
		t.Errorf("MinSize: xfs %d, ext4 %d", MinSize("xfs"), MinSize("ext4"))
	}
	if n := NewNode(e.d, fakeBinder{e.mounter}, e.files); n.NodeID() != "host-a" {
		t.Errorf("NodeID %q, want NODE_NAME host-a", n.NodeID())
	}
}
