//go:build integration

package volfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// loopDevice backs a loop device with a sparse file of size bytes (detached at cleanup).
func loopDevice(t *testing.T, size int64, prepare func(f *os.File)) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(f)
	}
	f.Close()
	// The loop ioctls directly, not losetup: `losetup --find` asks every loop device about its
	// backing file, and one backed by a hung FUSE server (another test's fenced rbd-fuse) hangs it.
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	backing, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer backing.Close()
	for attempt := 0; attempt < 16; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			t.Fatal(err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		lf, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_SET_FD, int(backing.Fd()))
		if errors.Is(err, unix.EBUSY) {
			lf.Close()
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_CLR_FD, 0); lf.Close() })
		return dev
	}
	t.Fatal("no free loop device")
	return ""
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// A blank device is formatted; a device with a filesystem is never formatted again, whatever
// fstype is asked for.
func TestFormatOnlyBlankDevices(t *testing.T) {
	for _, fstype := range []string{"ext4", "xfs"} {
		t.Run(fstype, func(t *testing.T) {
			dev := loopDevice(t, 512<<20, nil)
			var fs FS
			ctx := testCtx(t)
			got, _, err := fs.FormatIfBlank(ctx, dev, fstype, nil, false)
			if err != nil || got != fstype {
				t.Fatalf("format blank: %q, %v", got, err)
			}
			target := filepath.Join(t.TempDir(), "mnt")
			if err := fs.Mount(ctx, dev, target, fstype, "noatime"); err != nil {
				t.Fatal(err)
			}
			if err := fs.Mount(ctx, dev, target, fstype, "noatime"); err != nil {
				t.Fatalf("mounting the same device again: %v", err)
			}
			if err := os.WriteFile(filepath.Join(target, "keep"), []byte("data"), 0o644); err != nil {
				t.Fatal(err)
			}
			if d, _ := fs.MountedDevice(target); d != dev {
				t.Fatalf("mounted device = %q, want %s", d, dev)
			}
			if err := fs.Unmount(ctx, target); err != nil {
				t.Fatal(err)
			}
			if err := fs.Unmount(ctx, target); err != nil {
				t.Fatalf("unmount of an unmounted target: %v", err)
			}
			other := map[string]string{"ext4": "xfs", "xfs": "ext4"}[fstype]
			got, _, err = fs.FormatIfBlank(ctx, dev, other, nil, false)
			if err != nil || got != fstype {
				t.Fatalf("second format as %s: got %q, %v; want the existing %s kept", other, got, err, fstype)
			}
			if err := fs.Mount(ctx, dev, target, got, ""); err != nil {
				t.Fatal(err)
			}
			defer fs.Unmount(ctx, target)
			if b, err := os.ReadFile(filepath.Join(target, "keep")); err != nil || string(b) != "data" {
				t.Fatalf("data after the second FormatIfBlank: %q, %v", b, err)
			}
		})
	}
}

// The backend's word that a device was never written (unwritten) skips the reads of both ends,
// but not the read of its head: a wrong word cannot make mkfs run over a filesystem or a
// partition table. A device that really is blank is formatted.
func TestUnwrittenHintNeverFormatsOverData(t *testing.T) {
	ctx := testCtx(t)
	var fs FS
	for _, fstype := range []string{"ext4", "xfs"} {
		dev := loopDevice(t, 512<<20, nil)
		if got, _, err := fs.FormatIfBlank(ctx, dev, fstype, nil, true); err != nil || got != fstype {
			t.Fatalf("%s: format of a blank device with the hint: %q, %v", fstype, got, err)
		}
		other := map[string]string{"ext4": "xfs", "xfs": "ext4"}[fstype]
		if got, _, err := fs.FormatIfBlank(ctx, dev, other, nil, true); err != nil || got != fstype {
			t.Fatalf("a %s device with a wrong unwritten hint, asked for %s: got %q, %v; want the %s kept", fstype, other, got, err, fstype)
		}
	}
	dev := loopDevice(t, 64<<20, func(f *os.File) {
		mbr := make([]byte, 512)
		mbr[446+4], mbr[510], mbr[511] = 0x83, 0x55, 0xAA
		copy(mbr[446+8:446+16], []byte{0, 8, 0, 0, 0, 8, 0, 0})
		if _, err := f.WriteAt(mbr, 0); err != nil {
			t.Fatal(err)
		}
	})
	if _, _, err := fs.FormatIfBlank(ctx, dev, "ext4", nil, true); err == nil || !strings.Contains(err.Error(), "partition table") {
		t.Fatalf("a partitioned device with a wrong unwritten hint: %v, want a refusal naming the partition table", err)
	}
}

// A device with a partition table (partitioned by hand) is neither formatted nor mounted.
func TestRefusePartitionedDevice(t *testing.T) {
	dev := loopDevice(t, 64<<20, func(f *os.File) {
		mbr := make([]byte, 512)
		entry := mbr[446:462]
		entry[4] = 0x83                        // Linux
		copy(entry[8:12], []byte{0, 8, 0, 0})  // first LBA 2048
		copy(entry[12:16], []byte{0, 8, 0, 0}) // 2048 sectors
		mbr[510], mbr[511] = 0x55, 0xAA
		if _, err := f.WriteAt(mbr, 0); err != nil {
			t.Fatal(err)
		}
	})
	_, _, err := FS{}.FormatIfBlank(testCtx(t), dev, "ext4", nil, false)
	if err == nil || !strings.Contains(err.Error(), "partition table") {
		t.Fatalf("err = %v, want a refusal naming the partition table", err)
	}
}

// Unmounting a target a process still uses is refused with ErrInUse, not forced.
func TestUnmountBusy(t *testing.T) {
	dev := loopDevice(t, 64<<20, nil)
	var fs FS
	ctx := testCtx(t)
	if _, _, err := fs.FormatIfBlank(ctx, dev, "ext4", nil, false); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "mnt")
	if err := fs.Mount(ctx, dev, target, "ext4", ""); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(target, "open"))
	if err != nil {
		t.Fatal(err)
	}
	err = fs.Unmount(ctx, target)
	f.Close()
	if err == nil || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("unmount with an open file: %v", err)
	}
	if err := fs.Unmount(ctx, target); err != nil {
		t.Fatal(err)
	}
}

// zeroed reads both ends of the device: a byte anywhere blkid looks (the first or the last MiB)
// makes it not blank; the middle is not read (blkid finds nothing there either).
func TestZeroedReadsBothEnds(t *testing.T) {
	const size = 64 << 20
	at := func(off int64) func(f *os.File) {
		return func(f *os.File) {
			if _, err := f.WriteAt([]byte{0x5a}, off); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, c := range []struct {
		name  string
		size  int64
		prep  func(f *os.File)
		blank bool
	}{
		{"never written", size, nil, true},
		{"a byte at 0", size, at(0), false},
		{"a byte at 1 MiB - 1", size, at(1<<20 - 1), false},
		{"a byte in the last MiB", size, at(size - 4000), false},
		{"the last byte", size, at(size - 1), false},
		{"a byte in the middle only", size, at(size / 2), true},
		{"smaller than the window, blank", 512 << 10, nil, true},
		{"smaller than the window, last byte", 512 << 10, at(512<<10 - 1), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dev := loopDevice(t, c.size, c.prep)
			got, err := zeroed(testCtx(t), dev, zeroWindow, true)
			if err != nil || got != c.blank {
				t.Fatalf("zeroed(%s) = %v, %v; want %v", c.name, got, err, c.blank)
			}
		})
	}
}
