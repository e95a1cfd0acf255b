package driver

import (
	"context"
	"errors"
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
