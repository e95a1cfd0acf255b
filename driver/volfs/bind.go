package volfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/driver/execx"
)

var _ driver.Binder = FS{}

// Bind implements driver.Binder with mount(2): MS_BIND, then a read-only remount of the bind if
// asked (the flag of a bind mount is set by a remount, not by the first call).
func (f FS) Bind(ctx context.Context, source, target string, readOnly bool) error {
	src, err := f.MountedDevice(source)
	if err != nil {
		return err
	}
	if src == "" {
		return fmt.Errorf("bind %s on %s: %s is not mounted", source, target, source)
	}
	cur, err := f.MountedDevice(target)
	if err != nil {
		return err
	}
	if cur == src {
		return nil
	}
	if cur != "" {
		return fmt.Errorf("%w: %s already has %s mounted", driver.ErrInUse, target, cur)
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	if err := execx.Bounded(ctx, func() error { return unix.Mount(source, target, "", unix.MS_BIND, "") }); err != nil {
		return fmt.Errorf("bind %s on %s: %w", source, target, err)
	}
	if readOnly {
		return remountReadOnly(ctx, source, target)
	}
	return nil
}

// remountReadOnly makes the bind of source at target read-only, or unmounts it.
func remountReadOnly(ctx context.Context, source, target string) error {
	err := execx.Bounded(ctx, func() error {
		// A bind remount sets the mount's flags to exactly those given: keep the ones the bind
		// has (the volume's nosuid,nodev among them), or it would lose them.
		keep, err := mountFlagsOf(target)
		if err != nil {
			return err
		}
		return unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|keep, "")
	})
	if err != nil {
		if uerr := unix.Unmount(target, 0); uerr != nil {
			return fmt.Errorf("make the bind of %s on %s read-only: %w; undoing the bind also failed (it stays read-write until unmounted): %v", source, target, err, uerr)
		}
		return fmt.Errorf("make the bind of %s on %s read-only: %w", source, target, err)
	}
	return nil
}

// mountFlagsOf returns the per-mount flags (MS_NOSUID, MS_NODEV, MS_NOEXEC and the atime ones)
// of the mount at path.
func mountFlagsOf(path string) (uintptr, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, err
	}
	var flags uintptr
	for _, f := range []struct {
		st int64
		ms uintptr
	}{
		{unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV}, {unix.ST_NOEXEC, unix.MS_NOEXEC},
		{unix.ST_NOATIME, unix.MS_NOATIME}, {unix.ST_NODIRATIME, unix.MS_NODIRATIME}, {unix.ST_RELATIME, unix.MS_RELATIME},
	} {
		if int64(st.Flags)&f.st != 0 {
			flags |= f.ms
		}
	}
	return flags, nil
}

// BindDevice implements driver.Binder: the block device node dev bind-mounted on target, a
// file made for it (mode 0600) if missing; an empty directory there is replaced by the file.
// With readOnly the bind is remounted read-only (the device itself is read-only only when
// mapped so).
func (f FS) BindDevice(ctx context.Context, dev, target string, readOnly bool) error {
	var ds unix.Stat_t
	if err := unix.Stat(dev, &ds); err != nil {
		return fmt.Errorf("bind device %s on %s: %w", dev, target, err)
	}
	if ds.Mode&unix.S_IFMT != unix.S_IFBLK {
		return fmt.Errorf("bind device %s on %s: %s is not a block device", dev, target, dev)
	}
	if ok, err := f.BoundDevice(target, dev); err != nil || ok {
		return err
	}
	cur, err := f.MountedDevice(target)
	if err != nil {
		return err
	}
	if cur != "" {
		return fmt.Errorf("%w: %s already has %s mounted", driver.ErrInUse, target, cur)
	}
	if fi, err := os.Lstat(target); err == nil && fi.IsDir() {
		if err := os.Remove(target); err != nil { // only an empty one
			return fmt.Errorf("bind device %s on %s: the target is a directory: %w", dev, target, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	file, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("bind device %s: make the target file: %w", dev, err)
	}
	if err := file.Close(); err != nil {
		return err
	}
	if err := execx.Bounded(ctx, func() error { return unix.Mount(dev, target, "", unix.MS_BIND, "") }); err != nil {
		return fmt.Errorf("bind device %s on %s: %w", dev, target, err)
	}
	if readOnly {
		return remountReadOnly(ctx, dev, target)
	}
	return nil
}

// BoundDevice implements driver.Binder: target is a mount point whose node is a block device
// with dev's device number. (The mount table names a device node's bind by the filesystem the
// node lives on, devtmpfs, not by the device: the node itself says which device it is.)
func (f FS) BoundDevice(target, dev string) (bool, error) {
	cur, err := f.MountedDevice(target)
	if err != nil || cur == "" {
		return false, err
	}
	var ts, ds unix.Stat_t
	if err := unix.Stat(target, &ts); err != nil {
		return false, fmt.Errorf("stat %s: %w", target, err)
	}
	if err := unix.Stat(dev, &ds); errors.Is(err, unix.ENOENT) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("stat %s: %w", dev, err)
	}
	return ts.Mode&unix.S_IFMT == unix.S_IFBLK && ts.Rdev == ds.Rdev, nil
}
