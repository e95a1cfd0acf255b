package driver

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// A bind is a side effect too.
func init() { sideEffects = append(sideEffects, "mnt.Bind", "mnt.BindDevice") }

// fakeBinder binds in the fake mounter's table: the target shows the source's device.
type fakeBinder struct{ m *fakeMounter }

func (b fakeBinder) Bind(ctx context.Context, source, target string, readOnly bool) error {
	done, err := b.m.enter(ctx, "Bind", filepath.Base(target))
	defer done()
	if err != nil {
		return err
	}
	b.m.mu.Lock()
	defer b.m.mu.Unlock()
	src := b.m.mounts[source]
	switch cur := b.m.mounts[target]; {
	case src == "":
		return fmt.Errorf("bind %s: not mounted", source)
	case cur == src:
		return nil
	case cur != "":
		return fmt.Errorf("%w: %s has %s mounted", ErrInUse, target, cur)
	}
	b.m.mounts[target] = src
	b.m.boundAs(target, readOnly)
	return nil
}

// boundAs records whether the bind at target is read-only. Called with m.mu held.
func (m *fakeMounter) boundAs(target string, readOnly bool) {
	if m.boundRO == nil {
		m.boundRO = map[string]bool{}
	}
	m.boundRO[target] = readOnly
}

// boundReadOnly says whether the last bind at target was read-only.
func (m *fakeMounter) boundReadOnly(target string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.boundRO[target]
}

// BindDevice binds a device in the fake mounter's table: the target shows the device.
func (b fakeBinder) BindDevice(ctx context.Context, dev, target string, readOnly bool) error {
	done, err := b.m.enter(ctx, "BindDevice", filepath.Base(target))
	defer done()
	if err != nil {
		return err
	}
	b.m.mu.Lock()
	defer b.m.mu.Unlock()
	switch cur := b.m.mounts[target]; {
	case cur == dev:
		return nil
	case cur != "":
		return fmt.Errorf("%w: %s has %s mounted", ErrInUse, target, cur)
	}
	b.m.mounts[target] = dev
	b.m.boundAs(target, readOnly)
	return nil
}

func (b fakeBinder) BoundDevice(target, dev string) (bool, error) {
	return b.m.device(target) == dev, nil
}

func newTestNode(t *testing.T, e *testEnv) *Node {
	t.Helper()
	n := NewNode(e.d, fakeBinder{e.mounter}, e.files)
	if err := n.Reconcile(bg); err != nil {
		t.Fatalf("node Reconcile: %v", err)
	}
	return n
}

// restartNode is a plugin restart: a new Driver and Node over the same state and fakes, both
// reconciled.
func (e *testEnv) restartNode(t *testing.T) *Node {
	t.Helper()
	e.restart()
	if err := e.d.Reconcile(bg); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	return newTestNode(t, e)
}

func (e *testEnv) stage(name string) (StageState, bool) {
	e.t.Helper()
	st, ok, err := e.files.LoadStage(name)
	if err != nil {
		e.t.Fatal(err)
	}
	return st, ok
}

const stg, tgt1, tgt2 = "/csi/staging/v", "/csi/target/a", "/csi/target/b"

