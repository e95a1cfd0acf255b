package driver

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// filledVolume adds volume v carrying an ext4 filesystem (written once read-write here), mapped
// at the same fake device whenever it is mapped again.
func filledVolume(t *testing.T, e *testEnv) {
	t.Helper()
	e.mapper.reuse = true
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "writer")
	e.mustUnmount("v", "writer")
}

// assertSharedUp checks that v is up here under the stage's ID with a shared read-only claim:
// mapped read-only, mounted ro, this host among the readers and no writer.
func (e *testEnv) assertSharedUp(id string) State {
	e.t.Helper()
	st, ok := e.state("v")
	if !ok || !slices.Equal(st.IDs, []string{id}) || st.Op != "" || !st.Attach.Map.ReadOnly {
		e.t.Fatalf("state of v: %+v; want up under %s, mapped read-only", st, id)
	}
	if !e.mapper.lastReq.ReadOnly {
		e.t.Errorf("the last mapping was read-write: %+v", e.mapper.lastReq)
	}
	if got := e.mounter.device(e.path("v")); got == "" || got != st.Device {
		e.t.Errorf("%s has %q mounted, want %s", e.path("v"), got, st.Device)
	}
	calls := e.mounter.mountCalls()
	if last := calls[len(calls)-1]; !slices.Contains(strings.Split(last.options, ","), "ro") {
		e.t.Errorf("the last mount was not read-only: %+v", last)
	}
	e.prov.mu.Lock()
	defer e.prov.mu.Unlock()
	if !e.prov.readers["v"][e.cfg.Node] || e.prov.holders["v"] != "" {
		e.t.Errorf("claims of v: readers %v, writer %q; want this host a reader and no writer", e.prov.readers["v"], e.prov.holders["v"])
	}
	return st
}

// MULTI_NODE_READER_ONLY: the stage takes a shared read-only claim (mapped read-only, nothing
// formatted, mounted ro), binds read-only at the staging path and every target whatever the
// publish asks, lets another host read at once, is recorded as shared (another mode at the same
// path is refused), and is taken again shared after its release.
func TestNodeSharedReadOnlyStage(t *testing.T) {
	e := newTestDriver(t)
	n := newTestNode(t, e)
	filledVolume(t, e)

	m := e.rec.mark()
	if err := n.Stage(bg, "v", StageRequest{StagingPath: stg, Shared: true}); err != nil {
		t.Fatal(err)
	}
	assertOps(t, "shared Stage", e.rec.ops(m), "prov.Attach v", "map.Map v", "mnt.Mount v", "mnt.Bind v")
	e.assertSharedUp("csi:" + stg)
	if rec, _ := e.stage("v"); !rec.Shared || !rec.ReadOnly {
		t.Errorf("stage record %+v; want shared and read-only", rec)
	}
	if !e.mounter.boundReadOnly(stg) {
		t.Error("the staging bind is read-write")
	}
	if err := n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1}); err != nil {
		t.Fatal(err)
	}
	if !e.mounter.boundReadOnly(tgt1) {
		t.Error("a publish of a shared stage is read-write")
	}
	if rec, _ := e.stage("v"); !rec.Targets[tgt1] {
		t.Errorf("the target is recorded read-write: %+v", rec)
	}
	// Another host reads it at once; a writer anywhere is refused.
	other := e.otherHost(t, "host-b")
	if _, err := other.Use(bg, "v", "r", Use{ReadOnly: true}); err != nil {
		t.Fatalf("another host's shared read-only use beside the stage: %v", err)
	}
	if _, err := e.otherHost(t, "host-c").Use(bg, "v", "w", Use{Writable: true}); !errors.Is(err, ErrBusyElsewhere) {
		t.Errorf("a writer on a third host while two read: %v", err)
	}
	if err := other.Unmount(bg, "v", "r"); err != nil {
		t.Fatal(err)
	}

	assertErr(t, n.Stage(bg, "v", StageRequest{StagingPath: stg, ReadOnly: true}), ErrExists, "another access mode", "shared true")
	assertErr(t, n.Stage(bg, "v", StageRequest{StagingPath: stg}), ErrExists, "another access mode")
	if err := n.Stage(bg, "v", StageRequest{StagingPath: stg, Shared: true, ReadOnly: true}); err != nil {
		t.Errorf("the same shared stage again: %v", err)
	}

	if err := n.Unpublish(bg, "v", tgt1); err != nil { // the last target: released
		t.Fatal(err)
	}
	e.assertGone("v")
	e.mapper.lastReq = MapRequest{}
	if err := n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1}); err != nil {
		t.Fatalf("Publish of a released shared stage: %v", err)
	}
	e.assertSharedUp("csi:" + stg)
	if !e.mounter.boundReadOnly(stg) || !e.mounter.boundReadOnly(tgt1) {
		t.Error("the stage taken again binds read-write")
	}
	for _, err := range []error{n.Unpublish(bg, "v", tgt1), n.Unstage(bg, "v", stg)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	e.assertGone("v")
}

