package driver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// A restart with volumes to reconcile answers at once: calls on other volumes go through while
// one volume's repair is held, and a call on that volume waits for its repair.
func TestReconcileDoesNotHoldOtherCalls(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.prov.add("w", 1<<30, "ext4")
	e.mustMount("v", "id1")
	e.mustMount("w", "id1")

	d := e.restart()
	g := e.prov.block(t, "Attach", "v")
	done := make(chan error, 1)
	go func() { done <- d.Reconcile(bg) }()
	select {
	case <-g.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("Reconcile never reached volume v")
	}

	ctx, cancel := context.WithTimeout(bg, 2*time.Second)
	defer cancel()
	if vols, err := d.List(ctx); err != nil || len(vols) != 2 {
		t.Fatalf("List while v is being reconciled: %v (%d volumes)", err, len(vols))
	}
	if _, err := d.Get(ctx, "v"); err != nil {
		t.Fatalf("Get v while it is being reconciled: %v", err)
	}
	e.prov.add("x", 1<<30, "ext4")
	if _, err := d.Mount(ctx, "x", "id1"); err != nil {
		t.Fatalf("Mount of another volume while v is being reconciled: %v", err)
	}
	if _, err := d.Mount(ctx, "w", "id2"); err != nil {
		t.Fatalf("Mount of w while v is being reconciled: %v", err)
	}

	short, cancelShort := context.WithTimeout(bg, 100*time.Millisecond)
	defer cancelShort()
	if _, err := d.Mount(short, "v", "id2"); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Mount of v during its repair: want it to wait (ErrTimeout at its deadline), got %v", err)
	}

	g.open()
	if err := <-done; err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if _, err := d.Mount(bg, "v", "id2"); err != nil {
		t.Fatalf("Mount of v after its repair: %v", err)
	}
	e.assertUp("v", "id1", "id2")
	e.assertUp("w", "id1", "id2")
}

// The start-up reconcile's mapper List (slow with the fuse mapper: it may ask every rbd-fuse
// daemon) holds up only the recorded volumes: a volume created and mounted meanwhile is served
// at once, and a recorded one waits for its own repair.
func TestReconcileListDoesNotHoldOtherVolumes(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "id1")

	d := e.restart()
	g := e.mapper.block(t, "List", "")
	done := make(chan error, 1)
	go func() { done <- d.Reconcile(bg) }()
	recv(t, "the reconcile's List", g.entered)

	ctx, cancel := context.WithTimeout(bg, 2*time.Second)
	defer cancel()
	if err := d.Create(ctx, "x", map[string]string{"size": "1G"}); err != nil {
		t.Fatalf("Create of another volume while the reconcile lists the mappings: %v", err)
	}
	if _, err := d.Mount(ctx, "x", "id1"); err != nil {
		t.Fatalf("Mount of another volume while the reconcile lists the mappings: %v", err)
	}
	short, cancelShort := context.WithTimeout(bg, 100*time.Millisecond)
	defer cancelShort()
	if _, err := d.Mount(short, "v", "id2"); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Mount of v before its repair: want it to wait (ErrTimeout at its deadline), got %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("Reconcile ended (%v) while its List was held: the test proves nothing", err)
	default:
	}

	g.open()
	if err := recv(t, "Reconcile", done); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	e.assertUp("v", "id1")
	e.assertUp("x", "id1")
}

