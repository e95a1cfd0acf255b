// Package mappertest is the conformance suite every driver.Mapper passes (fuse on this host, krbd
// in the lab guests): map, format, mount, write, unmount, unmap, map again and read the data
// back; idempotent Map; Unmap of what is not mapped; refusal to unmap a mounted device; a failed
// Map that leaves nothing behind; read-only mappings. After each case it asserts that the
// mapper left nothing on the host.
package mappertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/driver/execx"
	"github.com/cephdocker/ceph-docker-plugin/plugin/plugintest"
)

// Harness is what the suite needs from the mapper's test.
type Harness struct {
	Mapper driver.Mapper
	// NewImage creates an empty image of size bytes for the test (and removes it at cleanup).
	NewImage func(t *testing.T, size uint64) driver.ImageSpec
	// Request builds the map request for spec (monitors, user, options).
	Request func(spec driver.ImageSpec) driver.MapRequest
	// Leftovers lists anything of the mapper's still on the host (devices, mounts, processes).
	Leftovers func(ctx context.Context) ([]string, error)
}

const timeout = 60 * time.Second

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	cases := []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"DataSurvivesRemap", dataSurvivesRemap},
		{"MapIsIdempotent", mapIsIdempotent},
		{"UnmapNotMappedSucceeds", unmapNotMapped},
		{"UnmapMountedIsInUse", unmapMountedIsInUse},
		{"MapMissingImageLeavesNothing", mapMissingImage},
		{"ReadOnlyMapping", readOnlyMapping},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.fn(t, h)
			assertNoLeftovers(t, h)
		})
	}
}

func ctx(t *testing.T) context.Context { return plugintest.Context(t, timeout) }

func assertNoLeftovers(t *testing.T, h Harness) {
	t.Helper()
	c := ctx(t)
	if l, err := h.Leftovers(c); err != nil || len(l) != 0 {
		t.Errorf("left on the host: %v (err %v)", l, err)
	}
	maps, err := h.Mapper.List(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(maps) != 0 {
		t.Errorf("still mapped: %+v", maps)
	}
}

// mapImage maps spec and unmaps it at cleanup (so that a failing case leaks nothing either).
func mapImage(t *testing.T, h Harness, req driver.MapRequest) driver.Mapping {
	t.Helper()
	m, err := h.Mapper.Map(ctx(t), req)
	if err != nil {
		t.Fatalf("map %s: %v", req.ImageSpec, err)
	}
	t.Cleanup(func() { _ = h.Mapper.Unmap(context.Background(), req.ImageSpec) })
	return m
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if _, err := execx.Run(ctx(t), execx.Cmd{Name: name, Args: args}); err != nil {
		t.Fatal(err)
	}
}

// mount mounts dev on a new directory and unmounts it at cleanup.
func mount(t *testing.T, dev string, flags uintptr) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, dir, "ext4", flags, ""); err != nil {
		t.Fatalf("mount %s: %v", dev, err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, 0) })
	return dir
}

func unmount(t *testing.T, dir string) {
	t.Helper()
	if err := unix.Unmount(dir, 0); err != nil {
		t.Fatalf("unmount %s: %v", dir, err)
	}
}

