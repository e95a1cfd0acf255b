//go:build integration

package rbd_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/rbd"
)

// Two connections as two hosts: A holds the exclusive lock; B sees A as watcher and owner, cannot
// take the lock, then fences A (blocklist) and breaks it. A's writes are refused from then on.
func TestLockOwnersAndBreakWithBlocklist(t *testing.T) {
	e := lab(t)
	hostA := e.connect(t)
	hostB := e.connect(t)
	ctx := ctxFor(t, 90*time.Second)
	spec := rbd.Spec{Pool: e.pool, Image: uniqueName("lock")}
	if err := hostB.Create(ctx, spec, rbd.CreateOptions{Size: 16 * mib, Features: []string{"layering", "exclusive-lock"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hostB.Remove(ctxFor(t, 20*time.Second), spec) })

	if owners, err := hostB.LockOwners(ctx, spec); err != nil || len(owners) != 0 {
		t.Fatalf("owners before anyone locks = %v, %v", owners, err)
	}
	held, err := hostA.AcquireLock(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := held.Write(ctx, []byte("from A"), 0); err != nil {
		t.Fatalf("A writes while holding the lock: %v", err)
	}
	addrA, err := hostA.ClientAddr()
	if err != nil {
		t.Fatal(err)
	}

	watchers, err := hostB.OtherWatchers(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, w := range watchers {
		addrs = append(addrs, w.Addr)
	}
	if !slices.Contains(addrs, addrA) {
		t.Fatalf("B sees watchers %v, want A's %s among them", addrs, addrA)
	}
	owners, err := hostB.LockOwners(ctx, spec)
	if err != nil || len(owners) != 1 {
		t.Fatalf("owners while A holds = %v, %v", owners, err)
	}
	t.Logf("A=%s owner=%s", addrA, owners[0])

	if _, err := hostB.AcquireLock(ctxFor(t, 10*time.Second), spec); !errors.Is(err, driver.ErrBusyElsewhere) {
		t.Fatalf("B acquires while A holds: %v, want ErrBusyElsewhere", err)
	}

	fenced, err := hostB.BreakLock(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(fenced, addrA) {
		t.Fatalf("fenced %v, want A's %s", fenced, addrA)
	}
	if bl, err := hostB.Blocklisted(ctx, addrA); err != nil || !bl {
		t.Fatalf("A blocklisted = %v, %v", bl, err)
	}
	if owners, err := hostB.LockOwners(ctx, spec); err != nil || len(owners) != 0 {
		t.Fatalf("owners after break = %v, %v", owners, err)
	}
	if err := held.Write(ctxFor(t, 15*time.Second), []byte("late A"), 0); err == nil {
		t.Fatal("fenced A could still write")
	} else {
		t.Logf("A's write after fencing: %v", err)
	}
	heldB, err := hostB.AcquireLock(ctx, spec)
	if err != nil {
		t.Fatalf("B acquires after the break: %v", err)
	}
	if err := heldB.Write(ctx, []byte("from B"), 0); err != nil {
		t.Fatal(err)
	}
	if err := heldB.Release(ctx); err != nil {
		t.Fatal(err)
	}
	_ = held.Release(ctxFor(t, 5*time.Second))
}
