//go:build integration

package rbd_test

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/rbd"
)

const mib = 1 << 20

func TestImageLifecycle(t *testing.T) {
	e := lab(t)
	c := e.connect(t)
	ctx := ctxFor(t, 60*time.Second)
	spec := rbd.Spec{Pool: e.pool, Image: uniqueName("life")}
	t.Cleanup(func() { _ = c.Remove(ctxFor(t, 20*time.Second), spec) })

	feats := []string{"layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten"}
	if err := c.Create(ctx, spec, rbd.CreateOptions{Size: 64 * mib, Features: feats}); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, spec, rbd.CreateOptions{Size: 64 * mib}); !errors.Is(err, driver.ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	info, err := c.Info(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(feats)
	if info.Size != 64*mib || !reflect.DeepEqual(info.Features, feats) || info.ID == "" || info.Parent != "" {
		t.Fatalf("info = %+v", info)
	}
	if id, err := c.ImageID(ctx, spec); err != nil || id != info.ID {
		t.Fatalf("ImageID = %q, %v; want %q (Info's)", id, err, info.ID)
	}
	if id, err := c.ImageID(ctx, rbd.Spec{Pool: e.pool, Image: uniqueName("none")}); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("ImageID of a missing image = %q, %v; want ErrNotFound", id, err)
	}
	names, err := c.List(ctx, e.pool, "")
	if err != nil || !slices.Contains(names, spec.Image) {
		t.Fatalf("list = %v, %v; want it to contain %s", names, err, spec.Image)
	}

	if err := c.Resize(ctx, spec, 128*mib); err != nil {
		t.Fatal(err)
	}
	if info, _ := c.Info(ctx, spec); info.Size != 128*mib {
		t.Fatalf("size after resize = %d", info.Size)
	}

	// metadata
	if err := c.SetMeta(ctx, spec, "docker.name", "hello"); err != nil {
		t.Fatal(err)
	}
	if v, err := c.GetMeta(ctx, spec, "docker.name"); err != nil || v != "hello" {
		t.Fatalf("get meta = %q, %v", v, err)
	}
	if m, err := c.ListMeta(ctx, spec); err != nil || m["docker.name"] != "hello" {
		t.Fatalf("list meta = %v, %v", m, err)
	}
	if err := c.RemoveMeta(ctx, spec, "docker.name"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveMeta(ctx, spec, "docker.name"); err != nil {
		t.Fatalf("removing an unset key: %v, want success", err)
	}
	if _, err := c.GetMeta(ctx, spec, "docker.name"); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("get removed meta: %v, want ErrNotFound", err)
	}

	// snapshots and clones
	snap := spec
	snap.Snap = "s1"
	if err := c.CreateSnap(ctx, snap); err != nil {
		t.Fatal(err)
	}
	if s, err := c.ListSnaps(ctx, spec); err != nil || !reflect.DeepEqual(s, []string{"s1"}) {
		t.Fatalf("snaps = %v, %v", s, err)
	}
	if err := c.Remove(ctx, spec); !errors.Is(err, driver.ErrInUse) {
		t.Fatalf("remove with a snapshot: %v, want ErrInUse", err)
	}
	if err := c.ProtectSnap(ctx, snap); err != nil {
		t.Fatal(err)
	}
	if err := c.ProtectSnap(ctx, snap); err != nil {
		t.Fatalf("protect twice: %v", err)
	}
	clone := rbd.Spec{Pool: e.pool, Image: uniqueName("clone")}
	t.Cleanup(func() { _ = c.Remove(ctxFor(t, 20*time.Second), clone) })
	if err := c.Clone(ctx, snap, clone, rbd.CreateOptions{Features: []string{"layering", "exclusive-lock"}}); err != nil {
		t.Fatal(err)
	}
	ci, err := c.Info(ctx, clone)
	if err != nil || ci.Parent != snap.String() {
		t.Fatalf("clone info = %+v, %v; want parent %s", ci, err, snap)
	}
	if err := c.UnprotectSnap(ctx, snap); !errors.Is(err, driver.ErrInUse) {
		t.Fatalf("unprotect with a clone: %v, want ErrInUse", err)
	}
	if err := c.Flatten(ctx, clone); err != nil {
		t.Fatal(err)
	}
	if ci, _ := c.Info(ctx, clone); ci.Parent != "" {
		t.Fatalf("parent after flatten = %q", ci.Parent)
	}
	if err := c.UnprotectSnap(ctx, snap); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveSnap(ctx, snap); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveSnap(ctx, snap); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("remove a removed snapshot: %v, want ErrNotFound", err)
	}

	// trash, then remove
	if err := c.Trash(ctx, clone, time.Hour); err != nil {
		t.Fatal(err)
	}
	if tl, err := c.TrashList(ctx, e.pool, ""); err != nil || !slices.Contains(tl, clone.Image) {
		t.Fatalf("trash ls = %v, %v", tl, err)
	}
	if names, _ := c.List(ctx, e.pool, ""); slices.Contains(names, clone.Image) {
		t.Fatalf("trashed image still listed")
	}
	if err := c.Remove(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Info(ctx, spec); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("info after remove: %v, want ErrNotFound", err)
	}
	if err := c.Remove(ctx, spec); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("remove twice: %v, want ErrNotFound", err)
	}
}