func dataSurvivesRemap(t *testing.T, h Harness) {
	spec := h.NewImage(t, 256<<20)
	req := h.Request(spec)
	m := mapImage(t, h, req)
	run(t, "mkfs.ext4", "-q", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1", m.Device)
	dir := mount(t, m.Device, 0)
	data := make([]byte, 8<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	plugintest.WriteFileSync(t, filepath.Join(dir, "data.bin"), data)
	unmount(t, dir)
	if err := h.Mapper.Unmap(ctx(t), spec); err != nil {
		t.Fatalf("unmap: %v", err)
	}
	if maps, _ := h.Mapper.List(ctx(t)); len(maps) != 0 {
		t.Fatalf("after unmap still listed: %+v", maps)
	}
	if l, _ := h.Leftovers(ctx(t)); len(l) != 0 {
		t.Fatalf("after unmap left: %v", l)
	}

	m2 := mapImage(t, h, req)
	dir2 := mount(t, m2.Device, 0)
	got, err := os.ReadFile(filepath.Join(dir2, "data.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(got); sum != want {
		t.Fatalf("checksum after remap %x, want %x", sum, want)
	}
	t.Logf("sha256 %x read back through %s after remap", want, m2.Device)
	unmount(t, dir2)
	if err := h.Mapper.Unmap(ctx(t), spec); err != nil {
		t.Fatalf("unmap: %v", err)
	}
}

func mapIsIdempotent(t *testing.T, h Harness) {
	spec := h.NewImage(t, 64<<20)
	req := h.Request(spec)
	m1 := mapImage(t, h, req)
	m2 := mapImage(t, h, req)
	if m1 != m2 {
		t.Fatalf("second map %+v, first %+v", m2, m1)
	}
	maps, err := h.Mapper.List(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range maps {
		if m.ImageSpec == spec {
			n++
			if m.Device != m1.Device {
				t.Errorf("listed device %s, mapped %s", m.Device, m1.Device)
			}
		}
	}
	if n != 1 {
		t.Fatalf("image listed %d times: %+v", n, maps)
	}
	if err := h.Mapper.Unmap(ctx(t), spec); err != nil {
		t.Fatal(err)
	}
}

func unmapNotMapped(t *testing.T, h Harness) {
	spec := h.NewImage(t, 16<<20)
	if err := h.Mapper.Unmap(ctx(t), spec); err != nil {
		t.Fatalf("unmap of an image never mapped: %v", err)
	}
	missing := spec
	missing.Image += "-missing"
	if err := h.Mapper.Unmap(ctx(t), missing); err != nil {
		t.Fatalf("unmap of a missing image: %v", err)
	}
}

func unmapMountedIsInUse(t *testing.T, h Harness) {
	spec := h.NewImage(t, 64<<20)
	m := mapImage(t, h, h.Request(spec))
	run(t, "mkfs.ext4", "-q", "-E", "nodiscard", m.Device)
	dir := mount(t, m.Device, 0)
	err := h.Mapper.Unmap(ctx(t), spec)
	if !errors.Is(err, driver.ErrInUse) {
		t.Fatalf("unmap while mounted: %v, want ErrInUse", err)
	}
	if maps, _ := h.Mapper.List(ctx(t)); len(maps) != 1 {
		t.Fatalf("refused unmap changed the mappings: %+v", maps)
	}
	// Still usable after the refusal.
	if err := os.WriteFile(filepath.Join(dir, "still"), []byte("ok"), 0o644); err != nil {
		t.Fatalf("write after refused unmap: %v", err)
	}
	unmount(t, dir)
	if err := h.Mapper.Unmap(ctx(t), spec); err != nil {
		t.Fatal(err)
	}
}

func mapMissingImage(t *testing.T, h Harness) {
	spec := h.NewImage(t, 16<<20)
	spec.Image += "-does-not-exist"
	_, err := h.Mapper.Map(ctx(t), h.Request(spec))
	if err == nil {
		_ = h.Mapper.Unmap(context.Background(), spec)
		t.Fatal("mapped an image that does not exist")
	}
	if !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("err = %v, want ErrNotFound", err)
	}
}

func readOnlyMapping(t *testing.T, h Harness) {
	spec := h.NewImage(t, 64<<20)
	rw := mapImage(t, h, h.Request(spec))
	run(t, "mkfs.ext4", "-q", "-E", "nodiscard", rw.Device)
	dir := mount(t, rw.Device, 0)
	if err := os.WriteFile(filepath.Join(dir, "hello"), []byte("written rw"), 0o644); err != nil {
		t.Fatal(err)
	}
	unmount(t, dir)
	if err := h.Mapper.Unmap(ctx(t), spec); err != nil {
		t.Fatal(err)
	}

	req := h.Request(spec)
	req.ReadOnly = true
	ro := mapImage(t, h, req)
	if !ro.ReadOnly {
		t.Fatalf("mapping %+v not read-only", ro)
	}
	if f, err := os.OpenFile(ro.Device, os.O_WRONLY, 0); err == nil {
		_, werr := f.Write(make([]byte, 4096))
		f.Close()
		if werr == nil {
			t.Fatal("wrote to a read-only mapping")
		}
	}
	rdir := mount(t, ro.Device, unix.MS_RDONLY)
	got, err := os.ReadFile(filepath.Join(rdir, "hello"))
	if err != nil || !bytes.Equal(got, []byte("written rw")) {
		t.Fatalf("read through read-only mapping: %q, %v", got, err)
	}
	rwReq := h.Request(spec)
	if _, err := h.Mapper.Map(ctx(t), rwReq); !errors.Is(err, driver.ErrInUse) {
		t.Fatalf("read-write map over a read-only mapping: %v, want ErrInUse", err)
	}
	unmount(t, rdir)
	if err := h.Mapper.Unmap(ctx(t), spec); err != nil {
		t.Fatal(err)
	}
}
