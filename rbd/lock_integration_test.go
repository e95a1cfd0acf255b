//go:build integration

package rbd_test

import (
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ceph/go-ceph/rados"
	gorbd "github.com/ceph/go-ceph/rbd"

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

	fenced, err := hostB.BreakLock(ctx, spec, "")
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

// A host lock taken with an image ID read just before (Describe, then LockHost) must not stick to
// a header that the name no longer leads to: the image was removed, or renamed, in between.
func TestLockHostAfterTheImageWentAway(t *testing.T) {
	e := lab(t)
	c := e.connect(t)
	ctx := ctxFor(t, 60*time.Second)
	io := e.radosIO(t, e.pool)
	headerExists := func(id string) bool {
		t.Helper()
		_, err := io.Stat("rbd_header." + id)
		if err != nil && !errors.Is(err, rados.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}

	// Removed: taking the lock would recreate its header as an empty object; none is left.
	gone := rbd.Spec{Pool: e.pool, Image: uniqueName("lock-gone")}
	if err := c.Create(ctx, gone, rbd.CreateOptions{Size: 16 * mib}); err != nil {
		t.Fatal(err)
	}
	d, err := c.Describe(ctx, gone)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(ctx, gone); err != nil {
		t.Fatal(err)
	}
	err = c.LockHost(ctx, gone, d.Info.ID, "host-x", "test")
	if !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("LockHost on a removed image = %v, want ErrNotFound", err)
	}
	if headerExists(d.Info.ID) {
		t.Errorf("LockHost on a removed image left rbd_header.%s behind", d.Info.ID)
		_ = io.Delete("rbd_header." + d.Info.ID)
	}

	// Renamed: the header is the renamed image's; it stays, without the lock.
	old := rbd.Spec{Pool: e.pool, Image: uniqueName("lock-old")}
	renamed := rbd.Spec{Pool: e.pool, Image: uniqueName("lock-new")}
	if err := c.Create(ctx, old, rbd.CreateOptions{Size: 16 * mib}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Remove(ctxFor(t, 20*time.Second), renamed) })
	d, err = c.Describe(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	img, err := gorbd.OpenImage(io, old.Image, gorbd.NoSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	err = img.Rename(renamed.Image)
	img.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.LockHost(ctx, old, d.Info.ID, "host-x", "test"); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("LockHost on a renamed image's old name = %v, want ErrNotFound", err)
	}
	if !headerExists(d.Info.ID) {
		t.Fatal("LockHost removed the header of the renamed image")
	}
	if lockers, err := c.Lockers(ctx, renamed); err != nil || len(lockers) != 0 {
		t.Fatalf("lockers of the renamed image = %v, %v; want none", lockers, err)
	}
	if _, err := c.Describe(ctx, renamed); err != nil {
		t.Fatalf("the renamed image after the refused lock: %v", err)
	}

	// The name still leads to the ID: the lock is taken.
	if err := c.LockHost(ctx, renamed, d.Info.ID, "host-x", "test"); err != nil {
		t.Fatalf("LockHost with the current ID: %v", err)
	}
	if lockers, err := c.Lockers(ctx, renamed); err != nil || len(lockers) != 1 || lockers[0].Cookie != "host-x" {
		t.Fatalf("lockers after LockHost = %v, %v; want host-x's", lockers, err)
	}
}

// FenceDeadHolder fences only a holder that is gone: while the holder's client still watches the
// image it waits, then refuses without fencing anyone; once the watch is gone it breaks the lock.
func TestFenceDeadHolderRefusesALiveHolder(t *testing.T) {
	e := lab(t)
	hostA := e.connect(t)
	hostB := e.connect(t)
	ctx := ctxFor(t, 60*time.Second)
	spec := rbd.Spec{Pool: e.pool, Image: uniqueName("fence-live")}
	if err := hostB.Create(ctx, spec, rbd.CreateOptions{Size: 16 * mib, Features: []string{"layering", "exclusive-lock"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hostB.Remove(ctxFor(t, 20*time.Second), spec) })
	held, err := hostA.AcquireLock(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	released := false
	t.Cleanup(func() { // before the image's removal (cleanups run last first): a watched image stays
		if !released {
			_ = held.Release(ctxFor(t, 10*time.Second))
		}
	})
	addrA, err := hostA.ClientAddr()
	if err != nil {
		t.Fatal(err)
	}

	short := ctxFor(t, 3*time.Second)
	start := time.Now()
	fenced, err := hostB.FenceDeadHolder(short, spec, 0, "")
	if !errors.Is(err, driver.ErrBusyElsewhere) || !strings.Contains(err.Error(), "alive") || !strings.Contains(err.Error(), addrA) {
		t.Fatalf("FenceDeadHolder of a live holder = %v, %v; want ErrBusyElsewhere saying %s is alive", fenced, err, addrA)
	}
	if took := time.Since(start); took < 2*time.Second || took > 5*time.Second {
		t.Errorf("FenceDeadHolder gave up after %v; want about the 3 s the context allowed", took)
	}
	if bl, err := hostB.Blocklisted(ctx, addrA); err != nil || bl {
		t.Fatalf("the live holder %s was blocklisted (%v, %v)", addrA, bl, err)
	}
	if err := held.Write(ctx, []byte("still mine"), 0); err != nil {
		t.Fatalf("the live holder cannot write after the refused fence: %v", err)
	}

	released = true
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if fenced, err = hostB.FenceDeadHolder(ctx, spec, 0, ""); err != nil || len(fenced) != 0 {
		t.Fatalf("FenceDeadHolder after the holder let go = %v, %v; want nothing to fence", fenced, err)
	}
}

// startWatch runs `rbd watch` on the image, which keeps a watch on it as a mapping does, and
// returns once the watch is there.
func startWatch(t *testing.T, e labEnv, c *rbd.Cluster, spec rbd.Spec) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("rbd", "-c", e.conf, "-n", "client."+e.user, "-k", e.keyring, "watch", spec.String())
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin = pr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pr.Close()
	t.Cleanup(func() { pw.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for i := 0; ; i++ {
		if ws, err := c.OtherWatchers(ctxFor(t, 10*time.Second), spec); err == nil && len(ws) > 0 {
			return cmd
		}
		if i > 100 {
			t.Fatalf("rbd watch did not watch %s", spec)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A volume whose image a client watches without the plugin's host lock: a live client is refused
// after the wait for its watch to lapse; a dead one's watch (a crashed plugin, this host before a
// quick reboot) lapses and the Attach goes through, without LOCK_BREAK.
func TestAttachWaitsOutADeadClientsWatch(t *testing.T) {
	e := lab(t)
	c := e.connect(t)
	p := rbd.NewProvisioner(c, rbd.ProvisionerConfig{Pool: e.pool, Host: "host-a", Features: []string{"layering", "exclusive-lock"}})
	name := uniqueName("watched")
	if err := p.Create(ctxFor(t, 30*time.Second), name, driver.Options{Size: 16 * mib, SizeGiven: true, FSType: "ext4", Backend: map[string]string{}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Remove(ctxFor(t, 60*time.Second), name, driver.RemoveDelete) })
	spec := rbd.Spec{Pool: e.pool, Image: name}
	req := driver.AttachRequest{Host: "host-a", MountID: "m1"}

	watch := startWatch(t, e, c, spec)
	start := time.Now()
	_, err := p.Attach(ctxFor(t, 20*time.Second), name, req) // waits until 10 s before the deadline
	if !errors.Is(err, driver.ErrBusyElsewhere) || !strings.Contains(err.Error(), "kept watching the image") {
		t.Fatalf("attach while a live client watches: %v, want ErrBusyElsewhere", err)
	}
	t.Logf("a live client's watch: refused after %.1fs: %v", time.Since(start).Seconds(), err)

	_ = watch.Process.Kill() // dies without unwatching: the watch lingers until it lapses
	_ = watch.Wait()
	start = time.Now()
	att, err := p.Attach(ctxFor(t, 60*time.Second), name, req)
	if err != nil {
		t.Fatalf("attach after the client died: %v", err)
	}
	t.Logf("a dead client's watch: attached after %.1fs (it lapses within %s)", time.Since(start).Seconds(), rbd.WatchLapse)
	if err := p.Detach(ctxFor(t, 30*time.Second), name, att); err != nil {
		t.Fatal(err)
	}
}
