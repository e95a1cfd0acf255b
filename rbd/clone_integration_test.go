//go:build integration

package rbd_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/rbd"
)

// -o from-snapshot clones a snapshot, named as volume@snap or pool/image@snap. Without -o size the
// clone keeps the snapshot's size (DEFAULT_SIZE does not grow it); with a larger size it grows.
func TestCreateFromSnapshot(t *testing.T) {
	e := lab(t)
	c := e.connect(t)
	p := rbd.NewProvisioner(c, rbd.ProvisionerConfig{Pool: e.pool, Host: "host-a",
		Features: []string{"layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten"}})
	ctx := ctxFor(t, 90*time.Second)
	remove := func(name string) { _ = p.Remove(ctxFor(t, 30*time.Second), name, driver.RemoveDelete) }

	base := uniqueName("base")
	if err := p.Create(ctx, base, driver.Options{Size: 64 * mib, SizeGiven: true, FSType: "ext4", Backend: map[string]string{}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { remove(base) })
	e.writeAt(t, rbd.Spec{Pool: e.pool, Image: base}, 0, []byte("from the base"))
	snap := rbd.Spec{Pool: e.pool, Image: base, Snap: "s1"}
	if err := c.CreateSnap(ctx, snap); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx := ctxFor(t, 30*time.Second)
		_ = c.UnprotectSnap(cctx, snap)
		_ = c.RemoveSnap(cctx, snap)
	})

	var clones []driver.Volume
	for _, tc := range []struct {
		name, from string
		opts       driver.Options
		want       uint64
	}{
		{"no size", base + "@s1", driver.Options{Size: 10 << 30, FSType: "ext4"}, 64 * mib},
		{"larger size", e.pool + "/" + base + "@s1", driver.Options{Size: 128 * mib, SizeGiven: true, FSType: "ext4"}, 128 * mib},
	} {
		clone := uniqueName("clone")
		tc.opts.Backend = map[string]string{rbd.OptFromSnapshot: tc.from}
		if err := p.Create(ctx, clone, tc.opts); err != nil {
			t.Fatalf("%s: create from %s: %v", tc.name, tc.from, err)
		}
		t.Cleanup(func() { remove(clone) })
		v, err := p.Get(ctx, clone)
		if err != nil {
			t.Fatal(err)
		}
		parent, _ := v.Status["parent"].(string)
		if v.Size != tc.want || !strings.HasSuffix(parent, base+"@s1") {
			t.Errorf("%s: clone of %s: size %s, parent %q; want %s, parent %s@s1", tc.name, tc.from,
				driver.FormatSize(v.Size), parent, driver.FormatSize(tc.want), base)
		}
		clones = append(clones, v)
	}

	// An idempotent Create compares the backend options it gives with the existing image. The
	// source is recorded at Create: a flattened clone, which has no parent any more, still matches.
	baseVol, err := p.Get(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Flatten(ctx, clones[1].Image); err != nil {
		t.Fatal(err)
	}
	flat, err := p.Get(ctx, clones[1].Name)
	if err != nil {
		t.Fatal(err)
	}
	if flat.Status["parent"] != nil || flat.Status[rbd.OptFromSnapshot] != e.pool+"/"+base+"@s1" {
		t.Fatalf("flattened clone: Status %v, want no parent and from-snapshot %s/%s@s1", flat.Status, e.pool, base)
	}
	for _, tc := range []struct {
		vol     driver.Volume
		backend map[string]string
		want    string // "" for no difference
	}{
		{clones[0], map[string]string{rbd.OptFromSnapshot: base + "@s1"}, ""},
		{clones[0], map[string]string{rbd.OptFromSnapshot: e.pool + "/" + base + "@s1"}, ""},
		{clones[0], map[string]string{rbd.OptFromSnapshot: base + "@s2"}, "from-snapshot " + base + "@s2 (it was cloned from " + e.pool + "/" + base + "@s1)"},
		{flat, map[string]string{rbd.OptFromSnapshot: base + "@s1"}, ""},
		{flat, map[string]string{rbd.OptFromSnapshot: base + "@s2"}, "from-snapshot " + base + "@s2 (it was cloned from " + e.pool + "/" + base + "@s1)"},
		{baseVol, map[string]string{rbd.OptFromSnapshot: base + "@s1"}, "from-snapshot " + base + "@s1 (it is not a clone)"},
		{baseVol, map[string]string{rbd.OptFeatures: "deep-flatten, layering,exclusive-lock,object-map,fast-diff"}, ""},
		{baseVol, map[string]string{rbd.OptFeatures: "layering"}, "features layering (it has deep-flatten,exclusive-lock,fast-diff,layering,object-map)"},
		{baseVol, map[string]string{rbd.OptPool: e.pool}, ""},
		{baseVol, map[string]string{rbd.OptPool: "fast"}, "pool fast (it is in pool " + e.pool + ")"},
		{baseVol, map[string]string{rbd.OptDataPool: "ec"}, "data-pool ec (it has none)"},
		{baseVol, map[string]string{rbd.OptDataPool: e.pool}, ""},
		{baseVol, map[string]string{rbd.OptFeatures: "deep-flatten,layering,exclusive-lock,object-map,fast-diff,striping"}, ""},
		{clones[0], map[string]string{rbd.OptFromSnapshot: "no-snapshot-given"}, "from-snapshot no-snapshot-given (not image@snapshot or volume@snapshot)"},
	} {
		diffs, err := p.Differences(ctx, tc.vol, driver.Options{Backend: tc.backend})
		if err != nil {
			t.Fatalf("Differences of %s: %v", tc.vol.Name, err)
		}
		got := strings.Join(diffs, "; ")
		if got != tc.want {
			t.Errorf("Differences of %s with %v = %q, want %q", tc.vol.Name, tc.backend, got, tc.want)
		}
	}
}