// After a reboot no container holds a reference: the reconcile releases the volumes recorded in
// the earlier boot (no map, no mount; the claim goes) instead of mapping them again, and Unmount
// calls for the dead containers' IDs succeed. A plugin restart in the same boot maps again.
func TestReconcileAfterRebootReleasesInsteadOfMapping(t *testing.T) {
	e := newTestDriver(t, func(c *Config) { c.BootID = "boot-1" })
	for _, v := range []string{"v", "w"} {
		e.prov.add(v, 1<<30, "ext4")
		e.mustMount(v, "c1")
	}
	e.mustMount("w", "c2")
	if st, _ := e.state("v"); st.Boot != "boot-1" {
		t.Fatalf("state records boot %q, want boot-1", st.Boot)
	}

	// The same boot: a plugin restart after losing the mapping maps it again.
	e.mapper.lose(image("v"))
	e.mounter.lose(e.path("v"))
	d := e.restart()
	if err := d.Reconcile(bg); err != nil {
		t.Fatal(err)
	}
	e.assertUp("v", "c1")
	e.assertUp("w", "c1", "c2")

	// A reboot: the kernel's mappings and mounts are gone, and the boot ID is new.
	for _, v := range []string{"v", "w"} {
		e.mapper.lose(image(v))
		e.mounter.lose(e.path(v))
	}
	mark := e.rec.mark()
	e.cfg.BootID = "boot-2"
	d = e.restart()
	if err := d.Reconcile(bg); err != nil {
		t.Fatal(err)
	}
	for _, op := range e.rec.ops(mark) {
		if strings.HasPrefix(op, "map.Map") || strings.HasPrefix(op, "prov.Attach") || strings.HasPrefix(op, "mnt.Mount") {
			t.Errorf("the reconcile after a reboot called %s; want only releases", op)
		}
	}
	e.assertGone("v")
	e.assertGone("w")
	if err := d.Unmount(bg, "w", "c2"); err != nil {
		t.Errorf("Unmount for a container of the earlier boot: %v", err)
	}
	// A container that restarts mounts it as new, recorded in this boot.
	e.mustMount("v", "c3")
	if st := e.assertUp("v", "c3"); st.Boot != "boot-2" {
		t.Errorf("state records boot %q, want boot-2", st.Boot)
	}
}

// A release after a reboot that fails (the backend is away) stays pending: the background
// repair finishes it, and a Mount meanwhile does not join the dead references.
func TestReconcileAfterRebootFailedReleaseStaysPending(t *testing.T) {
	e := newTestDriver(t, func(c *Config) { c.BootID = "boot-1" })
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "c1")
	e.mapper.lose(image("v"))
	e.mounter.lose(e.path("v"))
	e.cfg.BootID = "boot-2"
	d := e.restart()
	e.prov.failNext("Detach", errors.New("cinder: connection refused"))
	if err := d.Reconcile(bg); err == nil {
		t.Fatal("Reconcile with the release failing: no error")
	}
	if st, ok := e.state("v"); !ok || len(st.IDs) != 0 || st.Op != OpUnmount {
		t.Fatalf("state after the failed release: %+v (found %v); want no IDs and a pending unmount", st, ok)
	}
	e.mustMount("v", "c2")
	e.assertUp("v", "c2")
	e.mustUnmount("v", "c2")
	e.assertGone("v")

	// The same, finished by the background repair instead.
	e.cfg.BootID = "boot-1"
	e.d = e.restart()
	if err := e.d.Reconcile(bg); err != nil {
		t.Fatal(err)
	}
	e.mustMount("v", "c3")
	e.mapper.lose(image("v"))
	e.mounter.lose(e.path("v"))
	e.cfg.BootID = "boot-3"
	d = e.restart()
	e.prov.failNext("Detach", errors.New("cinder: connection refused"))
	_ = d.Reconcile(bg)
	if err := d.RepairPending(bg); err != nil {
		t.Fatal(err)
	}
	e.assertGone("v")
}

func TestReconcileEverythingUp(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "id1")
	e.mustMount("v", "id2")
	before, _ := e.state("v")

	d := e.restart()
	m := e.rec.mark()
	if err := d.Reconcile(bg); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	assertOps(t, "Reconcile with everything up (the claim is confirmed)", e.rec.ops(m), "prov.Attach v")
	after := e.assertUp("v", "id1", "id2")
	if !after.Updated.Equal(before.Updated) || after.Device != before.Device {
		t.Errorf("state rewritten: %+v, was %+v", after, before)
	}

	m = e.rec.mark()
	e.mustMount("v", "id3")
	assertOps(t, "Mount after the restart", e.rec.ops(m))
	e.assertUp("v", "id1", "id2", "id3")
}

func TestReconcileLostMapping(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "id1")
	e.mapper.lose(image("v")) // the mount of the dead /dev/fake0 remains

	d := e.restart()
	m := e.rec.mark()
	if err := d.Reconcile(bg); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	assertOps(t, "Reconcile of a lost mapping", e.rec.ops(m), "prov.Attach v", "mnt.Unmount v", "map.Map v", "mnt.Mount v")
	st := e.assertUp("v", "id1")
	if st.Device != "/dev/fake1" || e.mounter.device(e.path("v")) != "/dev/fake1" {
		t.Errorf("state device %s, mounted %s; want the new /dev/fake1", st.Device, e.mounter.device(e.path("v")))
	}
	if got := e.mounter.formattedDevices(); !slices.Equal(got, []string{"/dev/fake0"}) {
		t.Errorf("formatted %q: a remapped volume must not be formatted", got)
	}
}

