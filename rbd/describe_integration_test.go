//go:build integration

package rbd_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"syscall"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/rbd"
)

// Describe reads the header without opening the image, decoding the cls replies itself: what it
// says must be what librbd says after an open (Info, ListMeta, Watchers) and what librados' own
// lock listing says (Lockers), for a plain image with many metadata keys (more than one page),
// one held by a host lock and open elsewhere, a clone before and after its flatten, and an image
// with a data pool.
func TestDescribeMatchesLibrbd(t *testing.T) {
	e := lab(t)
	c := e.connect(t)
	other := e.connect(t) // another client: its open is a watcher, its host lock a locker
	ctx := ctxFor(t, 120*time.Second)
	same := func(what string, c *rbd.Cluster, spec rbd.Spec) rbd.Description {
		t.Helper()
		d, err := c.Describe(ctx, spec)
		if err != nil {
			t.Fatalf("%s: describe: %v", what, err)
		}
		info, err := c.Info(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(d.Info, info) {
			t.Errorf("%s: Describe's info\n%+v\nlibrbd's\n%+v", what, d.Info, info)
		}
		meta, err := c.ListMeta(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		if len(meta) == 0 {
			meta = nil
		}
		if len(d.Meta) == 0 {
			d.Meta = nil
		}
		if !reflect.DeepEqual(d.Meta, meta) {
			t.Errorf("%s: Describe's metadata (%d keys) differ from librbd's (%d keys)", what, len(d.Meta), len(meta))
		}
		lockers, err := c.Lockers(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Lockers) != len(lockers) || (len(lockers) > 0 && !reflect.DeepEqual(d.Lockers, lockers)) {
			t.Errorf("%s: Describe's lockers %+v, librados' %+v", what, d.Lockers, lockers)
		}
		ws, err := c.LibrbdOtherWatchers(ctx, spec) // its own open's watch left out, as Describe has none
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Watchers) != len(ws) || (len(ws) > 0 && !reflect.DeepEqual(d.Watchers, ws)) {
			t.Errorf("%s: Describe's watchers %+v, librbd's %+v", what, d.Watchers, ws)
		}
		// Watchers and OtherWatchers read the header's watches without an open, like Describe.
		for name, list := range map[string]func(context.Context, rbd.Spec) ([]rbd.Watcher, error){"Watchers": c.Watchers, "OtherWatchers": c.OtherWatchers} {
			got, err := list(ctx, spec)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(ws) || (len(ws) > 0 && !reflect.DeepEqual(got, ws)) {
				t.Errorf("%s: %s %+v, librbd's %+v", what, name, got, ws)
			}
		}
		return d
	}

	plain := rbd.Spec{Pool: e.pool, Image: uniqueName("describe")}
	if err := c.Create(ctx, plain, rbd.CreateOptions{Size: 96 * mib, Features: []string{"layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Remove(ctxFor(t, 30*time.Second), plain) })
	kv := map[string]string{}
	for i := 0; i < 150; i++ {
		kv[fmt.Sprintf("docker-plugin.k%03d", i)] = fmt.Sprintf("value %d", i)
	}
	if err := c.SetMetas(ctx, plain, kv); err != nil {
		t.Fatal(err)
	}
	d := same("plain", c, plain)
	if len(d.Meta) != 150 || len(d.Lockers) != 0 || len(d.Watchers) != 0 {
		t.Fatalf("plain: %d metadata keys, lockers %v, watchers %v; want 150 and none", len(d.Meta), d.Lockers, d.Watchers)
	}

	// Held: another client's host lock, and that client's open (a watch) on the image.
	if err := other.LockHost(ctx, plain, d.Info.ID, rbd.HostCookie("node-x", "id-x"), "test"); err != nil {
		t.Fatal(err)
	}
	held, err := other.AcquireLock(ctx, plain)
	if err != nil {
		t.Fatal(err)
	}
	d = same("held", c, plain)
	addr, _ := other.ClientAddr()
	if len(d.Lockers) != 1 || d.Lockers[0].Addr != addr || len(d.Watchers) != 1 || d.Watchers[0].Addr != addr {
		t.Errorf("held: lockers %+v, watchers %+v; want the other client %s in both", d.Lockers, d.Watchers, addr)
	}
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.BreakHostLock(ctx, plain, d.Lockers[0]); err != nil {
		t.Fatal(err)
	}

	// A clone: its parent by name; after a flatten, none (the snapshot keeps it, the head not).
	snap := rbd.Spec{Pool: plain.Pool, Image: plain.Image, Snap: "s1"}
	if err := c.CreateSnap(ctx, snap); err != nil {
		t.Fatal(err)
	}
	if err := c.ProtectSnap(ctx, snap); err != nil {
		t.Fatal(err)
	}
	clone := cloneOf(t, c, snap, "describe-clone", rbd.CreateOptions{Features: []string{"layering"}})
	if d := same("clone", c, clone); d.Info.Parent != snap.String() {
		t.Errorf("clone: parent %q, want %q", d.Info.Parent, snap)
	}
	if err := c.CreateSnap(ctx, rbd.Spec{Pool: clone.Pool, Image: clone.Image, Snap: "c1"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.RemoveSnap(ctxFor(t, 30*time.Second), rbd.Spec{Pool: clone.Pool, Image: clone.Image, Snap: "c1"})
	})
	if err := c.Flatten(ctx, clone); err != nil {
		t.Fatal(err)
	}
	if d := same("flattened clone with a snapshot", c, clone); d.Info.Parent != "" {
		t.Errorf("flattened clone: parent %q, want none", d.Info.Parent)
	}

	// A data pool (as client.admin: the least-privilege user has no other pool).
	admin := e.admin(t)
	dp := ensureOtherPool(t, e)
	withData := rbd.Spec{Pool: e.pool, Image: uniqueName("describe-data")}
	if err := admin.Create(ctx, withData, rbd.CreateOptions{Size: 64 * mib, DataPool: dp, Features: []string{"layering"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Remove(ctxFor(t, 30*time.Second), withData) })
	if d := same("data pool", admin, withData); d.Info.DataPool != dp || d.Info.DataPrefix == "" {
		t.Errorf("data pool: %q, prefix %q; want %s and a prefix", d.Info.DataPool, d.Info.DataPrefix, dp)
	}

	if _, err := c.Describe(ctx, rbd.Spec{Pool: e.pool, Image: uniqueName("describe-none")}); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("describe of no image = %v, want ErrNotFound", err)
	}
}

// BenchmarkDescribe is one Describe of an idle image (go test -bench Describe -cpuprofile ...:
// where the client's CPU goes).
func BenchmarkDescribe(b *testing.B) {
	e := lab(b)
	c := e.connect(b)
	ctx := ctxFor(b, 10*time.Minute)
	spec := rbd.Spec{Pool: e.pool, Image: uniqueName("describe-bench")}
	if err := c.Create(ctx, spec, rbd.CreateOptions{Size: 64 * mib}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Remove(ctxFor(b, 30*time.Second), spec) })
	var r0, r1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Describe(ctx, spec); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
	cpu := time.Duration(r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano())
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op") // all threads, librados' included
}
