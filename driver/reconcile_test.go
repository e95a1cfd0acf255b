package driver

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
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
	if st, ok := e.state("v"); !ok || len(st.IDs) != 0 || st.Op != "unmount" {
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
