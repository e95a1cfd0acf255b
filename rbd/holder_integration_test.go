//go:build integration

package rbd_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/rbd"
)

const (
	hostIDA = "0123456789abcdef0123456789abcdef"
	hostIDB = "fedcba9876543210fedcba9876543210"
)

// noLocalClients says this host maps nothing, exactly (as krbd with no mapping does): every
// other client is another machine's.
func noLocalClients(context.Context) ([]string, bool) { return nil, true }

func identityVolume(t *testing.T, e labEnv, p *rbd.Provisioner, prefix string) string {
	t.Helper()
	name := uniqueName(prefix)
	if err := p.Create(ctxFor(t, 30*time.Second), name, driver.Options{Size: 16 * mib, SizeGiven: true, FSType: "ext4",
		Backend: map[string]string{}}); err != nil {
		t.Fatal(err)
	}
	return name
}

// A host lock under this host's identity, on an image another machine's client keeps open, is
// that machine's (a clone of this host with a copy of its STATE_DIR): refused, naming the client
// and what to do. Once that client is gone (its watch lapsed), the lock is this host's again.
func TestLockUnderThisIdentityWatchedFromElsewhereIsAnotherHosts(t *testing.T) {
	e := lab(t)
	orig := rbd.NewProvisioner(e.connect(t), rbd.ProvisionerConfig{Pool: e.pool, Host: "node-1", HostID: hostIDA,
		Features: []string{"layering", "exclusive-lock"}, Local: noLocalClients})
	clone := rbd.NewProvisioner(e.connect(t), rbd.ProvisionerConfig{Pool: e.pool, Host: "node-1", HostID: hostIDA,
		Features: []string{"layering", "exclusive-lock"}, Local: noLocalClients})
	name := identityVolume(t, e, orig, "clone")
	t.Cleanup(func() { _ = orig.Remove(ctxFor(t, 60*time.Second), name, driver.RemoveDelete) })
	req := driver.AttachRequest{Host: "node-1", MountID: "m1"}
	att, err := orig.Attach(ctxFor(t, 30*time.Second), name, req)
	if err != nil {
		t.Fatal(err)
	}
	// The original's mapping: a client that watches the image.
	watch := startWatch(t, e, e.connect(t), rbd.Spec{Pool: e.pool, Image: name})

	start := time.Now()
	_, err = clone.Attach(ctxFor(t, 16*time.Second), name, req) // gives up 10 s before its deadline
	if !errors.Is(err, driver.ErrBusyElsewhere) || !strings.Contains(err.Error(), "identity") ||
		!strings.Contains(err.Error(), driver.HostIDFile) || !strings.Contains(err.Error(), name) {
		t.Fatalf("the clone's attach while the original's client watches: %v", err)
	}
	t.Logf("refused after %.1fs: %v", time.Since(start).Seconds(), err)

	_ = watch.Process.Kill() // dead without unwatching: its watch lapses
	_ = watch.Wait()
	start = time.Now()
	if _, err := clone.Attach(ctxFor(t, 60*time.Second), name, req); err != nil {
		t.Fatalf("attach once the other client's watch lapsed: %v", err)
	}
	t.Logf("attached %.1fs after the other client died", time.Since(start).Seconds())
	if err := orig.Detach(ctxFor(t, 30*time.Second), name, att); err != nil {
		t.Fatal(err)
	}
}