// A Create with -o pool interrupted between making the image and indexing it (kill -9) leaves an
// image the index does not know: Get cannot find the volume. Creating it again indexes that image
// (ErrExists, so the driver checks it is compatible), and from then on it is found.
func TestCreateInOtherPoolIndexesAnUnindexedImage(t *testing.T) {
	e := lab(t)
	a := e.admin(t) // the test user has no caps on the other pool
	other := ensureOtherPool(t, e)
	p := rbd.NewProvisioner(a, rbd.ProvisionerConfig{Pool: e.pool, Host: "host-a", Features: []string{"layering"}})
	ctx := ctxFor(t, 60*time.Second)
	name := uniqueName("unindexed")
	if err := a.Create(ctx, rbd.Spec{Pool: other, Image: name}, rbd.CreateOptions{Size: 16 * mib, Features: []string{"layering"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.Remove(ctxFor(t, 30*time.Second), name, driver.RemoveDelete)
		_ = a.Remove(ctxFor(t, 30*time.Second), rbd.Spec{Pool: other, Image: name})
	})
	if _, err := p.Get(ctx, name); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("Get of the unindexed image: %v, want ErrNotFound", err)
	}
	err := p.Create(ctx, name, driver.Options{Size: 16 * mib, SizeGiven: true, FSType: "ext4", Backend: map[string]string{rbd.OptPool: other}})
	if !errors.Is(err, driver.ErrExists) {
		t.Fatalf("Create again: %v, want ErrExists", err)
	}
	v, err := p.Get(ctx, name)
	if err != nil || v.Image.Pool != other || v.Size != 16*mib {
		t.Fatalf("Get after the second Create = %+v, %v; want the image in %s", v, err, other)
	}
	if err := p.Remove(ctx, name, driver.RemoveDelete); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Get(ctx, name); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("Get after Remove: %v, want ErrNotFound", err)
	}
}
