package rbd

import (
	"context"
	"errors"
	"sort"

	"github.com/ceph/go-ceph/rbd"
)

// CreateSnap creates spec.Snap on spec.Image.
func (c *Cluster) CreateSnap(ctx context.Context, spec Spec) error {
	if err := checkSpec(spec, true); err != nil {
		return opErr("snap create", spec.String(), err)
	}
	head := spec
	head.Snap = ""
	io, err := c.ioctx(ctx, spec.Pool, spec.Namespace)
	if err != nil {
		return err
	}
	return c.do(ctx, "snap create", spec.String(), func() error {
		img, err := rbd.OpenImage(io, spec.Image, "")
		if err != nil {
			return err
		}
		defer img.Close()
		_, err = img.CreateSnapshot(spec.Snap)
		return err
	}, c.undoIfOK("snap create", spec.String(), func() error {
		img, err := rbd.OpenImage(io, spec.Image, "")
		if err != nil {
			return err
		}
		return errors.Join(img.GetSnapshot(spec.Snap).Remove(), img.Close())
	}))
}

// ListSnaps returns the names of an image's snapshots, sorted.
func (c *Cluster) ListSnaps(ctx context.Context, spec Spec) ([]string, error) {
	return imageCall(ctx, c, "snap ls", spec, func(img *rbd.Image) ([]string, error) {
		snaps, err := img.GetSnapshotNames()
		names := make([]string, 0, len(snaps))
		for _, s := range snaps {
			names = append(names, s.Name)
		}
		sort.Strings(names)
		return names, err
	})
}

func (c *Cluster) snapOp(ctx context.Context, op string, spec Spec, fn func(*rbd.Snapshot) error) error {
	if err := checkSpec(spec, true); err != nil {
		return opErr(op, spec.String(), err)
	}
	head := spec
	head.Snap = ""
	return c.withImage(ctx, op, head, func(img *rbd.Image) error { return fn(img.GetSnapshot(spec.Snap)) })
}

// ProtectSnap protects spec.Snap so that it can be cloned.
func (c *Cluster) ProtectSnap(ctx context.Context, spec Spec) error {
	return c.snapOp(ctx, "snap protect", spec, func(s *rbd.Snapshot) error {
		if ok, err := s.IsProtected(); err == nil && ok {
			return nil
		}
		return s.Protect()
	})
}

// UnprotectSnap unprotects spec.Snap; ErrInUse while it has clones.
func (c *Cluster) UnprotectSnap(ctx context.Context, spec Spec) error {
	return c.snapOp(ctx, "snap unprotect", spec, func(s *rbd.Snapshot) error {
		if ok, err := s.IsProtected(); err == nil && !ok {
			return nil
		}
		return s.Unprotect()
	})
}

// RemoveSnap deletes spec.Snap; ErrInUse while it is protected.
func (c *Cluster) RemoveSnap(ctx context.Context, spec Spec) error {
	return c.snapOp(ctx, "snap rm", spec, func(s *rbd.Snapshot) error { return s.Remove() })
}

// Clone makes child a copy-on-write clone of parent (which names a protected snapshot).
func (c *Cluster) Clone(ctx context.Context, parent, child Spec, opts CreateOptions) error {
	if err := checkSpec(parent, true); err != nil {
		return opErr("clone", parent.String(), err)
	}
	if err := checkSpec(child, false); err != nil {
		return opErr("clone", child.String(), err)
	}
	pio, err := c.ioctx(ctx, parent.Pool, parent.Namespace)
	if err != nil {
		return err
	}
	cio, err := c.ioctx(ctx, child.Pool, child.Namespace)
	if err != nil {
		return err
	}
	var bits uint64
	if opts.Features != nil {
		if bits, err = ParseFeatures(opts.Features); err != nil {
			return opErr("clone", child.String(), err)
		}
	}
	return c.do(ctx, "clone", parent.String()+" -> "+child.String(), func() error {
		rio, err := imageOptions(opts, bits)
		if err != nil {
			return err
		}
		defer rio.Destroy()
		return rbd.CloneImage(pio, parent.Image, parent.Snap, cio, child.Image, rio)
	}, c.undoIfOK("clone", child.String(), func() error { return rbd.RemoveImage(cio, child.Image) }))
}