func TestReconcileLostMappingAndMount(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "id1")
	e.mapper.lose(image("v"))
	e.mounter.lose(e.path("v"))

	d := e.restart()
	m := e.rec.mark()
	if err := d.Reconcile(bg); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	assertOps(t, "Reconcile of a lost mapping and mount", e.rec.ops(m), "prov.Attach v", "map.Map v", "mnt.Mount v")
	if st := e.assertUp("v", "id1"); st.Device != "/dev/fake1" {
		t.Errorf("state device %s, want /dev/fake1", st.Device)
	}
}

func TestReconcileLostMount(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "id1")
	e.mounter.lose(e.path("v"))

	d := e.restart()
	m := e.rec.mark()
	if err := d.Reconcile(bg); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	assertOps(t, "Reconcile of a lost mount", e.rec.ops(m), "prov.Attach v", "mnt.Mount v")
	if st := e.assertUp("v", "id1"); st.Device != "/dev/fake0" {
		t.Errorf("state device %s, want /dev/fake0", st.Device)
	}
}

func TestReconcileCrashMidMount(t *testing.T) {
	for _, step := range []FaultStep{FaultMountAttached, FaultMountMapped, FaultMountFormatted, FaultMountMounted} {
		t.Run(string(step), func(t *testing.T) {
			e := newTestDriver(t)
			e.prov.add("v", 1<<30, "ext4")
			e.crashing(step, func() { _, _ = e.d.Mount(bg, "v", "id1") })
			st, ok := e.state("v")
			if !ok || st.Op != OpMount || st.OpID != "id1" || len(st.IDs) != 0 {
				t.Fatalf("state after a crash at %s: %+v (found %v)", step, st, ok)
			}
			if e.prov.holder("v") != "host-a" {
				t.Fatal("a crash undid the attach: the test simulates nothing")
			}

			d := e.restart()
			m := e.rec.mark()
			if err := d.Reconcile(bg); err != nil {
				t.Fatalf("Reconcile: %v", err)
			}
			assertOps(t, "Reconcile of a crashed Mount", e.rec.ops(m), "mnt.Unmount v", "map.Unmap v", "prov.Detach v")
			e.assertGone("v")
			e.mustMount("v", "id2")
			e.assertUp("v", "id2")
		})
	}
}

func TestReconcileCrashMidUnmount(t *testing.T) {
	for _, step := range []FaultStep{FaultUnmountUnmounted, FaultUnmountUnmapped, FaultUnmountDetached} {
		t.Run(string(step), func(t *testing.T) {
			e := newTestDriver(t)
			e.prov.add("v", 1<<30, "ext4")
			e.mustMount("v", "id1")
			e.crashing(step, func() { _ = e.d.Unmount(bg, "v", "id1") })
			st, ok := e.state("v")
			if !ok || st.Op != OpUnmount || st.OpID != "id1" || !slices.Equal(st.IDs, []string{"id1"}) {
				t.Fatalf("state after a crash at %s: %+v (found %v)", step, st, ok)
			}

			d := e.restart()
			m := e.rec.mark()
			if err := d.Reconcile(bg); err != nil {
				t.Fatalf("Reconcile: %v", err)
			}
			assertOps(t, "Reconcile of a crashed Unmount", e.rec.ops(m), "mnt.Unmount v", "map.Unmap v", "prov.Detach v")
			e.assertGone("v")
		})
	}
}

func TestReconcileUnmountOfOneOfTwo(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "id1")
	e.mustMount("v", "id2")
	st, _ := e.state("v")
	st.Op, st.OpID = OpUnmount, "id1"
	if err := e.files.Save(st); err != nil {
		t.Fatal(err)
	}

	d := e.restart()
	m := e.rec.mark()
	if err := d.Reconcile(bg); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	assertOps(t, "Reconcile of an unmount of one of two references", e.rec.ops(m), "prov.Attach v")
	e.assertUp("v", "id2")
}

