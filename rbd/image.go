package rbd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ceph/go-ceph/rados"
	"github.com/ceph/go-ceph/rbd"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// Spec is an image (or snapshot) name: pool[/namespace]/image[@snap].
type Spec = driver.ImageSpec

// CreateOptions are the properties of a new image.
type CreateOptions struct {
	Size     uint64   // bytes; must be > 0
	Features []string // feature names (e.g. "layering", "exclusive-lock"); nil for the cluster default
	DataPool string   // optional data pool (e.g. erasure-coded)
	Order    int      // object size as a power of two; 0 for the default (22 = 4 MiB)
}

// ImageInfo describes an image.
type ImageInfo struct {
	Spec     Spec
	ID       string
	Size     uint64
	Features []string
	DataPool string // empty when data lives in the image's pool
	Parent   string // pool/image@snap of a clone's parent, empty otherwise
	// The data layout: the objects' name prefix ("rbd_data.<id>"), their size, and the striping.
	DataPrefix              string
	ObjectSize              uint64
	StripeUnit, StripeCount uint64
}

// KnownFeatures are the feature names Create accepts.
var KnownFeatures = []string{
	rbd.FeatureNameLayering, rbd.FeatureNameStripingV2, rbd.FeatureNameExclusiveLock,
	rbd.FeatureNameObjectMap, rbd.FeatureNameFastDiff, rbd.FeatureNameDeepFlatten,
	rbd.FeatureNameJournaling, rbd.FeatureNameDataPool,
}

// ParseFeatures turns "layering,exclusive-lock" into feature bits, rejecting unknown names.
func ParseFeatures(names []string) (uint64, error) {
	known := map[string]bool{}
	for _, k := range KnownFeatures {
		known[k] = true
	}
	var bad []string
	for _, n := range names {
		if !known[n] {
			bad = append(bad, n)
		}
	}
	if len(bad) > 0 {
		return 0, fmt.Errorf("%w: unknown rbd feature(s) %s (known: %s)", driver.ErrInvalid,
			strings.Join(bad, ", "), strings.Join(KnownFeatures, ", "))
	}
	return uint64(rbd.FeatureSetFromNames(names)), nil
}

func checkSpec(spec Spec, wantSnap bool) error {
	switch {
	case spec.Pool == "" || spec.Image == "":
		return fmt.Errorf("%w: pool and image are required", driver.ErrInvalid)
	case wantSnap && spec.Snap == "":
		return fmt.Errorf("%w: a snapshot name is required", driver.ErrInvalid)
	case !wantSnap && spec.Snap != "":
		return fmt.Errorf("%w: a snapshot name is not allowed here", driver.ErrInvalid)
	}
	return nil
}

// imageCall opens the image (its head, or spec.Snap), runs fn and closes it, all in one bounded
// call.
func imageCall[T any](ctx context.Context, c *Cluster, op string, spec Spec, fn func(*rbd.Image) (T, error)) (T, error) {
	io, err := c.ioctx(ctx, spec.Pool, spec.Namespace)
	if err != nil {
		var zero T
		return zero, err
	}
	return call(ctx, c, op, spec.String(), func() (T, error) {
		img, err := rbd.OpenImage(io, spec.Image, spec.Snap)
		if err != nil {
			var zero T
			return zero, err
		}
		defer img.Close()
		return fn(img)
	}, nil)
}

// withImage is imageCall for functions without a result.
func (c *Cluster) withImage(ctx context.Context, op string, spec Spec, fn func(*rbd.Image) error) error {
	_, err := imageCall(ctx, c, op, spec, func(img *rbd.Image) (struct{}, error) { return struct{}{}, fn(img) })
	return err
}

// Create makes a new image. ErrExists if the name is taken.
func (c *Cluster) Create(ctx context.Context, spec Spec, opts CreateOptions) error {
	if err := checkSpec(spec, false); err != nil {
		return opErr("create", spec.String(), err)
	}
	if opts.Size == 0 {
		return opErr("create", spec.String(), fmt.Errorf("%w: size must be greater than zero", driver.ErrInvalid))
	}
	io, err := c.ioctx(ctx, spec.Pool, spec.Namespace)
	if err != nil {
		return err
	}
	var bits uint64
	if opts.Features != nil {
		if bits, err = ParseFeatures(opts.Features); err != nil {
			return opErr("create", spec.String(), err)
		}
	}
	return c.do(ctx, "create", spec.String(), func() error {
		rio, err := imageOptions(opts, bits)
		if err != nil {
			return err
		}
		defer rio.Destroy()
		return rbd.CreateImage(io, spec.Image, opts.Size, rio)
	}, c.undoIfOK("create", spec.String(), func() error { return rbd.RemoveImage(io, spec.Image) }))
}

