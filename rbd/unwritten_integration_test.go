//go:build integration

package rbd_test

import (
	"testing"
	"time"

	"github.com/ceph/go-ceph/rados"
	gorbd "github.com/ceph/go-ceph/rbd"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/rbd"
)

// radosIO opens a pool with a connection of its own as the least-privilege user, closed when
// the test ends: for what the tests do behind the Cluster's back.
func (e labEnv) radosIO(t *testing.T, pool string) *rados.IOContext {
	return e.radosIOAs(t, e.user, e.keyring, pool)
}

// radosIOAs is radosIO as another cephx user (client.admin for pools the test user has no caps on).
func (e labEnv) radosIOAs(t *testing.T, user, keyring, pool string) *rados.IOContext {
	t.Helper()
	conn, err := rados.NewConnWithUser(user)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.ReadConfigFile(e.conf); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetConfigOption("keyring", keyring); err != nil {
		t.Fatal(err)
	}
	if err := conn.Connect(); err != nil {
		t.Fatal(err)
	}
	io, err := conn.OpenIOContext(pool)
	if err != nil {
		conn.Shutdown()
		t.Fatal(err)
	}
	t.Cleanup(func() { io.Destroy(); conn.Shutdown() })
	return io
}

// writeAt writes b at off in the image with librbd, as a mapped device's writer would.
func (e labEnv) writeAt(t *testing.T, spec rbd.Spec, off int64, b []byte) {
	t.Helper()
	writeImage(t, e.radosIO(t, spec.Pool), spec, off, b)
}

func writeImage(t *testing.T, io *rados.IOContext, spec rbd.Spec, off int64, b []byte) {
	t.Helper()
	img, err := gorbd.OpenImage(io, spec.Image, gorbd.NoSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if _, err := img.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
}

// EndsUnwritten says "unwritten" for a new image and for one written only away from its ends,
// and "not known" as soon as a byte is written in either end window, and for a clone.
func TestEndsUnwritten(t *testing.T) {
	e := lab(t)
	c := e.connect(t)
	ctx := ctxFor(t, 90*time.Second)
	const size, window = 64 * mib, driver.SignatureWindow
	unwritten := func(spec rbd.Spec) bool {
		t.Helper()
		d, err := c.Describe(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		return c.EndsUnwritten(ctx, d.Info, window)
	}
	newImage := func(prefix string, order int) rbd.Spec {
		t.Helper()
		spec := rbd.Spec{Pool: e.pool, Image: uniqueName(prefix)}
		t.Cleanup(func() { _ = c.Remove(ctxFor(t, 20*time.Second), spec) })
		if err := c.Create(ctx, spec, rbd.CreateOptions{Size: size, Order: order}); err != nil {
			t.Fatal(err)
		}
		return spec
	}
	one := []byte{1}

	fresh := newImage("unw-fresh", 0)
	if !unwritten(fresh) {
		t.Fatal("a new image is not reported unwritten")
	}
	// 1 MiB objects: the byte just before the last window is in another object than the window.
	middle := newImage("unw-middle", 20)
	e.writeAt(t, middle, size/2, one)
	e.writeAt(t, middle, size-window-1, one)
	e.writeAt(t, middle, window, one)
	if !unwritten(middle) {
		t.Fatal("an image written only outside both end windows is not reported unwritten")
	}
	for name, off := range map[string]int64{"first byte": 0, "end of the first window": window - 1,
		"start of the last window": size - window, "last byte": size - 1} {
		spec := newImage("unw-written", 20)
		e.writeAt(t, spec, off, one)
		if unwritten(spec) {
			t.Errorf("an image written at its %s (offset %d) is reported unwritten", name, off)
		}
	}
	small := newImage("unw-small-objects", 16) // 64 KiB objects: not answerable from the layout
	if unwritten(small) {
		t.Error("an image with objects smaller than the window is reported unwritten")
	}

	// A clone reads its parent's data where it has no object of its own.
	if err := c.CreateSnap(ctx, rbd.Spec{Pool: fresh.Pool, Image: fresh.Image, Snap: "base"}); err != nil {
		t.Fatal(err)
	}
	snap := rbd.Spec{Pool: fresh.Pool, Image: fresh.Image, Snap: "base"}
	if err := c.ProtectSnap(ctx, snap); err != nil {
		t.Fatal(err)
	}
	clone := cloneOf(t, c, snap, "unw-clone", rbd.CreateOptions{})
	if unwritten(clone) {
		t.Error("a clone is reported unwritten")
	}
}
