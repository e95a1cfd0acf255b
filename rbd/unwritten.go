package rbd

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ceph/go-ceph/rados"
	"github.com/ceph/go-ceph/rbd"
)

// EndsUnwritten reports whether the first and the last window bytes of the image have never been
// written: no data object backs them, so they read as zeros. It asks RADOS whether those few
// objects exist (one stat each, at most three) instead of reading the mapped device, which goes
// through the mapper (2 MiB through rbd-fuse or krbd) on every first Mount of a new volume.
//
// It answers true only when that is certain from the layout: an image without a parent (a clone
// reads its parent's data where it has no object), not being migrated (the same, from the
// migration source), without journaling (entries not yet applied to the image), with plain
// striping, and with objects of at least window bytes. Anything else,
// or any error, is false: "not known to be unwritten", and the caller reads the device.
func (c *Cluster) EndsUnwritten(ctx context.Context, info ImageInfo, window uint64) bool {
	objs, ok := endObjects(info, window)
	if !ok {
		return false
	}
	pool := info.Spec.Pool
	if info.DataPool != "" {
		pool = info.DataPool
	}
	io, err := c.ioctx(ctx, pool, info.Spec.Namespace)
	if err != nil {
		return false
	}
	unwritten, err := call(ctx, c, "stat data objects", info.Spec.String(), func() (bool, error) {
		for _, n := range objs {
			_, err := io.Stat(fmt.Sprintf("%s.%016x", info.DataPrefix, n))
			if errors.Is(err, rados.ErrNotFound) {
				continue
			}
			return false, err // it exists (nil), or cannot tell
		}
		return true, nil
	}, nil)
	return err == nil && unwritten
}

// endObjects returns the numbers of the data objects that hold the image's first and last window
// bytes, and false when the layout does not allow that answer (see EndsUnwritten).
func endObjects(info ImageInfo, window uint64) ([]uint64, bool) {
	switch {
	case info.Parent != "", slices.Contains(info.Features, rbd.FeatureNameJournaling),
		slices.Contains(info.Features, rbd.FeatureNameMigrating), // reads fall through to the source
		info.DataPrefix == "", info.ObjectSize == 0, info.ObjectSize < window,
		info.StripeCount > 1, info.StripeUnit != 0 && info.StripeUnit != info.ObjectSize:
		return nil, false
	}
	if info.Size == 0 {
		return nil, true
	}
	last := info.Size - 1
	first := uint64(0)
	if info.Size > window {
		first = info.Size - window
	}
	objs := []uint64{0}
	for n := first / info.ObjectSize; n <= last/info.ObjectSize; n++ {
		if n != 0 {
			objs = append(objs, n)
		}
	}
	return objs, true
}