func TestReconcileStateWithoutIDs(t *testing.T) {
	// A state with no IDs and no operation (left by an older version, say) is torn down.
	e := newUnreconciledDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.prov.setHolder("v", "host-a")
	e.mapper.inject(image("v"), "/dev/fake5")
	if err := e.files.Save(State{Name: "v", Image: image("v"), FSType: "ext4", Path: e.path("v"), Device: "/dev/fake5"}); err != nil {
		t.Fatal(err)
	}
	if err := e.d.Reconcile(bg); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	assertOps(t, "Reconcile of a state without IDs", e.rec.ops(0), "mnt.Unmount v", "map.Unmap v", "prov.Detach v")
	e.assertGone("v")
}

func TestReconcileLeavesUnknownMappingsAlone(t *testing.T) {
	e := newUnreconciledDriver(t)
	e.mapper.inject(image("stranger"), "/dev/rbd9")
	if err := e.d.Reconcile(bg); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	assertOps(t, "Reconcile with a foreign mapping", e.rec.ops(0))
	if e.mapper.device(image("stranger")) != "/dev/rbd9" {
		t.Error("Reconcile removed a mapping it did not make")
	}
	warned := false
	for _, en := range e.logs.AllEntries() {
		if en.Level == logrus.WarnLevel && en.Data["image"] == "volumes/stranger" {
			warned = true
		}
	}
	if !warned {
		t.Error("no warning about the foreign mapping")
	}
}

func TestReconcileFailureIsRetriedByTheNextCall(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "id1")
	e.mapper.lose(image("v"))
	d := e.restart()
	e.mapper.failNext("Map", errInjected)
	err := d.Reconcile(bg)
	assertErr(t, err, errInjected, "volume v")
	if st, ok := e.state("v"); !ok || !slices.Equal(st.IDs, []string{"id1"}) {
		t.Fatalf("state after a failed reconcile: %+v (found %v); want it kept", st, ok)
	}
	// Calls are let through all the same, and the next one on the volume repairs it.
	ctx, cancel := context.WithTimeout(bg, 5*time.Second)
	defer cancel()
	if _, err := d.Mount(ctx, "v", "id2"); err != nil {
		t.Fatalf("Mount after a failed reconcile: %v", err)
	}
	e.assertUp("v", "id1", "id2")
}

func TestCallsWaitForReconcile(t *testing.T) {
	e := newUnreconciledDriver(t)
	e.prov.add("v", 1<<30, "ext4")

	res := make(chan error, 1)
	go func() {
		_, err := e.d.Mount(bg, "v", "id1")
		res <- err
	}()

	// Calls with a short deadline give up with ErrTimeout, saying why.
	for _, call := range []struct {
		name string
		fn   func(ctx context.Context) error
	}{
		{"Mount", func(ctx context.Context) error { _, err := e.d.Mount(ctx, "v", "id2"); return err }},
		{"Unmount", func(ctx context.Context) error { return e.d.Unmount(ctx, "v", "id2") }},
		{"Remove", func(ctx context.Context) error { return e.d.Remove(ctx, "v") }},
		{"Create", func(ctx context.Context) error { return e.d.Create(ctx, "w", nil) }},
		{"Get", func(ctx context.Context) error { _, err := e.d.Get(ctx, "v"); return err }},
		{"List", func(ctx context.Context) error { _, err := e.d.List(ctx); return err }},
		{"Path", func(ctx context.Context) error { _, err := e.d.Path(ctx, "v"); return err }},
	} {
		ctx, cancel := context.WithTimeout(bg, 30*time.Millisecond)
		err := call.fn(ctx)
		cancel()
		if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "reconciling") {
			t.Errorf("%s before Reconcile: err = %v, want ErrTimeout saying the plugin is reconciling", call.name, err)
		}
	}
	select {
	case err := <-res:
		t.Fatalf("Mount returned before Reconcile: %v", err)
	default:
	}
	assertOps(t, "calls before Reconcile (any call)", e.rec.since(0))

	if err := e.d.Reconcile(bg); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if err := recv(t, "Mount after Reconcile", res); err != nil {
		t.Fatalf("Mount: %v", err)
	}
	e.assertUp("v", "id1")
}

func TestReconcileLostMappingRecordsNewAttachment(t *testing.T) {
	e := newTestDriver(t)
	e.mapper.reuse = true
	n := 0
	e.prov.attachID = func() string { n++; return fmt.Sprintf("att-%d", n) }
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "id1")
	e.mapper.lose(image("v"))
	d := e.restart()
	if err := d.Reconcile(bg); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	st := e.assertUp("v", "id1")
	if st.Device != "/dev/fake0" {
		t.Fatalf("precondition: the new mapping should reuse /dev/fake0, got %s", st.Device)
	}
	if st.Attach.ID != "att-2" {
		t.Errorf("state records attachment %q after re-attaching, want att-2", st.Attach.ID)
	}
}