// Stage is one use of the core plus a bind; publish binds the staging path; each is idempotent;
// unstage releases the volume when nothing is published.
func TestNodeLifecycle(t *testing.T) {
	e := newTestDriver(t)
	n := newTestNode(t, e)
	e.prov.add("v", 1<<30, "ext4")

	m := e.rec.mark()
	if err := n.Stage(bg, "v", StageRequest{StagingPath: stg}); err != nil {
		t.Fatal(err)
	}
	assertOps(t, "Stage", e.rec.ops(m), "prov.Attach v", "map.Map v", "mnt.FormatIfBlank /dev/fake0", "mnt.Mount v", "mnt.Bind v")
	e.assertUp("v", "csi:"+stg)
	if dev := e.mounter.device(stg); dev != "/dev/fake0" {
		t.Errorf("staging path shows %q, want /dev/fake0", dev)
	}
	m = e.rec.mark()
	if err := n.Stage(bg, "v", StageRequest{StagingPath: stg}); err != nil {
		t.Fatalf("Stage again: %v", err)
	}
	assertOps(t, "Stage again", e.rec.ops(m))
	assertErr(t, n.Stage(bg, "v", StageRequest{StagingPath: "/elsewhere"}), ErrInUse, "staged on this node at "+stg)
	assertErr(t, n.Stage(bg, "v", StageRequest{StagingPath: stg, ReadOnly: true}), ErrExists, "another access mode")

	for _, tg := range []string{tgt1, tgt2, tgt1} {
		if err := n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tg}); err != nil {
			t.Fatalf("Publish %s: %v", tg, err)
		}
		if dev := e.mounter.device(tg); dev != "/dev/fake0" {
			t.Errorf("%s shows %q, want /dev/fake0", tg, dev)
		}
	}
	assertErr(t, n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1, ReadOnly: true}), ErrExists, "read-only false")
	if st, _ := e.stage("v"); len(st.Targets) != 2 || st.Op != "" {
		t.Errorf("stage record: %+v", st)
	}
	assertErr(t, n.Unstage(bg, "v", stg), ErrInUse, "still published", tgt1, tgt2)

	for _, tg := range []string{tgt1, tgt2, tgt2} {
		if err := n.Unpublish(bg, "v", tg); err != nil {
			t.Fatalf("Unpublish %s: %v", tg, err)
		}
		if dev := e.mounter.device(tg); dev != "" {
			t.Errorf("%s still shows %s", tg, dev)
		}
	}
	// The last unpublish released the volume (swarm never unstages): the record stays.
	e.assertGone("v")
	if st, _ := e.stage("v"); !st.Released || st.Op != "" || len(st.Targets) != 0 {
		t.Errorf("stage record after the last unpublish: %+v", st)
	}
	// Swarm publishes again without staging: the stage is taken again first.
	m = e.rec.mark()
	if err := n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1}); err != nil {
		t.Fatalf("Publish of a released stage: %v", err)
	}
	assertOps(t, "Publish of a released stage", e.rec.ops(m), "prov.Attach v", "map.Map v", "mnt.FormatIfBlank /dev/fake1", "mnt.Mount v", "mnt.Bind v", "mnt.Bind a")
	e.assertUp("v", "csi:"+stg)
	if err := n.Unpublish(bg, "v", tgt1); err != nil {
		t.Fatal(err)
	}
	e.assertGone("v")
	if err := n.Unstage(bg, "v", "/elsewhere"); err != nil {
		t.Errorf("Unstage of another path: %v", err)
	}
	// A released stage holds nothing: staging elsewhere replaces it.
	if err := n.Stage(bg, "v", StageRequest{StagingPath: "/elsewhere"}); err != nil {
		t.Fatalf("Stage elsewhere after a release: %v", err)
	}
	e.assertUp("v", "csi:/elsewhere")
	if err := n.Unstage(bg, "v", "/elsewhere"); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.stage("v"); ok {
		t.Fatal("stage record remains")
	}
	if err := n.Stage(bg, "v", StageRequest{StagingPath: stg}); err != nil {
		t.Fatal(err)
	}
	if err := n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1}); err != nil {
		t.Fatal(err)
	}
	if err := n.Unpublish(bg, "v", tgt1); err != nil {
		t.Fatal(err)
	}
	if err := n.Unstage(bg, "v", stg); err != nil {
		t.Fatal(err)
	}
	e.assertGone("v")
	if st, ok := e.stage("v"); ok {
		t.Errorf("stage record remains: %+v", st)
	}
	if err := n.Unstage(bg, "v", stg); err != nil {
		t.Errorf("Unstage again: %v", err)
	}
	assertErr(t, n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1}), ErrNotStaged, "stage it first")
}