// imageOptions builds librbd image options; the caller destroys them.
func imageOptions(opts CreateOptions, features uint64) (*rbd.ImageOptions, error) {
	rio := rbd.NewRbdImageOptions()
	var err error
	if opts.Features != nil {
		err = rio.SetUint64(rbd.ImageOptionFeatures, features)
	}
	if err == nil && opts.DataPool != "" {
		err = rio.SetString(rbd.ImageOptionDataPool, opts.DataPool)
	}
	if err == nil && opts.Order != 0 {
		err = rio.SetUint64(rbd.ImageOptionOrder, uint64(opts.Order))
	}
	if err != nil {
		rio.Destroy()
		return nil, err
	}
	return rio, nil
}

// ImageID returns the image's ID (the suffix of its rbd_header and rbd_data objects) by reading its
// rbd_id object: one read, where an open of the image is several round trips and, in librbd,
// builds a whole copy of the client's configuration (about 5 ms of CPU each, a third of the
// plugin's CPU in a create-mount-unmount-remove cycle before it was avoided). ErrNotFound when
// there is no such image. (Images of format 1, which Ceph has not created since Jewel, have no
// rbd_id object: the plugin does not manage them.)
func (c *Cluster) ImageID(ctx context.Context, spec Spec) (string, error) {
	if err := checkSpec(spec, false); err != nil {
		return "", opErr("image id", spec.String(), err)
	}
	io, err := c.ioctx(ctx, spec.Pool, spec.Namespace)
	if err != nil {
		return "", err
	}
	return call(ctx, c, "image id", spec.String(), func() (string, error) {
		buf := make([]byte, 256)
		n, err := io.Read("rbd_id."+spec.Image, buf, 0)
		if err != nil {
			return "", err
		}
		return decodeImageID(buf[:n])
	}, nil)
}

// decodeImageID decodes the content of an rbd_id object: the ID as Ceph encodes a string, a
// little-endian 32-bit length and the bytes.
func decodeImageID(b []byte) (string, error) {
	if len(b) < 4 {
		return "", fmt.Errorf("rbd_id object of %d bytes: too short", len(b))
	}
	n := binary.LittleEndian.Uint32(b)
	if n == 0 || uint64(n) != uint64(len(b)-4) {
		return "", fmt.Errorf("rbd_id object of %d bytes says its ID has %d", len(b), n)
	}
	return string(b[4:]), nil
}

// Info describes an image.
func (c *Cluster) Info(ctx context.Context, spec Spec) (ImageInfo, error) {
	return imageCall(ctx, c, "info", spec, func(img *rbd.Image) (ImageInfo, error) { return c.readInfo(img, spec) })
}

// Created returns when the image was created (by the cluster's clock).
func (c *Cluster) Created(ctx context.Context, spec Spec) (time.Time, error) {
	return imageCall(ctx, c, "created", spec, func(img *rbd.Image) (time.Time, error) {
		ts, err := img.GetCreateTimestamp()
		if err != nil {
			return time.Time{}, err
		}
		return time.Unix(ts.Sec, ts.Nsec), nil
	})
}

// List returns the names of the images in a pool (and namespace), sorted.
func (c *Cluster) List(ctx context.Context, pool, namespace string) ([]string, error) {
	io, err := c.ioctx(ctx, pool, namespace)
	if err != nil {
		return nil, err
	}
	return call(ctx, c, "list", pool, func() ([]string, error) {
		names, err := listImages(io) // see listDirectory
		sort.Strings(names)
		return names, err
	}, nil)
}

// Resize sets the image's size in bytes (growing or shrinking).
func (c *Cluster) Resize(ctx context.Context, spec Spec, size uint64) error {
	if size == 0 {
		return opErr("resize", spec.String(), fmt.Errorf("%w: size must be greater than zero", driver.ErrInvalid))
	}
	return c.withImage(ctx, "resize", spec, func(img *rbd.Image) error { return img.Resize(size) })
}

// Remove deletes an image. ErrInUse if it has watchers (it is mapped or open somewhere) or
// snapshots; ErrNotFound if it does not exist.
func (c *Cluster) Remove(ctx context.Context, spec Spec) error {
	if err := checkSpec(spec, false); err != nil {
		return opErr("remove", spec.String(), err)
	}
	io, err := c.ioctx(ctx, spec.Pool, spec.Namespace)
	if err != nil {
		return err
	}
	return c.do(ctx, "remove", spec.String(), func() error { return rbd.RemoveImage(io, spec.Image) }, nil)
}