// ---------------------------------------------------------------------------------------------
// Create

// After a restart, a volume another host took over (fencing this one) is reported, not
// re-established and not taken back.
func TestReconcileVolumeTakenOverByAnotherHost(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "id1")
	e.prov.setHolder("v", "host-b")
	e.mapper.lose(image("v"))

	d := e.restart()
	m := e.rec.mark()
	err := d.Reconcile(bg)
	if err == nil || !strings.Contains(err.Error(), "no longer holds") || !strings.Contains(err.Error(), "host-b") {
		t.Fatalf("Reconcile: %v, want a report naming host-b", err)
	}
	assertOps(t, "Reconcile of a volume taken over", e.rec.ops(m), "prov.Attach v")
	if e.prov.holder("v") != "host-b" {
		t.Fatalf("holder %q: the volume was taken back", e.prov.holder("v"))
	}
}

// An Attach that got no answer, whose undo cannot reach the backend either: the state keeps the
// mount's ID, and the background repair releases the claim by it once the backend is back,
// without Docker calling about the volume again.
func TestUncertainAttachReleasedInBackground(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.prov.failNext("Attach", fmt.Errorf("%w: cinder unreachable", ErrTimeout))
	e.prov.failNext("Detach", errInjected)
	_, err := e.d.Mount(bg, "v", "id1")
	assertErr(t, err, ErrTimeout, "volume v", "undoing it also failed")
	st, ok, _ := e.files.Load("v")
	if !ok || st.Op != OpMount || st.Attach.MountID != "id1" {
		t.Fatalf("state after the failed undo: %+v (ok %v), want Op mount with MountID id1", st, ok)
	}
	m := e.rec.mark()
	if err := e.d.RepairPending(bg); err != nil {
		t.Fatalf("RepairPending: %v", err)
	}
	// (Nothing to unmap: the image is known only once attached.)
	assertOps(t, "background repair", e.rec.ops(m), "mnt.Unmount v", "prov.Detach v")
	if got := e.prov.detached[len(e.prov.detached)-1]; got.MountID != "id1" {
		t.Errorf("Detach got %+v, want the MountID id1", got)
	}
	e.assertGone("v")
	// Nothing pending: nothing done.
	m = e.rec.mark()
	if err := e.d.RepairPending(bg); err != nil {
		t.Fatal(err)
	}
	assertOps(t, "RepairPending with nothing pending", e.rec.ops(m))
}

// The background repair leaves a volume that a call is working on to that call.
func TestRepairPendingSkipsBusyVolumes(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.prov.failNext("Attach", errInjected)
	e.prov.failNext("Detach", errInjected)
	if _, err := e.d.Mount(bg, "v", "id1"); err == nil {
		t.Fatal("mount succeeded")
	}
	unlock, err := e.d.locks.lock(bg, "v")
	if err != nil {
		t.Fatal(err)
	}
	m := e.rec.mark()
	if err := e.d.RepairPending(bg); err != nil {
		t.Fatal(err)
	}
	assertOps(t, "RepairPending on a locked volume", e.rec.ops(m))
	unlock()
	if err := e.d.RepairPending(bg); err != nil {
		t.Fatal(err)
	}
	e.assertGone("v")
}

// With Cinder the image is known only once attached: undoing an attach that got no answer
// unmaps nothing (there is nothing to unmap) and still releases the claim.
func TestUncertainAttachWithoutImageReleased(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.prov.mu.Lock()
	v := e.prov.vols["v"]
	v.Image = ImageSpec{}
	e.prov.vols["v"] = v
	e.prov.mu.Unlock()
	e.prov.failNext("Attach", fmt.Errorf("%w: cinder unreachable", ErrTimeout))
	e.prov.failNext("Detach", errInjected)
	if _, err := e.d.Mount(bg, "v", "id1"); err == nil {
		t.Fatal("mount succeeded")
	}
	m := e.rec.mark()
	if err := e.d.RepairPending(bg); err != nil {
		t.Fatalf("RepairPending: %v", err)
	}
	assertOps(t, "background repair", e.rec.ops(m), "mnt.Unmount v", "prov.Detach v")
	e.assertGone("v")
}
