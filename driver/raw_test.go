package driver

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// MapRaw (CSI's block access) maps without formatting or mounting, counts its uses like Mount,
// refuses a filesystem use while the volume is up raw (and the reverse), and its last release
// leaves nothing behind.
func TestMapRawMapsOnlyAndExcludesFilesystemUse(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("blk", 1<<30, "ext4")
	dev, err := e.d.MapRaw(bg, "blk", "csi:a")
	if err != nil {
		t.Fatal(err)
	}
	if dev == "" || dev != e.mapper.device(image("blk")) {
		t.Fatalf("MapRaw returned %q, the mapper has %q", dev, e.mapper.device(image("blk")))
	}
	if n := len(e.mounter.formattedDevices()); n != 0 {
		t.Fatalf("a raw map formatted %d device(s)", n)
	}
	if got := e.mounter.device(e.path("blk")); got != "" {
		t.Fatalf("a raw map mounted %s at %s", got, e.path("blk"))
	}
	if again, err := e.d.MapRaw(bg, "blk", "csi:b"); err != nil || again != dev {
		t.Fatalf("second raw use = %q, %v; want the same device %q", again, err, dev)
	}
	if _, err := e.d.Mount(bg, "blk", "c1"); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "raw device") {
		t.Fatalf("Mount of a volume up raw = %v, want ErrInUse naming the raw use", err)
	}
	e.mustUnmount("blk", "csi:a")
	if _, ok := e.state("blk"); !ok {
		t.Fatal("the first release dropped the volume while another raw use holds it")
	}
	e.mustUnmount("blk", "csi:b")
	e.assertGone("blk")

	// The reverse: up as a filesystem, a raw use is refused.
	e.mustMount("blk", "c1")
	if _, err := e.d.MapRaw(bg, "blk", "csi:a"); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "as a filesystem") {
		t.Fatalf("MapRaw of a mounted volume = %v, want ErrInUse naming the filesystem use", err)
	}
	e.mustUnmount("blk", "c1")
	e.assertGone("blk")
}

func TestRootOptionsStoredAndReadBack(t *testing.T) {
	r := RootOptions{UID: "999", GID: "999", Mode: "0700", LostFound: "remove"}
	m := r.Meta()
	if got := RootFromMeta(func(k string) string { return m[k] }); got != r {
		t.Fatalf("RootFromMeta(Meta()) = %+v, want %+v", got, r)
	}
	if len((RootOptions{}).Meta()) != 0 || !RootFromMeta(func(string) string { return "" }).IsZero() {
		t.Fatal("no root option must store nothing and read back as zero")
	}
	if s := (RootOptions{UID: "5"}).String(); s != "uid=5" {
		t.Fatalf("String() = %q", s)
	}
}

func TestKeptNameIsNoVolumeNameAndSortsBesideIt(t *testing.T) {
	at := time.Date(2026, 11, 22, 5, 49, 0, 123e6, time.FixedZone("x", 3600))
	k := KeptName("db", at)
	if k != "db~removed-20261122T044900.123Z" {
		t.Fatalf("KeptName = %q", k)
	}
	if err := ValidateName(k); err == nil {
		t.Fatalf("%q is accepted as a volume name: List and Get would see the kept volume", k)
	}
	if !strings.HasPrefix(k, "db") {
		t.Fatalf("%q does not sort beside db", k)
	}
}
