package rbd

import (
	"context"

	librbd "github.com/ceph/go-ceph/rbd"
)

// SetDirPage sets how many names one request of List reads (tests page through a few images),
// and returns what puts it back.
func SetDirPage(n uint64) (restore func()) {
	old := dirPage
	dirPage = n
	return func() { dirPage = old }
}

// LibrbdOtherWatchers is what librbd lists as the image's watchers after an open, without this
// connection's own watch (the open's): what Watchers, which reads the header without an open,
// must match.
func (c *Cluster) LibrbdOtherWatchers(ctx context.Context, spec Spec) ([]Watcher, error) {
	ws, err := imageCall(ctx, c, "list watchers", spec, func(img *librbd.Image) ([]librbd.ImageWatcher, error) {
		return img.ListWatchers()
	})
	if err != nil {
		return nil, err
	}
	self := int64(c.conn.GetInstanceID())
	var out []Watcher
	for _, w := range ws {
		if w.Id != self {
			out = append(out, Watcher{Addr: normalizeAddr(w.Addr), ID: w.Id, Cookie: w.Cookie})
		}
	}
	return out, nil
}
