package rbd

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ceph/go-ceph/rados"
	"github.com/ceph/go-ceph/rbd"
)

// Description is what one read-only open of an image tells: its info, its metadata, the other
// clients watching it and its host locks.
type Description struct {
	Info     ImageInfo
	Meta     map[string]string
	Watchers []Watcher // without this connection's own
	Lockers  []Locker
}

// Describe reads everything Get, Attach and Remove ask about an image without opening it: the
// image's ID from its rbd_id object (one read; see ImageID), then its header in one compound
// read (see readHeader: size, features, layout, parent, metadata, host locks and watchers, all
// exact and from one state of the header). A clone's parent costs two more reads the first time
// it is seen (its image and snapshot names; see parentName). An image open, as before, was about
// fourteen OSD requests and several ms of librbd's CPU.
func (c *Cluster) Describe(ctx context.Context, spec Spec) (Description, error) {
	id, err := c.ImageID(ctx, spec)
	if err != nil {
		return Description{}, err
	}
	io, err := c.ioctx(ctx, spec.Pool, spec.Namespace)
	if err != nil {
		return Description{}, err
	}
	h, err := call(ctx, c, "describe", spec.String(), func() (header, error) { return readHeader(io, id, true) }, nil)
	if err != nil {
		return Description{}, err
	}
	d := Description{Info: c.infoOf(spec, id, h), Meta: h.meta, Lockers: h.lockers}
	self := int64(c.conn.GetInstanceID())
	for _, w := range h.watchers {
		if w.ID != self { // this connection's own watch: an image it has open itself
			d.Watchers = append(d.Watchers, w)
		}
	}
	if h.parent != nil {
		if d.Info.Parent, err = c.parentName(ctx, *h.parent); err != nil {
			return d, err
		}
	}
	return d, nil
}

// infoOf is the ImageInfo of a header read (the parent's name is left to parentName).
func (c *Cluster) infoOf(spec Spec, id string, h header) ImageInfo {
	fs := rbd.FeatureSet(h.features)
	info := ImageInfo{Spec: spec, ID: id, Size: h.size, Features: fs.Names(), DataPrefix: h.objectPrefix,
		ObjectSize: 1 << h.order, StripeUnit: h.stripeUnit, StripeCount: h.stripeCount}
	sort.Strings(info.Features)
	if h.dataPoolID >= 0 {
		// The client's OSD map has the pool's name: no request. A pool removed since leaves
		// the name unknown; its id is shown instead.
		name, err := c.conn.GetPoolByID(h.dataPoolID)
		if err != nil || name == "" {
			name = fmt.Sprintf("(pool id %d)", h.dataPoolID)
		}
		info.DataPool = name
	}
	return info
}

// parentName names a clone's parent snapshot, pool/image@snap (pool/namespace/image@snap in a
// namespace): the pool's name from the client's OSD map, the image's from the parent pool's
// rbd_directory (rbd.dir_get_name) and the snapshot's from the parent's header
// (rbd.get_snapshot_name): two reads, remembered (ids are never reused; a parent renamed since
// keeps its old name here until the plugin restarts).
func (c *Cluster) parentName(ctx context.Context, p parentSpec) (string, error) {
	key := fmt.Sprintf("%d/%s/%s@%d", p.poolID, p.namespace, p.imageID, p.snapID)
	if v, ok := parentNames.Load(key); ok {
		return v.(string), nil
	}
	pool, err := c.conn.GetPoolByID(p.poolID)
	if err != nil {
		return "", opErr("parent", key, err)
	}
	io, err := c.ioctx(ctx, pool, p.namespace)
	if err != nil {
		return "", err
	}
	name, err := call(ctx, c, "parent", key, func() (string, error) {
		image, err := execString(io, "rbd_directory", "dir_get_name", cephEnc(nil).str(p.imageID))
		if errors.Is(err, rados.ErrNotFound) { // in the trash (a clone's parent may be): its id
			image, err = "(image id "+p.imageID+")", nil
		}
		if err != nil {
			return "", err
		}
		snap, err := execString(io, "rbd_header."+p.imageID, "get_snapshot_name", cephEnc(nil).u64(p.snapID))
		if err != nil {
			return "", err
		}
		return Spec{Pool: pool, Namespace: p.namespace, Image: image, Snap: snap}.String(), nil
	}, nil)
	if err != nil {
		return "", err
	}
	if parentNameCount.Add(1) > 4096 { // bounded: forget them all now and then
		parentNames.Clear()
		parentNameCount.Store(0)
	}
	parentNames.Store(key, name)
	return name, nil
}