// Unstage of a staged volume that was never published releases it.
func TestNodeUnstage(t *testing.T) {
	e := newTestDriver(t)
	n := newTestNode(t, e)
	e.prov.add("v", 1<<30, "ext4")
	if err := n.Stage(bg, "v", StageRequest{StagingPath: stg}); err != nil {
		t.Fatal(err)
	}
	m := e.rec.mark()
	if err := n.Unstage(bg, "v", stg); err != nil {
		t.Fatal(err)
	}
	assertOps(t, "Unstage", e.rec.ops(m), "mnt.Unmount v", "mnt.Unmount v", "map.Unmap v", "prov.Detach v")
	e.assertGone("v")
	if st, ok := e.stage("v"); ok {
		t.Errorf("stage record remains: %+v", st)
	}
}

// SINGLE_NODE_SINGLE_WRITER: one publish target at a time.
func TestNodeSingleWriter(t *testing.T) {
	e := newTestDriver(t)
	n := newTestNode(t, e)
	e.prov.add("v", 1<<30, "ext4")
	if err := n.Stage(bg, "v", StageRequest{StagingPath: stg, Single: true}); err != nil {
		t.Fatal(err)
	}
	if err := n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1}); err != nil {
		t.Fatal(err)
	}
	assertErr(t, n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt2}), ErrInUse, "SINGLE_NODE_SINGLE_WRITER", tgt1)
	if dev := e.mounter.device(tgt2); dev != "" {
		t.Errorf("%s shows %s", tgt2, dev)
	}
}

// A stage whose bind fails is undone: the core's use released, no record left.
func TestNodeStageUndoneOnFailure(t *testing.T) {
	e := newTestDriver(t)
	n := newTestNode(t, e)
	e.prov.add("v", 1<<30, "ext4")
	e.mounter.failNext("Bind", fmt.Errorf("bind: boom"))
	assertErr(t, n.Stage(bg, "v", StageRequest{StagingPath: stg}), nil, "boom")
	e.assertGone("v")
	if st, ok := e.stage("v"); ok {
		t.Errorf("stage record remains: %+v", st)
	}
}

// A crash at each step boundary, then a restart: the reconcile undoes a stage or publish in
// flight and finishes an unstage, leaving nothing leaked.
func TestNodeCrashRepair(t *testing.T) {
	t.Run("stage after the core mounted", func(t *testing.T) {
		e := newTestDriver(t)
		n := newTestNode(t, e)
		e.prov.add("v", 1<<30, "ext4")
		e.crashing(FaultStageMounted, func() { _ = n.Stage(bg, "v", StageRequest{StagingPath: stg}) })
		e.restartNode(t)
		e.assertGone("v")
		if st, ok := e.stage("v"); ok {
			t.Errorf("stage record remains: %+v", st)
		}
	})
	t.Run("publish after the bind", func(t *testing.T) {
		e := newTestDriver(t)
		n := newTestNode(t, e)
		e.prov.add("v", 1<<30, "ext4")
		if err := n.Stage(bg, "v", StageRequest{StagingPath: stg}); err != nil {
			t.Fatal(err)
		}
		e.crashing(FaultPublishBound, func() { _ = n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1}) })
		n = e.restartNode(t)
		if dev := e.mounter.device(tgt1); dev != "" {
			t.Errorf("the interrupted publish's target still shows %s", dev)
		}
		if st, _ := e.stage("v"); st.Op != "" || len(st.Targets) != 0 {
			t.Errorf("stage record: %+v", st)
		}
		e.assertUp("v", "csi:"+stg)
		if err := n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1}); err != nil {
			t.Errorf("Publish after the repair: %v", err)
		}
	})
	t.Run("release after the core let go", func(t *testing.T) {
		e := newTestDriver(t)
		n := newTestNode(t, e)
		e.prov.add("v", 1<<30, "ext4")
		if err := n.Stage(bg, "v", StageRequest{StagingPath: stg}); err != nil {
			t.Fatal(err)
		}
		if err := n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1}); err != nil {
			t.Fatal(err)
		}
		e.crashing(FaultReleaseReleased, func() { _ = n.Unpublish(bg, "v", tgt1) })
		n = e.restartNode(t)
		e.assertGone("v")
		if st, _ := e.stage("v"); !st.Released || st.Op != "" {
			t.Errorf("stage record: %+v", st)
		}
		if err := n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1}); err != nil {
			t.Errorf("Publish after the repair: %v", err)
		}
		e.assertUp("v", "csi:"+stg)
	})
	t.Run("restage after the core mounted", func(t *testing.T) {
		e := newTestDriver(t)
		n := newTestNode(t, e)
		e.prov.add("v", 1<<30, "ext4")
		if err := n.Stage(bg, "v", StageRequest{StagingPath: stg}); err != nil {
			t.Fatal(err)
		}
		if err := n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1}); err != nil {
			t.Fatal(err)
		}
		if err := n.Unpublish(bg, "v", tgt1); err != nil {
			t.Fatal(err)
		}
		e.crashing(FaultStageMounted, func() { _ = n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1}) })
		e.restartNode(t)
		e.assertGone("v")
		if st, _ := e.stage("v"); !st.Released || st.Op != "" {
			t.Errorf("stage record: %+v", st)
		}
	})
	t.Run("unstage after the unbind", func(t *testing.T) {
		e := newTestDriver(t)
		n := newTestNode(t, e)
		e.prov.add("v", 1<<30, "ext4")
		if err := n.Stage(bg, "v", StageRequest{StagingPath: stg}); err != nil {
			t.Fatal(err)
		}
		e.crashing(FaultUnstageUnbound, func() { _ = n.Unstage(bg, "v", stg) })
		e.restartNode(t)
		e.assertGone("v")
		if st, ok := e.stage("v"); ok {
			t.Errorf("stage record remains: %+v", st)
		}
	})
}

