package rbd

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

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

// Describe opens the image once, read-only, and reads everything Get and Attach ask about. Each
// open of an image is several round trips to the cluster; asking each question with its own open
// (Info, ListMeta, Lockers, OtherWatchers) made a first Mount open the image ten times.
func (c *Cluster) Describe(ctx context.Context, spec Spec) (Description, error) {
	io, err := c.ioctx(ctx, spec.Pool, spec.Namespace)
	if err != nil {
		return Description{}, err
	}
	self := int64(c.conn.GetInstanceID())
	return call(ctx, c, "describe", spec.String(), func() (Description, error) {
		img, err := rbd.OpenImageReadOnly(io, spec.Image, "")
		if err != nil {
			return Description{}, err
		}
		defer img.Close()
		var d Description
		if d.Info, err = c.readInfo(img, spec); err != nil {
			return d, err
		}
		if d.Meta, err = img.ListMetadata(); err != nil {
			return d, err
		}
		ws, err := img.ListWatchers()
		if err != nil {
			return d, err
		}
		for _, w := range ws {
			if w.Id != self {
				d.Watchers = append(d.Watchers, Watcher{Addr: normalizeAddr(w.Addr), ID: w.Id, Cookie: w.Cookie})
			}
		}
		d.Lockers, err = listLockers(io, "rbd_header."+d.Info.ID)
		return d, err
	}, nil)
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
		l := Locker{Client: info.Clients[i]}
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