func TestInvalidArguments(t *testing.T) {
	e := lab(t)
	c := e.connect(t)
	ctx := ctxFor(t, 20*time.Second)
	spec := rbd.Spec{Pool: e.pool, Image: uniqueName("bad")}
	cases := map[string]error{
		"zero size":       c.Create(ctx, spec, rbd.CreateOptions{}),
		"unknown feature": c.Create(ctx, spec, rbd.CreateOptions{Size: mib, Features: []string{"warp-drive"}}),
		"no image":        c.Create(ctx, rbd.Spec{Pool: e.pool}, rbd.CreateOptions{Size: mib}),
		"snap without @":  c.CreateSnap(ctx, spec),
	}
	for name, err := range cases {
		if !errors.Is(err, driver.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if _, err := c.List(ctx, "no-such-pool", ""); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("list of a missing pool: %v, want ErrNotFound", err)
	}
}

// The least-privilege user may not touch pools outside its caps.
func TestRestrictedUserCannotUseOtherPools(t *testing.T) {
	e := lab(t)
	a := e.admin(t)
	c := e.connect(t)
	ctx := ctxFor(t, 60*time.Second)
	pool := ensureOtherPool(t, e)
	if err := a.Create(ctx, rbd.Spec{Pool: pool, Image: "probe"}, rbd.CreateOptions{Size: mib}); err != nil && !errors.Is(err, driver.ErrExists) {
		t.Fatal(err)
	}
	_, err := c.Info(ctx, rbd.Spec{Pool: pool, Image: "probe"})
	if !errors.Is(err, driver.ErrPermission) {
		t.Fatalf("info on a pool outside the caps: %v, want ErrPermission", err)
	}
}

// An image whose data lives in a separate data pool (as with an erasure-coded pool). Set up as
// client.admin: the least-privilege user's caps cover only the volumes pool.
func TestCreateWithDataPool(t *testing.T) {
	e := lab(t)
	a := e.admin(t)
	ctx := ctxFor(t, 60*time.Second)
	dataPool := ensureOtherPool(t, e)
	spec := rbd.Spec{Pool: e.pool, Image: uniqueName("data")}
	if err := a.Create(ctx, spec, rbd.CreateOptions{Size: 16 * mib, DataPool: dataPool, Features: []string{"layering"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Remove(ctxFor(t, 20*time.Second), spec) })
	info, err := a.Info(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if info.DataPool != dataPool || !slices.Contains(info.Features, "data-pool") {
		t.Fatalf("info = %+v, want data pool %s", info, dataPool)
	}
	// The data objects live in the data pool, under a prefix that names the image's pool too.
	if !a.EndsUnwritten(ctx, info, driver.SignatureWindow) {
		t.Fatal("a new image with a data pool is not reported unwritten")
	}
	writeImage(t, e.radosIOAs(t, "admin", e.adminKeyring, e.pool), spec, int64(info.Size)-1, []byte{1})
	if a.EndsUnwritten(ctx, info, driver.SignatureWindow) {
		t.Fatalf("an image with a data pool, written at its last byte, is reported unwritten (prefix %s)", info.DataPrefix)
	}
}