// parentNames remembers parent names by parentSpec (see parentName).
var (
	parentNames     sync.Map
	parentNameCount atomic.Int64
)

// execString runs rbd class method on object oid and decodes the string it answers.
func execString(io *rados.IOContext, oid, method string, in []byte) (string, error) {
	op := rados.CreateReadOp()
	defer op.Release()
	step := op.Exec("rbd", method, in)
	if err := op.Operate(io, oid, rados.OperationNoFlag); err != nil {
		return "", err
	}
	out, err := step.Bytes()
	if err != nil {
		return "", err
	}
	d := &cephDec{b: out}
	s := d.str()
	return s, d.err
}

// readInfo reads an open image's size, features, id, data pool and parent.
func (c *Cluster) readInfo(img *rbd.Image, spec Spec) (ImageInfo, error) {
	info := ImageInfo{Spec: spec}
	var err error
	if info.Size, err = img.GetSize(); err != nil {
		return info, err
	}
	feats, err := img.GetFeatures()
	if err != nil {
		return info, err
	}
	fs := rbd.FeatureSet(feats)
	info.Features = fs.Names()
	sort.Strings(info.Features)
	if info.ID, err = img.GetId(); err != nil {
		return info, err
	}
	// Read from the header the open loaded: no round trip.
	st, err := img.Stat()
	if err != nil {
		return info, err
	}
	info.ObjectSize = st.Obj_size
	info.DataPrefix = dataPrefix(st.Block_name_prefix, info.ID, feats&rbd.FeatureDataPool != 0, func() (int64, error) {
		return c.conn.GetPoolByName(spec.Pool)
	})
	if info.StripeUnit, err = img.GetStripeUnit(); err != nil {
		return info, err
	}
	if info.StripeCount, err = img.GetStripeCount(); err != nil {
		return info, err
	}
	if feats&rbd.FeatureDataPool != 0 {
		id, err := img.GetDataPoolID()
		if err != nil {
			return info, err
		}
		if info.DataPool, err = c.conn.GetPoolByID(id); err != nil {
			return info, err
		}
	}
	parent, err := img.GetParent()
	switch {
	case errors.Is(err, rbd.ErrNotFound):
	case err != nil:
		return info, err
	default:
		info.Parent = fmt.Sprintf("%s/%s@%s", parent.Image.PoolName, parent.Image.ImageName, parent.Snap.SnapName)
	}
	return info, nil
}

// listLockers lists the host locks on an image header object.
func listLockers(io *rados.IOContext, oid string) ([]Locker, error) {
	info, err := io.ListLockers(oid, HostLockName)
	if errors.Is(err, rados.ErrNotFound) { // no such lock yet
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]Locker, 0, len(info.Clients))
	for i := range info.Clients {
		l := Locker{Client: info.Clients[i], Shared: !info.Exclusive}
		if i < len(info.Cookies) {
			l.Cookie = info.Cookies[i]
		}
		if i < len(info.Addrs) {
			l.Addr = normalizeAddr(info.Addrs[i])
		}
		out = append(out, l)
	}
	return out, nil
}

// dataPrefix returns the name prefix of the image's data objects: "rbd_data.<id>", or with a data
// pool "rbd_data.<image pool id>.<id>". librbd's stat truncates it to 23 characters (a data pool's
// prefix often has 24), so it is built here and checked against what stat says; "" when the two
// disagree (the layout is then unknown, and nothing relies on it).
func dataPrefix(statPrefix, id string, dataPool bool, poolID func() (int64, error)) string {
	want := "rbd_data." + id
	if dataPool {
		pid, err := poolID()
		if err != nil {
			return ""
		}
		want = fmt.Sprintf("rbd_data.%d.%s", pid, id)
	}
	if statPrefix == "" || !strings.HasPrefix(want, statPrefix) {
		return ""
	}
	return want
}