// After a restart that lost the mapping (the fuse mapper's daemon died with the plugin), the
// core maps and mounts the volume again and the node binds the staging path and the targets
// again, onto the new device.
func TestNodeReconcileRebinds(t *testing.T) {
	e := newTestDriver(t)
	n := newTestNode(t, e)
	e.prov.add("v", 1<<30, "ext4")
	if err := n.Stage(bg, "v", StageRequest{StagingPath: stg}); err != nil {
		t.Fatal(err)
	}
	if err := n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1, ReadOnly: true}); err != nil {
		t.Fatal(err)
	}
	e.mapper.lose(image("v"))
	e.restartNode(t)
	st := e.assertUp("v", "csi:"+stg)
	if st.Device == "/dev/fake0" {
		t.Fatalf("the core did not map the volume again: %+v", st)
	}
	for _, p := range []string{stg, tgt1} {
		if dev := e.mounter.device(p); dev != st.Device {
			t.Errorf("%s shows %q after the restart, want the new device %s", p, dev, st.Device)
		}
	}
	if rec, _ := e.stage("v"); !rec.Targets[tgt1] {
		t.Errorf("the target lost its read-only flag: %+v", rec)
	}
}

// A stage recorded before a reboot: the core releases the volume, and the node drops the stale
// binds and the record instead of keeping the volume claimed.
func TestNodeReconcileAfterReboot(t *testing.T) {
	e := newTestDriver(t, func(c *Config) { c.BootID = "boot-1" })
	n := newTestNode(t, e)
	e.prov.add("v", 1<<30, "ext4")
	if err := n.Stage(bg, "v", StageRequest{StagingPath: stg}); err != nil {
		t.Fatal(err)
	}
	if err := n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1}); err != nil {
		t.Fatal(err)
	}
	e.cfg.BootID = "boot-2"
	e.restartNode(t)
	e.assertGone("v")
	for _, p := range []string{stg, tgt1} {
		if dev := e.mounter.device(p); dev != "" {
			t.Errorf("%s still shows %s", p, dev)
		}
	}
	if st, ok := e.stage("v"); ok {
		t.Errorf("stage record remains: %+v", st)
	}
}
