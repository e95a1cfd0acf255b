package fuse

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/driver/execx"
)

var _ driver.DeviceRefresher = (*Fuse)(nil)

// Refresh implements driver.DeviceRefresher: the loop device of a mapped image takes the image's
// current size. rbd-fuse follows a resize by itself (librbd refreshes the image header on the
// watch notification), but the kernel caches the image file's size (FUSE attributes) and the
// loop device keeps the size it was attached with: a stat of the file asks rbd-fuse again, and
// LOOP_SET_CAPACITY (losetup -c) makes the loop re-read it. An image that is not mapped is no
// error.
func (f *Fuse) Refresh(ctx context.Context, spec driver.ImageSpec) error {
	if err := check(spec); err != nil {
		return err
	}
	live, _, err := f.lookup(ctx, spec)
	if err != nil {
		return err
	}
	for _, m := range live {
		err := execx.Bounded(ctx, func() error {
			var st unix.Stat_t
			if err := unix.Stat(f.imageFile(spec), &st); err != nil {
				return err
			}
			lf, err := os.Open(m.Device)
			if err != nil {
				return err
			}
			defer lf.Close()
			return unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_SET_CAPACITY, 0)
		})
		if err != nil {
			return fmt.Errorf("fuse refresh %s (%s): %w", spec, m.Device, err)
		}
	}
	return nil
}
