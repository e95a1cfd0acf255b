//go:build integration

package rbd_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	gorbd "github.com/ceph/go-ceph/rbd"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/rbd"
)

// -o from-volume on the lab cluster: a flatten that the deadline cuts stops (librbd closes the
// clone within seconds, its parent link kept); a copy of a 1 GiB source with 512 MiB written is
// made (snapshot, clone, flatten, snapshot removed) within a generous deadline; a copy whose
// deadline ends midway leaves nothing.
func TestCreateCopyOnCluster(t *testing.T) {
	e := lab(t)
	c := e.connect(t)
	p := rbd.NewProvisioner(c, rbd.ProvisionerConfig{Pool: e.pool, Host: "host-a", Features: []string{"layering", "exclusive-lock"}})
	ctx := ctxFor(t, 120*time.Second)
	remove := func(name string) { _ = p.Remove(ctxFor(t, 30*time.Second), name, driver.RemoveDelete) }
	src := uniqueName("copysrc")
	if err := p.Create(ctx, src, driver.Options{Size: 1024 * mib, SizeGiven: true, FSType: "ext4", Backend: map[string]string{}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { remove(src) })
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 4*mib/16)
	start := time.Now()
	for off := int64(0); off < 1024*mib; off += 8 * mib { // every other object
		copy(chunk, fmt.Sprintf("off=%012d", off))
		e.writeAt(t, rbd.Spec{Pool: e.pool, Image: src}, off, chunk)
	}
	t.Logf("512 MiB written to %s in %.1fs", src, time.Since(start).Seconds())
	srcSpec := rbd.Spec{Pool: e.pool, Image: src}
	noSnaps := func(when string) {
		t.Helper()
		if snaps, err := c.ListSnaps(ctx, srcSpec); err != nil || len(snaps) != 0 {
			t.Fatalf("%s: snapshots of the source %q, %v", when, snaps, err)
		}
	}

	// Flatten stops at its deadline: within seconds nobody has the clone open, and the clone
	// still has its parent (a flatten that went on would hold it open for seconds, then drop it).
	snap := srcSpec
	snap.Snap = "flatten-cut"
	if err := c.CreateSnap(ctx, snap); err != nil {
		t.Fatal(err)
	}
	if err := c.ProtectSnap(ctx, snap); err != nil {
		t.Fatal(err)
	}
	clone := cloneOf(t, c, snap, "flattencut", rbd.CreateOptions{})
	fctx := ctxFor(t, 300*time.Millisecond)
	if err := c.Flatten(fctx, clone); !errors.Is(err, driver.ErrTimeout) {
		t.Fatalf("flatten with a 300ms deadline: %v, want ErrTimeout", err)
	}
	admin := e.admin(t)
	cutAt := time.Now()
	for {
		ws, err := admin.OtherWatchers(ctx, clone)
		if err != nil {
			t.Fatal(err)
		}
		if len(ws) == 0 {
			break
		}
		if time.Since(cutAt) > 5*time.Second {
			t.Fatalf("the clone is still open %v after its flatten's deadline: %+v", time.Since(cutAt), ws)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if info, err := c.Info(ctx, clone); err != nil || info.Parent == "" {
		t.Fatalf("the clone after a cut flatten: %+v %v, want its parent kept", info, err)
	}
	t.Logf("the flatten cut at its deadline stopped within %.1fs", time.Since(cutAt).Seconds())
	if err := c.Remove(ctx, clone); err != nil {
		t.Fatal(err)
	}
	if err := c.UnprotectSnap(ctx, snap); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveSnap(ctx, snap); err != nil {
		t.Fatal(err)
	}

	// A copy whose deadline ends midway: nothing is left.
	cut := uniqueName("copycut")
	cctx := ctxFor(t, 1500*time.Millisecond)
	start = time.Now()
	err := p.Create(cctx, cut, driver.Options{Size: 10 << 30, FSType: "ext4", Backend: map[string]string{rbd.OptFromVolume: src}})
	took := time.Since(start)
	t.Logf("a copy with a 1.5s deadline: %v after %.1fs", err, took.Seconds())
	if !errors.Is(err, driver.ErrTimeout) || strings.Contains(err.Error(), "undoing") {
		remove(cut)
		t.Fatalf("a copy cut by its deadline: %v, want ErrTimeout, with the undo done", err)
	}
	if _, err := c.ImageID(ctx, rbd.Spec{Pool: e.pool, Image: cut}); !errors.Is(err, driver.ErrNotFound) {
		remove(cut)
		t.Fatalf("the half-made copy stays: %v", err)
	}
	noSnaps("after the cut copy")

	// A deadline long enough: the copy is a flattened image with the source's data and size.
	cp := uniqueName("copy")
	start = time.Now()
	if err := p.Create(ctx, cp, driver.Options{Size: 10 << 30, FSType: "ext4", Backend: map[string]string{rbd.OptFromVolume: src}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { remove(cp) })
	t.Logf("copy of a 1 GiB volume with 512 MiB written made in %.1fs", time.Since(start).Seconds())
	v, err := p.Get(ctx, cp)
	if err != nil || v.Size != 1024*mib || v.Status["parent"] != nil || v.Status[rbd.OptFromVolume] != src {
		t.Fatalf("the copy: %+v %v", v, err)
	}
	noSnaps("after the copy")
	for _, off := range []int64{0, 512 * mib, 1016 * mib} {
		if got, want := e.readAt(t, rbd.Spec{Pool: e.pool, Image: cp}, off, 16), fmt.Sprintf("off=%012d", off); string(got) != want {
			t.Errorf("the copy at %d reads %q, want %q", off, got, want)
		}
	}
	// The source is removed at once (nothing of it is held by the copy), and with it the
	// protected snapshot that a copy killed an hour ago left.
	stale := srcSpec
	stale.Snap = "docker-plugin-copy-killed-" + time.Now().Add(-time.Hour).UTC().Format("20060102T150405.000Z")
	if err := c.CreateSnap(ctx, stale); err != nil {
		t.Fatal(err)
	}
	if err := c.ProtectSnap(ctx, stale); err != nil {
		t.Fatal(err)
	}
	if err := p.Remove(ctx, src, driver.RemoveDelete); err != nil {
		t.Fatalf("remove the source after its copy, with a stale copy's snapshot: %v", err)
	}
}

// readAt reads n bytes of an image at off.
func (e labEnv) readAt(t *testing.T, spec rbd.Spec, off int64, n int) []byte {
	t.Helper()
	img, err := gorbd.OpenImageReadOnly(e.radosIO(t, spec.Pool), spec.Image, gorbd.NoSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	b := make([]byte, n)
	if _, err := img.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}
