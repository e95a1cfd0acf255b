//go:build integration

package rbd_test

import (
	"slices"
	"sort"
	"testing"
	"time"

	gorbd "github.com/ceph/go-ceph/rbd"

	"github.com/cephdocker/ceph-docker-plugin/rbd"
)

// List reads rbd_directory itself, page by page: in a namespace of its own (no other test's
// images come and go there) it answers what librbd's list answers, in name order, empty before
// the first image and across several pages.
func TestListPagesTheDirectory(t *testing.T) {
	e := lab(t)
	c := e.connect(t)
	ctx := ctxFor(t, 90*time.Second)
	io := e.radosIO(t, e.pool)
	ns := uniqueName("list")
	if err := gorbd.NamespaceCreate(io, ns); err != nil {
		t.Fatal(err)
	}
	io.SetNamespace(ns)
	t.Cleanup(func() {
		io.SetNamespace("")
		if err := gorbd.NamespaceRemove(io, ns); err != nil {
			t.Errorf("remove namespace %s: %v", ns, err)
		}
	})
	if names, err := c.List(ctx, e.pool, ns); err != nil || len(names) != 0 {
		t.Fatalf("List of an empty namespace = %v, %v; want none", names, err)
	}
	defer rbd.SetDirPage(3)()
	var want []string
	for i := 0; i < 8; i++ {
		spec := rbd.Spec{Pool: e.pool, Namespace: ns, Image: uniqueName("img")}
		if err := c.Create(ctx, spec, rbd.CreateOptions{Size: 8 << 20}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Remove(ctxFor(t, 30*time.Second), spec) })
		want = append(want, spec.Image)
	}
	sort.Strings(want)
	got, err := c.List(ctx, e.pool, ns)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := gorbd.GetImageNames(io)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(ref)
	if !slices.Equal(got, want) || !slices.Equal(got, ref) {
		t.Fatalf("List = %v\nwant %v\nlibrbd %v", got, want, ref)
	}
}
