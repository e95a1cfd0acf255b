package rbd

import (
	"errors"
	"slices"
	"testing"
)

func TestEndObjects(t *testing.T) {
	const mib = 1 << 20
	plain := ImageInfo{DataPrefix: "rbd_data.abc", ObjectSize: 4 * mib, StripeUnit: 4 * mib, StripeCount: 1}
	with := func(f func(*ImageInfo)) ImageInfo { i := plain; f(&i); return i }
	cases := []struct {
		name string
		info ImageInfo
		want []uint64
		ok   bool
	}{
		{"1 GiB: first object and the last one", with(func(i *ImageInfo) { i.Size = 1024 * mib }), []uint64{0, 255}, true},
		{"last window across two objects", with(func(i *ImageInfo) { i.Size = 8*mib + mib/2 }), []uint64{0, 1, 2}, true},
		{"smaller than the window", with(func(i *ImageInfo) { i.Size = mib / 2 }), []uint64{0}, true},
		{"one object", with(func(i *ImageInfo) { i.Size = 4 * mib }), []uint64{0}, true},
		{"objects of exactly the window", with(func(i *ImageInfo) { i.Size = 10 * mib; i.ObjectSize, i.StripeUnit = mib, mib }), []uint64{0, 9}, true},
		{"empty image", with(func(i *ImageInfo) { i.Size = 0 }), nil, true},
		{"clone", with(func(i *ImageInfo) { i.Size = 64 * mib; i.Parent = "volumes/base@s" }), nil, false},
		{"being migrated", with(func(i *ImageInfo) { i.Size = 64 * mib; i.Features = []string{"layering", "migrating"} }), nil, false},
		{"journaling", with(func(i *ImageInfo) { i.Size = 64 * mib; i.Features = []string{"exclusive-lock", "journaling"} }), nil, false},
		{"objects smaller than the window", with(func(i *ImageInfo) { i.Size = 64 * mib; i.ObjectSize, i.StripeUnit = 64<<10, 64<<10 }), nil, false},
		{"fancy striping", with(func(i *ImageInfo) { i.Size = 64 * mib; i.StripeUnit, i.StripeCount = mib, 4 }), nil, false},
		{"layout unknown", ImageInfo{Size: 64 * mib}, nil, false},
	}
	for _, c := range cases {
		got, ok := endObjects(c.info, mib)
		if ok != c.ok || !slices.Equal(got, c.want) {
			t.Errorf("%s: endObjects = %v, %v; want %v, %v", c.name, got, ok, c.want, c.ok)
		}
	}
}

func TestDecodeImageID(t *testing.T) {
	// What `rados get rbd_id.NAME` showed for an image of the lab cluster.
	raw := []byte("\x0d\x00\x00\x001a2cf35303822")
	if id, err := decodeImageID(raw); err != nil || id != "1a2cf35303822" {
		t.Errorf("decode = %q, %v; want 1a2cf35303822", id, err)
	}
	for _, bad := range [][]byte{nil, []byte("\x0d\x00"), []byte("\x00\x00\x00\x00"), []byte("\x05\x00\x00\x00abc"), append(raw, 'x')} {
		if id, err := decodeImageID(bad); err == nil {
			t.Errorf("decode %q = %q, want an error", bad, id)
		}
	}
}

func TestDataPrefix(t *testing.T) {
	pool := func(id int64, err error) func() (int64, error) { return func() (int64, error) { return id, err } }
	cases := []struct {
		name, stat, id string
		dataPool       bool
		poolID         func() (int64, error)
		want           string
	}{
		{"plain", "rbd_data.1a2cf35303822", "1a2cf35303822", false, nil, "rbd_data.1a2cf35303822"},
		// What librbd's stat gave for a data-pool image of the lab cluster: one character short.
		{"data pool, stat truncated", "rbd_data.2.1bbc49774c0f", "1bbc49774c0fa", true, pool(2, nil), "rbd_data.2.1bbc49774c0fa"},
		{"data pool, stat whole", "rbd_data.2.1bbc4977", "1bbc4977", true, pool(2, nil), "rbd_data.2.1bbc4977"},
		{"disagrees", "rbd_data.3.1bbc49774c0f", "1bbc49774c0fa", true, pool(2, nil), ""},
		{"pool lookup fails", "rbd_data.2.1bbc49774c0f", "1bbc49774c0fa", true, pool(0, errors.New("no pool")), ""},
		{"no stat prefix", "", "1a2cf35303822", false, nil, ""},
	}
	for _, c := range cases {
		if got := dataPrefix(c.stat, c.id, c.dataPool, c.poolID); got != c.want {
			t.Errorf("%s: dataPrefix = %q, want %q", c.name, got, c.want)
		}
	}
}