// A takeover fences every client the dead holder recorded, one that neither watches the image
// nor owns its exclusive lock any more included (a kernel mapping that let the lock go and lost
// its watch): that client's writes are refused afterwards.
func TestTakeOverFencesTheClientsTheHolderRecorded(t *testing.T) {
	e := lab(t)
	admin := e.admin(t)
	a := rbd.NewProvisioner(e.connect(t), rbd.ProvisionerConfig{Pool: e.pool, Host: "node-a", HostID: hostIDA,
		Features: []string{"layering", "exclusive-lock"}, Local: noLocalClients})
	b := rbd.NewProvisioner(e.connect(t), rbd.ProvisionerConfig{Pool: e.pool, Host: "node-b", HostID: hostIDB,
		Features: []string{"layering", "exclusive-lock"}, Local: noLocalClients})
	name := identityVolume(t, e, a, "recorded")
	t.Cleanup(func() { _ = b.Remove(ctxFor(t, 60*time.Second), name, driver.RemoveDelete) })
	spec := rbd.Spec{Pool: e.pool, Image: name}
	ctx := ctxFor(t, 120*time.Second)

	att, err := a.Attach(ctx, name, driver.AttachRequest{Host: "node-a", MountID: "m1"})
	if err != nil {
		t.Fatal(err)
	}
	// node-a's "kernel": a client that writes (owning the exclusive lock), then lets it go and
	// closes its watch, and lives on.
	kernel := e.connect(t)
	kaddr, err := kernel.ClientAddr()
	if err != nil {
		t.Fatal(err)
	}
	held, err := kernel.AcquireLock(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := held.Write(ctx, []byte("node-a"), 0); err != nil {
		t.Fatal(err)
	}
	if err := a.RecordClients(ctx, name, att, driver.Mapping{ImageSpec: spec, Client: kaddr}); err != nil {
		t.Fatal(err)
	}
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	rec, ok, err := admin.Holder(ctx, spec)
	if err != nil || !ok || rec.ID != hostIDA || !slices.Contains(rec.Clients, kaddr) {
		t.Fatalf("holder record = %+v, %v, %v; want node-a's with %s", rec, ok, err, kaddr)
	}
	if ws, _ := admin.OtherWatchers(ctx, spec); len(ws) != 0 {
		t.Fatalf("watchers %v: the test wants none", ws)
	}

	got, err := b.Attach(ctx, name, driver.AttachRequest{Host: "node-b", MountID: "m2", TakeOver: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("node-b fenced %v", got.Fenced)
	if !slices.Contains(got.Fenced, kaddr) {
		t.Fatalf("fenced %v, want node-a's recorded client %s among them", got.Fenced, kaddr)
	}
	if bl, err := admin.Blocklisted(ctx, kaddr); err != nil || !bl {
		t.Fatalf("node-a's recorded client blocklisted = %v, %v", bl, err)
	}
	wctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if l, err := kernel.AcquireLock(wctx, spec); err == nil {
		werr := l.Write(wctx, []byte("late"), 0)
		_ = l.Release(wctx)
		if werr == nil {
			t.Fatal("node-a's fenced client took the lock back and wrote")
		}
	}
	// node-b records its own clients in place of node-a's, and its Detach clears them.
	if err := b.RecordClients(ctx, name, got, driver.Mapping{ImageSpec: spec}); err != nil {
		t.Fatal(err)
	}
	if rec, ok, err := admin.Holder(ctx, spec); err != nil || !ok || rec.ID != hostIDB || slices.Contains(rec.Clients, kaddr) {
		t.Fatalf("holder record after node-b's = %+v, %v, %v", rec, ok, err)
	}
	if err := b.Detach(ctx, name, got); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := admin.Holder(ctx, spec); ok {
		t.Errorf("node-b's Detach left its holder record")
	}
}

// A host lock that lands after its caller gave up (the deadline passed while the lock request
// was on its way) is given back: the host does not hold a volume it never mounted.
func TestHostLockLandingAfterTheDeadlineIsUndone(t *testing.T) {
	e := lab(t)
	c := e.connect(t)
	admin := e.admin(t)
	p := rbd.NewProvisioner(c, rbd.ProvisionerConfig{Pool: e.pool, Host: "node-a", HostID: hostIDA, Features: []string{"layering"}})
	name := identityVolume(t, e, p, "late")
	t.Cleanup(func() { _ = p.Remove(ctxFor(t, 60*time.Second), name, driver.RemoveDelete) })
	spec := rbd.Spec{Pool: e.pool, Image: name}
	id, err := c.ImageID(ctxFor(t, 10*time.Second), spec)
	if err != nil {
		t.Fatal(err)
	}
	cookie := rbd.HostCookie("node-a", hostIDA)
	// Deadlines short enough that the answer comes after them, but not so short that the request
	// is never sent: try growing ones until one times out with the request on its way.
	for d := 50 * time.Microsecond; ; d *= 2 {
		if d > 200*time.Millisecond {
			t.Fatal("no deadline made the lock answer late")
		}
		ctx, cancel := context.WithTimeout(context.Background(), d)
		err := c.LockHost(ctx, spec, id, cookie, "test")
		cancel()
		if err == nil {
			// Landed in time: give it back and try a shorter race again.
			if err := p.Detach(ctxFor(t, 10*time.Second), name, driver.Attachment{ID: cookie}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if !errors.Is(err, driver.ErrTimeout) {
			t.Fatal(err)
		}
		// Timed out: before the request was sent, with it on its way, or in the check after it
		// (LockHost then leaves the release to its caller). The caller releases what it may hold
		// at once, as a failed Mount's undo does; a lock landing after that release is given back
		// by LockHost itself. Either way no lock may remain.
		if err := p.Detach(ctxFor(t, 10*time.Second), name, driver.Attachment{}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			lockers, err := admin.Lockers(ctxFor(t, 10*time.Second), spec)
			if err != nil {
				t.Fatal(err)
			}
			if len(lockers) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("a host lock taken after its caller gave up (deadline %v) stays: %+v", d, lockers)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if d >= 400*time.Microsecond {
			t.Logf("deadline %v: timed out, and no lock remains", d)
			return
		}
	}
}

// A host lock taken before host identities (cookie "ceph-docker-plugin/<name>"): after the
// upgrade, the host whose state records that lock attaches again under it and releases it; a host
// that only has the same name is refused, named, and does not release it.
func TestLockWithoutIdentityIsThisHostsOnlyIfItsStateNamesIt(t *testing.T) {
	e := lab(t)
	c := e.connect(t)
	p := rbd.NewProvisioner(c, rbd.ProvisionerConfig{Pool: e.pool, Host: "node-1", HostID: hostIDA,
		Features: []string{"layering"}, Local: noLocalClients})
	name := identityVolume(t, e, p, "legacy")
	t.Cleanup(func() { _ = p.Remove(ctxFor(t, 60*time.Second), name, driver.RemoveDelete) })
	spec := rbd.Spec{Pool: e.pool, Image: name}
	ctx := ctxFor(t, 60*time.Second)
	id, err := c.ImageID(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	old := rbd.HostCookie("node-1", "")
	if err := c.LockHost(ctx, spec, id, old, "taken by a version without host identities"); err != nil {
		t.Fatal(err)
	}

	// Same name, no state naming the lock: another host's.
	_, err = p.Attach(ctx, name, driver.AttachRequest{Host: "node-1", MountID: "m2"})
	if !errors.Is(err, driver.ErrBusyElsewhere) || !strings.Contains(err.Error(), "node-1") || !strings.Contains(err.Error(), "older format") {
		t.Fatalf("attach without a state naming the old lock: %v", err)
	}
	if err := p.Detach(ctx, name, driver.Attachment{}); err != nil {
		t.Fatal(err)
	}
	if lockers, _ := c.Lockers(ctx, spec); len(lockers) != 1 || lockers[0].Cookie != old {
		t.Fatalf("a Detach without a claim released the old lock: %+v", lockers)
	}

	// The state records it (the restart after the upgrade): this host's.
	att, err := p.Attach(ctx, name, driver.AttachRequest{Host: "node-1", MountID: "m1", Claimed: old})
	if err != nil || att.ID != old {
		t.Fatalf("attach with the state naming the old lock: %+v, %v", att, err)
	}
	if err := p.Detach(ctx, name, att); err != nil {
		t.Fatal(err)
	}
	if lockers, _ := c.Lockers(ctx, spec); len(lockers) != 0 {
		t.Fatalf("after the Detach: %+v", lockers)
	}
}
