package volfs

import (
	"context"
	"fmt"
	"os"

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
