package driver

import (
	"testing"
)

// assertRaw checks that the volume is held and mapped here, raw (nothing mounted), with the
// given IDs, and returns its state.
func (e *testEnv) assertRaw(name string, ids ...string) State {
	e.t.Helper()
	st, ok := e.state(name)
	if !ok {
		e.t.Fatalf("no state for %s", name)
	}
	if !st.Raw || st.Path != "" || st.Op != "" || len(st.IDs) != len(ids) || st.IDs[0] != ids[0] {
		e.t.Errorf("state of %s: %+v; want raw, IDs %q, no Op", name, st, ids)
	}
	if dev := e.mapper.device(image(name)); dev == "" || dev != st.Device {
		e.t.Errorf("%s is mapped at %q, the state records %q", name, dev, st.Device)
	}
	if got := e.mounter.device(e.path(name)); got != "" {
		e.t.Errorf("a raw volume is mounted at %s (%s)", e.path(name), got)
	}
	if h := e.prov.holder(name); h != e.cfg.Node {
		e.t.Errorf("%s is held by %q, want %q", name, h, e.cfg.Node)
	}
	return st
}

// The block access type: the stage claims and maps without formatting or mounting, each publish
// binds the device node at its target, the last unpublish releases, and a publish stages again;
// a filesystem use of the volume on this host is refused while it is in use raw, and the reverse.
func TestNodeBlockLifecycle(t *testing.T) {
	e := newTestDriver(t)
	n := newTestNode(t, e)
	e.prov.add("v", 1<<30, "ext4")
	block := StageRequest{StagingPath: stg, Block: true}

	m := e.rec.mark()
	if err := n.Stage(bg, "v", block); err != nil {
		t.Fatal(err)
	}
	assertOps(t, "Stage block", e.rec.ops(m), "prov.Attach v", "map.Map v")
	st := e.assertRaw("v", "csi:"+stg)
	if dev := e.mounter.device(stg); dev != "" {
		t.Errorf("the staging path of a block stage shows %s", dev)
	}
	m = e.rec.mark()
	if err := n.Stage(bg, "v", block); err != nil {
		t.Fatalf("Stage again: %v", err)
	}
	assertOps(t, "Stage again", e.rec.ops(m))
	assertErr(t, n.Stage(bg, "v", StageRequest{StagingPath: stg}), ErrExists, "another access mode", "block true")
	_, err := e.d.Mount(bg, "v", "ctr")
	assertErr(t, err, ErrInUse, "as a raw device (block)", "as a filesystem")

	for _, tg := range []string{tgt1, tgt2} {
		if err := n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tg}); err != nil {
			t.Fatalf("Publish %s: %v", tg, err)
		}
		if dev := e.mounter.device(tg); dev != st.Device {
			t.Errorf("%s shows %q, want the device %s", tg, dev, st.Device)
		}
	}
	for _, tg := range []string{tgt1, tgt2} {
		if err := n.Unpublish(bg, "v", tg); err != nil {
			t.Fatal(err)
		}
		if dev := e.mounter.device(tg); dev != "" {
			t.Errorf("%s still shows %s", tg, dev)
		}
	}
	e.assertGone("v")
	m = e.rec.mark()
	if err := n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1}); err != nil {
		t.Fatalf("Publish of a released block stage: %v", err)
	}
	assertOps(t, "Publish of a released block stage", e.rec.ops(m), "prov.Attach v", "map.Map v", "mnt.BindDevice a")
	e.assertRaw("v", "csi:"+stg)
	if err := n.Unpublish(bg, "v", tgt1); err != nil {
		t.Fatal(err)
	}
	if err := n.Unstage(bg, "v", stg); err != nil {
		t.Fatal(err)
	}
	e.assertGone("v")
	if _, ok := e.stage("v"); ok {
		t.Error("the stage record remains after Unstage")
	}

	// The reverse: in use as a filesystem, a block stage is refused.
	e.mustMount("v", "ctr")
	assertErr(t, n.Stage(bg, "v", block), ErrInUse, "as a filesystem")
	e.mustUnmount("v", "ctr")
	e.assertGone("v")
}

// A block stage persisted and repaired like a mount: after a restart that lost the mapping,
// the core maps again (nothing formatted or mounted) and each target is bound to the new device;
// a crash mid-stage is undone.
func TestNodeBlockRepair(t *testing.T) {
	e := newTestDriver(t)
	n := newTestNode(t, e)
	e.prov.add("v", 1<<30, "ext4")
	if err := n.Stage(bg, "v", StageRequest{StagingPath: stg, Block: true}); err != nil {
		t.Fatal(err)
	}
	if err := n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1}); err != nil {
		t.Fatal(err)
	}
	e.mapper.lose(image("v"))
	m := e.rec.mark()
	e.restartNode(t)
	st := e.assertRaw("v", "csi:"+stg)
	if st.Device == "/dev/fake0" {
		t.Fatalf("the core did not map the volume again: %+v", st)
	}
	for _, op := range e.rec.ops(m) {
		if op == "mnt.FormatIfBlank "+st.Device || op == "mnt.Mount v" {
			t.Errorf("the repair of a raw volume did %s", op)
		}
	}
	if dev := e.mounter.device(tgt1); dev != st.Device {
		t.Errorf("%s shows %q after the restart, want the new device %s", tgt1, dev, st.Device)
	}

	e2 := newTestDriver(t)
	n2 := newTestNode(t, e2)
	e2.prov.add("w", 1<<30, "ext4")
	e2.crashing("mount:mapped", func() { _ = n2.Stage(bg, "w", StageRequest{StagingPath: stg, Block: true}) })
	e2.restartNode(t)
	e2.assertGone("w")
	if st, ok := e2.stage("w"); ok {
		t.Errorf("stage record remains after the interrupted block stage: %+v", st)
	}
}
