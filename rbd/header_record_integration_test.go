//go:build integration

package rbd

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	librbd "github.com/ceph/go-ceph/rbd"

	"github.com/cephdocker/ceph-docker-plugin/plugin/plugintest"
)

// TestRecordHeaderFixtures records what the OSD answers readHeader's calls for images made with
// known settings, into testdata/header (RECORD_HEADER_FIXTURES=1; the unit tests decode them).
// Each fixture's want holds what the recording was made from: the settings given, this client's
// lock and what librbd says after opening the image, never what decode says.
func TestRecordHeaderFixtures(t *testing.T) {
	if os.Getenv("RECORD_HEADER_FIXTURES") != "1" {
		t.Skip("RECORD_HEADER_FIXTURES=1 records testdata/header")
	}
	e := plugintest.MustCeph(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	connect := func(user, keyring string) *Cluster {
		c, err := Connect(ctx, Config{ConfPath: e.Conf, User: user, Keyring: keyring, OpTimeout: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	admin, user := connect("admin", e.AdminKeyring), connect(e.User, e.Keyring)
	io, err := admin.ioctx(ctx, e.Pool, "")
	if err != nil {
		t.Fatal(err)
	}
	poolID, err := admin.conn.GetPoolByName(e.Pool)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	cleanup := func(f func(context.Context) error) {
		t.Cleanup(func() {
			cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
			defer ccancel()
			if err := f(cctx); err != nil {
				t.Log("cleanup:", err)
			}
		})
	}
	const mib = 1 << 20

	// record reads the header of spec with readHeader's calls and writes name.json; want's ids,
	// layout and metadata come from librbd (an open of the image), the rest from the caller. An
	// image with more than a page of metadata gets its second page recorded too.
	record := func(name string, spec Spec, want fixtureWant) {
		t.Helper()
		id, err := admin.ImageID(ctx, spec)
		must(err)
		calls := headerCalls()
		_, err = compoundRead(io, "rbd_header."+id, calls, true)
		must(err)
		img, err := librbd.OpenImageReadOnly(io, spec.Image, librbd.NoSnapshot)
		must(err)
		defer func() { _ = img.Close() }()
		meta, err := img.ListMetadata()
		must(err)
		if want.Meta != nil && !reflect.DeepEqual(meta, want.Meta) {
			t.Fatalf("%s: librbd lists metadata %v, %v was set", name, meta, want.Meta)
		}
		want.Meta = meta
		keys := slices.Sorted(maps.Keys(meta))
		if len(keys) > 2*metaPage {
			t.Fatalf("%s: %d metadata keys: at most two pages are recorded", name, len(keys))
		}
		moreAfter := ""
		if len(keys) > metaPage {
			moreAfter = keys[metaPage-1]
		}
		fx := headerFixture{Image: spec.Image, ImageID: id}
		for _, c := range calls {
			fx.Calls = append(fx.Calls, recordedCall{Cls: c.cls, Method: c.method, In: c.in, Out: c.out, Rval: c.rval})
		}
		if moreAfter != "" {
			more := []clsCall{metaListCall(moreAfter)}
			_, err = compoundRead(io, "rbd_header."+id, more, false)
			must(err)
			fx.MoreMeta = &recordedCall{Cls: more[0].cls, Method: more[0].method, In: more[0].in, Out: more[0].out, Rval: more[0].rval, After: moreAfter}
		}
		st, err := img.Stat()
		must(err)
		want.Size, want.Order = st.Size, st.Order
		want.Features, err = img.GetFeatures()
		must(err)
		want.StripeUnit, err = img.GetStripeUnit()
		must(err)
		want.StripeCount, err = img.GetStripeCount()
		must(err)
		want.DataPoolID = -1
		want.ObjectPrefix = "rbd_data." + id
		if want.Features&librbd.FeatureDataPool != 0 {
			want.DataPoolID, err = img.GetDataPoolID()
			must(err)
			want.ObjectPrefix = fmt.Sprintf("rbd_data.%d.%s", poolID, id)
		}
		if want.Parent != nil {
			p, err := img.GetParent()
			must(err)
			want.Parent.PoolID, err = admin.conn.GetPoolByName(p.Image.PoolName)
			must(err)
			want.Parent.Namespace, want.Parent.ImageID, want.Parent.SnapID = p.Image.PoolNamespace, p.Image.ImageID, p.Snap.ID
		}
		fx.Want = want
		b, err := json.MarshalIndent(fx, "", "  ")
		must(err)
		must(os.WriteFile(filepath.Join("testdata", "header", name+".json"), append(b, '\n'), 0o644))
	}

	// plain: a non-default object size, more metadata than one page, a host lock and a watch
	// (an image open) by the least-privilege client.
	plain := Spec{Pool: e.Pool, Image: plugintest.Uniq("hdr-plain")}
	must(admin.Create(ctx, plain, CreateOptions{Size: 100 * mib, Order: 23,
		Features: []string{"layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten"}}))
	cleanup(func(c context.Context) error { return admin.Remove(c, plain) })
	meta := map[string]string{}
	for i := 0; i < metaPage+5; i++ {
		meta[fmt.Sprintf("k%03d", i)] = "value " + strconv.Itoa(i*i)
	}
	must(admin.SetMetas(ctx, plain, meta))
	cookie := HostCookie("recorder-node", "recorder-id")
	must(user.LockHost(ctx, plain, "", cookie, "header fixture"))
	uio, err := user.ioctx(ctx, e.Pool, "")
	must(err)
	plainID, err := admin.ImageID(ctx, plain)
	must(err)
	cleanup(func(context.Context) error { return unlockHeader(uio, "rbd_header."+plainID, cookie) })
	watch, err := librbd.OpenImage(uio, plain.Image, librbd.NoSnapshot)
	must(err)
	t.Cleanup(func() { _ = watch.Close() })
	addr, err := user.ClientAddr()
	must(err)
	record("plain", plain, fixtureWant{Meta: meta, Lockers: []Locker{{
		Client: "client." + strconv.FormatUint(user.conn.GetInstanceID(), 10), Cookie: cookie, Addr: addr}}})

	// striped: striping-v2 and a data pool.
	const dataPool = "cdp-other"
	pc := plugintest.Ceph{Conf: e.Conf, AdminKeyring: e.AdminKeyring}
	for _, args := range [][]string{{"osd", "pool", "create", dataPool, "8", "8"},
		{"osd", "pool", "set", dataPool, "size", "1", "--yes-i-really-mean-it"},
		{"osd", "pool", "application", "enable", dataPool, "rbd"}} {
		if out, err := pc.Admin("ceph", args...); err != nil {
			t.Fatalf("ceph %v: %v: %s", args, err, out)
		}
	}
	striped := Spec{Pool: e.Pool, Image: plugintest.Uniq("hdr-striped")}
	opts := librbd.NewRbdImageOptions()
	defer opts.Destroy()
	must(opts.SetUint64(librbd.ImageOptionFeatures, librbd.FeatureLayering|librbd.FeatureStripingV2))
	must(opts.SetUint64(librbd.ImageOptionOrder, 22))
	must(opts.SetUint64(librbd.ImageOptionStripeUnit, 64<<10))
	must(opts.SetUint64(librbd.ImageOptionStripeCount, 4))
	must(opts.SetString(librbd.ImageOptionDataPool, dataPool))
	must(librbd.CreateImage(io, striped.Image, 48*mib, opts))
	cleanup(func(c context.Context) error { return admin.Remove(c, striped) })
	record("striped", striped, fixtureWant{})

	// clone: of a snapshot of plain, shrunk below the parent (the overlap follows).
	snap := Spec{Pool: plain.Pool, Image: plain.Image, Snap: "fixture"}
	must(admin.CreateSnap(ctx, snap))
	cleanup(func(c context.Context) error { return admin.RemoveSnap(c, snap) })
	must(admin.ProtectSnap(ctx, snap))
	cleanup(func(c context.Context) error { return admin.UnprotectSnap(c, snap) })
	clone := Spec{Pool: plain.Pool, Image: plugintest.Uniq("hdr-clone")}
	must(admin.Clone(ctx, snap, clone, CreateOptions{Features: []string{"layering"}}))
	cleanup(func(c context.Context) error { return admin.Remove(c, clone) })
	must(admin.Resize(ctx, clone, 64*mib))
	record("clone", clone, fixtureWant{Parent: &fixtureParent{Overlap: 64 * mib}})

	// flattened: a clone with a snapshot, flattened: the head has no parent any more.
	flat := Spec{Pool: plain.Pool, Image: plugintest.Uniq("hdr-flat")}
	must(admin.Clone(ctx, snap, flat, CreateOptions{Features: []string{"layering"}}))
	cleanup(func(c context.Context) error { return admin.Remove(c, flat) })
	flatSnap := Spec{Pool: flat.Pool, Image: flat.Image, Snap: "kept"}
	must(admin.CreateSnap(ctx, flatSnap))
	cleanup(func(c context.Context) error { return admin.RemoveSnap(c, flatSnap) })
	must(admin.Flatten(ctx, flat))
	record("flattened", flat, fixtureWant{})
}
