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
			return unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, "")
		})
		if err != nil {
			_ = unix.Unmount(target, 0)
			return fmt.Errorf("make the bind of %s on %s read-only: %w", source, target, err)
		}
	}
	return nil
}