// The writer modes ask for a writable volume: a readonly one (access=readonly) is refused with
// ErrReadOnly (FailedPrecondition through CSI) and nothing is left; SINGLE_NODE_READER_ONLY
// takes it as it is, read-only.
func TestNodeWriterRefusesReadOnlyVolume(t *testing.T) {
	e := newTestDriver(t)
	n := newTestNode(t, e)
	e.readOnlyVolume("v")
	for _, req := range []StageRequest{{StagingPath: stg}, {StagingPath: stg, Single: true}} {
		err := n.Stage(bg, "v", req)
		assertErr(t, err, ErrReadOnly, "volume v is read-only")
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("the refusal is not ErrInvalid any more: %v", err)
		}
		e.assertGone("v")
		if rec, ok := e.stage("v"); ok {
			t.Errorf("stage record remains after the refusal: %+v", rec)
		}
	}
	if err := n.Stage(bg, "v", StageRequest{StagingPath: stg, ReadOnly: true}); err != nil {
		t.Fatalf("SINGLE_NODE_READER_ONLY stage of a readonly volume: %v", err)
	}
	if st, _ := e.state("v"); !st.Attach.Map.ReadOnly || !e.mounter.boundReadOnly(stg) {
		t.Errorf("SINGLE_NODE_READER_ONLY stage of a readonly volume: %+v, bound read-only %t", st, e.mounter.boundReadOnly(stg))
	}
}

// A shared stage of a blank volume is refused (a read-only mapping cannot be formatted), saying
// how to make a volume with data; it is undone.
func TestNodeSharedStageOfBlankVolume(t *testing.T) {
	e := newTestDriver(t)
	n := newTestNode(t, e)
	e.prov.add("v", 1<<30, "ext4")
	err := n.Stage(bg, "v", StageRequest{StagingPath: stg, Shared: true})
	assertErr(t, err, ErrReadOnly, "no filesystem", "--sharing readonly", "from-snapshot", "source-volume-id")
	if n := e.mounter.count("FormatIfBlank"); n != 0 {
		t.Errorf("formatted through a read-only stage (%d calls)", n)
	}
	e.assertGone("v")
	if rec, ok := e.stage("v"); ok {
		t.Errorf("stage record remains: %+v", rec)
	}
}

// Read-only block: a shared block stage maps the device read-only and binds every target
// read-only; a read-only block stage or publish without the read-only mapping is refused.
func TestNodeSharedBlock(t *testing.T) {
	e := newTestDriver(t)
	n := newTestNode(t, e)
	e.prov.add("v", 1<<30, "ext4")
	assertErr(t, n.Stage(bg, "v", StageRequest{StagingPath: stg, ReadOnly: true, Block: true}), ErrInvalid, "MULTI_NODE_READER_ONLY", "does not stop writes")
	e.assertGone("v")

	m := e.rec.mark()
	if err := n.Stage(bg, "v", StageRequest{StagingPath: stg, Shared: true, Block: true}); err != nil {
		t.Fatal(err)
	}
	assertOps(t, "shared block Stage", e.rec.ops(m), "prov.Attach v", "map.Map v")
	st, _ := e.state("v")
	if !st.Raw || !st.Attach.Map.ReadOnly || !e.mapper.lastReq.ReadOnly {
		t.Errorf("state %+v; want raw and mapped read-only", st)
	}
	if err := n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1}); err != nil {
		t.Fatal(err)
	}
	if e.mounter.device(tgt1) != st.Device || !e.mounter.boundReadOnly(tgt1) {
		t.Errorf("%s shows %q, read-only %t; want %s read-only", tgt1, e.mounter.device(tgt1), e.mounter.boundReadOnly(tgt1), st.Device)
	}
	for _, err := range []error{n.Unpublish(bg, "v", tgt1), n.Unstage(bg, "v", stg)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	e.assertGone("v")

	// A writable block stage: a read-only publish is refused.
	if err := n.Stage(bg, "v", StageRequest{StagingPath: stg, Block: true}); err != nil {
		t.Fatal(err)
	}
	assertErr(t, n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1, ReadOnly: true}), ErrInvalid, "read-only mapping")
	if dev := e.mounter.device(tgt1); dev != "" {
		t.Errorf("the refused publish bound %s", dev)
	}
}

// After a restart that lost the mapping, the core takes the shared claim again read-only, maps
// read-only and mounts ro, and the node binds the staging path and the target again read-only.
func TestNodeSharedReconcile(t *testing.T) {
	e := newTestDriver(t)
	n := newTestNode(t, e)
	filledVolume(t, e)
	if err := n.Stage(bg, "v", StageRequest{StagingPath: stg, Shared: true}); err != nil {
		t.Fatal(err)
	}
	if err := n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1}); err != nil {
		t.Fatal(err)
	}
	e.mapper.lose(image("v"))
	e.mapper.lastReq = MapRequest{}
	e.restartNode(t)
	st := e.assertSharedUp("csi:" + stg)
	for _, p := range []string{stg, tgt1} {
		if dev := e.mounter.device(p); dev != st.Device || !e.mounter.boundReadOnly(p) {
			t.Errorf("%s shows %q (read-only %t) after the restart, want %s read-only", p, dev, e.mounter.boundReadOnly(p), st.Device)
		}
	}
}
