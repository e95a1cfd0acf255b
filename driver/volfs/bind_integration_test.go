//go:build integration

package volfs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// Bind shows the source's mount at the target (made if missing), read-only if asked; binding it
// there again succeeds; a target with something else mounted is refused; Unmount removes it.
func TestBind(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var fs FS
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("cdp-bind-test", src, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(src, unix.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rw, ro := filepath.Join(dir, "a", "rw"), filepath.Join(dir, "ro")
	if err := fs.Bind(ctx, src, rw, false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(rw, unix.MNT_DETACH) })
	if err := fs.Bind(ctx, src, rw, false); err != nil {
		t.Errorf("Bind again: %v", err)
	}
	if dev, _ := fs.MountedDevice(rw); dev != "cdp-bind-test" {
		t.Errorf("%s shows %q", rw, dev)
	}
	if err := os.WriteFile(filepath.Join(rw, "g"), []byte("y"), 0o644); err != nil {
		t.Errorf("write through the read-write bind: %v", err)
	}
	if err := fs.Bind(ctx, rw, ro, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(ro, unix.MNT_DETACH) })
	if b, err := os.ReadFile(filepath.Join(ro, "f")); err != nil || string(b) != "x" {
		t.Errorf("read through the read-only bind: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(ro, "h"), []byte("z"), 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write through the read-only bind: %v, want EROFS", err)
	}
	// Both binds keep the source's nosuid,nodev (a volume is always mounted so): the read-only
	// remount must not drop them.
	for _, p := range []string{rw, ro} {
		flags, err := mountFlagsOf(p)
		if err != nil || flags&(unix.MS_NOSUID|unix.MS_NODEV) != unix.MS_NOSUID|unix.MS_NODEV {
			t.Errorf("%s: flags %#x, %v; want nosuid,nodev kept", p, flags, err)
		}
	}
	other := filepath.Join(t.TempDir(), "other")
	if err := os.MkdirAll(other, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("cdp-bind-other", other, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(other, unix.MNT_DETACH) })
	if err := fs.Bind(ctx, other, rw, false); err == nil {
		t.Errorf("Bind over another mount succeeded")
	}
	if err := fs.Bind(ctx, filepath.Join(dir, "a"), filepath.Join(dir, "x"), false); err == nil {
		t.Errorf("Bind of a directory that is not a mount point succeeded")
	}
	for _, p := range []string{ro, rw} {
		if err := fs.Unmount(ctx, p); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s remains after Unmount: %v", p, err)
		}
	}
}

// BindDevice shows a block device's node at a file it makes (replacing an empty directory);
// binding it there again succeeds; BoundDevice tells that device from another; the data written
// through the target is on the device; Unmount removes the file.
func TestBindDevice(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var fs FS
	dev := loopDevice(t, 4<<20, nil)
	other := loopDevice(t, 4<<20, nil)
	dir := t.TempDir()
	target, fromDir := filepath.Join(dir, "p", "dev"), filepath.Join(dir, "d")
	if err := os.Mkdir(fromDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tg := range []string{target, fromDir} {
		if err := fs.BindDevice(ctx, dev, tg, false); err != nil {
			t.Fatalf("BindDevice on %s: %v", tg, err)
		}
		t.Cleanup(func() { _ = unix.Unmount(tg, unix.MNT_DETACH) })
		if ok, err := fs.BoundDevice(tg, dev); !ok || err != nil {
			t.Errorf("BoundDevice(%s, %s) = %t, %v", tg, dev, ok, err)
		}
	}
	if err := fs.BindDevice(ctx, dev, target, false); err != nil {
		t.Errorf("BindDevice again: %v", err)
	}
	if ok, err := fs.BoundDevice(target, other); ok || err != nil {
		t.Errorf("BoundDevice with another device = %t, %v", ok, err)
	}
	if err := fs.BindDevice(ctx, other, target, false); !errors.Is(err, driver.ErrInUse) {
		t.Errorf("BindDevice of another device there: %v, want ErrInUse", err)
	}
	if err := fs.BindDevice(ctx, filepath.Join(dir, "p"), filepath.Join(dir, "x"), false); err == nil {
		t.Errorf("BindDevice of a directory succeeded")
	}
	payload := []byte("written through the published device node")
	w, err := os.OpenFile(target, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(payload, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(payload))
	if _, err := r.ReadAt(got, 1<<20); err != nil || string(got) != string(payload) {
		t.Errorf("the device reads %q, %v", got, err)
	}
	r.Close()
	for _, tg := range []string{target, fromDir} {
		if err := fs.Unmount(ctx, tg); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(tg); !os.IsNotExist(err) {
			t.Errorf("%s remains after Unmount: %v", tg, err)
		}
	}
	if ok, err := fs.BoundDevice(target, dev); ok || err != nil {
		t.Errorf("BoundDevice after Unmount = %t, %v", ok, err)
	}
}

// A read-only BindDevice: the bind is read-only, BoundDevice still recognises it, and over a
// read-only device (a read-only mapping) a write through the target fails.
func TestBindDeviceReadOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var fs FS
	dev := loopDevice(t, 4<<20, nil)
	setRO := func(on int) error {
		f, err := os.Open(dev)
		if err != nil {
			return err
		}
		defer f.Close()
		return unix.IoctlSetPointerInt(int(f.Fd()), unix.BLKROSET, on)
	}
	if err := setRO(1); err != nil { // as a read-only mapping is
		t.Fatalf("make %s read-only: %v", dev, err)
	}
	// Cleared before the loop device is detached (the cleanups run in reverse): the flag outlives
	// the detach, and the next user of the loop device would find it read-only.
	t.Cleanup(func() {
		if err := setRO(0); err != nil {
			t.Errorf("make %s writable again: %v", dev, err)
		}
	})
	target := filepath.Join(t.TempDir(), "dev")
	if err := fs.BindDevice(ctx, dev, target, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(target, unix.MNT_DETACH) })
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil || st.Flags&unix.ST_RDONLY == 0 {
		t.Errorf("the bind at %s: flags %#x, %v; want read-only", target, st.Flags, err)
	}
	if ok, err := fs.BoundDevice(target, dev); !ok || err != nil {
		t.Errorf("BoundDevice of a read-only bind = %t, %v", ok, err)
	}
	if err := fs.BindDevice(ctx, dev, target, true); err != nil {
		t.Errorf("BindDevice again: %v", err)
	}
	w, err := os.OpenFile(target, os.O_WRONLY, 0)
	if err == nil {
		_, err = w.WriteAt([]byte("x"), 0)
		err = errors.Join(err, w.Sync(), w.Close())
	}
	if err == nil {
		t.Error("a write through the read-only target of a read-only device succeeded")
	}
	if err := fs.Unmount(ctx, target); err != nil {
		t.Fatal(err)
	}
}