// Rename gives an image another name in its pool. ErrExists if the new name is taken.
func (c *Cluster) Rename(ctx context.Context, spec Spec, newName string) error {
	return c.withImage(ctx, "rename", spec, func(img *rbd.Image) error { return img.Rename(newName) })
}

// Trash moves an image to the pool's trash, where it can be restored until delay has passed
// (`rbd trash ls`, `rbd trash restore`).
func (c *Cluster) Trash(ctx context.Context, spec Spec, delay time.Duration) error {
	return c.withImage(ctx, "trash", spec, func(img *rbd.Image) error { return img.Trash(delay) })
}

// TrashList returns the original names of the images in the pool's trash.
func (c *Cluster) TrashList(ctx context.Context, pool, namespace string) ([]string, error) {
	io, err := c.ioctx(ctx, pool, namespace)
	if err != nil {
		return nil, err
	}
	return call(ctx, c, "trash ls", pool, func() ([]string, error) {
		entries, err := rbd.GetTrashList(io)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name)
		}
		return names, err
	}, nil)
}

// SetMeta sets image metadata key=value.
func (c *Cluster) SetMeta(ctx context.Context, spec Spec, key, value string) error {
	return c.SetMetas(ctx, spec, map[string]string{key: value})
}

// SetMetas sets several metadata keys with one open of the image (each open costs round trips
// and, in librbd, a copy of the whole client configuration). Keys are set in sorted order; on an
// error, the keys before the failing one are set.
func (c *Cluster) SetMetas(ctx context.Context, spec Spec, kv map[string]string) error {
	keys := slices.Sorted(maps.Keys(kv))
	return c.withImage(ctx, "set metadata", spec, func(img *rbd.Image) error {
		for _, k := range keys {
			if err := img.SetMetadata(k, kv[k]); err != nil {
				return fmt.Errorf("key %s: %w", k, err)
			}
		}
		return nil
	})
}

// GetMeta reads one metadata key; ErrNotFound when it is not set.
func (c *Cluster) GetMeta(ctx context.Context, spec Spec, key string) (string, error) {
	return imageCall(ctx, c, "get metadata", spec, func(img *rbd.Image) (string, error) { return img.GetMetadata(key) })
}

// ListMeta returns all metadata of an image.
func (c *Cluster) ListMeta(ctx context.Context, spec Spec) (map[string]string, error) {
	return imageCall(ctx, c, "list metadata", spec, func(img *rbd.Image) (map[string]string, error) { return img.ListMetadata() })
}

// RemoveMeta deletes a metadata key; removing a key that is not set succeeds.
func (c *Cluster) RemoveMeta(ctx context.Context, spec Spec, key string) error {
	err := c.withImage(ctx, "remove metadata", spec, func(img *rbd.Image) error { return img.RemoveMetadata(key) })
	if errors.Is(err, driver.ErrNotFound) {
		if _, ierr := c.Info(ctx, spec); ierr == nil {
			return nil
		}
	}
	return err
}

// Watcher is a client watching an image's header: a host that has it mapped or open.
type Watcher struct {
	Addr   string // ip:port/nonce
	ID     int64  // the client's global id (client.<ID>)
	Cookie uint64
}

// Watchers lists the clients that have the image open (mapped on a host, or open in a process):
// the watches on its header object, as librbd lists them, read without opening the image (the
// image's ID, one read, then the header's watchers, one read; an open is about fourteen).
func (c *Cluster) Watchers(ctx context.Context, spec Spec) ([]Watcher, error) {
	return c.watchersOf(ctx, spec, "")
}

// watchersOf is Watchers of image id (read from the name when empty). The watches are on the
// image's header, whatever snapshot spec names.
func (c *Cluster) watchersOf(ctx context.Context, spec Spec, id string) ([]Watcher, error) {
	spec.Snap = ""
	return headerCall(ctx, c, "list watchers", spec, id, func(io *rados.IOContext, oid string) ([]Watcher, error) {
		return compoundRead(io, oid, nil, true)
	})
}

// OtherWatchers is Watchers without this connection's own (an image it has open itself).
func (c *Cluster) OtherWatchers(ctx context.Context, spec Spec) ([]Watcher, error) {
	return c.otherWatchersOf(ctx, spec, "")
}

// otherWatchersOf is OtherWatchers of image id (read from the name when empty).
func (c *Cluster) otherWatchersOf(ctx context.Context, spec Spec, id string) ([]Watcher, error) {
	ws, err := c.watchersOf(ctx, spec, id)
	if err != nil {
		return nil, err
	}
	self := int64(c.conn.GetInstanceID())
	out := ws[:0]
	for _, w := range ws {
		if w.ID != self {
			out = append(out, w)
		}
	}
	return out, nil
}
