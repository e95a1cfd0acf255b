package rbd

import (
	"context"
	"time"
)

// ServerTime writes a small object in pool, reads back the modification time the OSD gave it,
// and removes it: the cluster's clock, as seen by this client, for an operator's check of clock
// skew (cephx tickets and lock expiries assume clocks within seconds of each other). name should
// identify the asker (an object of that name is overwritten and removed). Round trip is the
// time the write and stat took, within which the server's time lies.
func (c *Cluster) ServerTime(ctx context.Context, pool, name string) (server time.Time, roundTrip time.Duration, err error) {
	io, err := c.ioctx(ctx, pool, "")
	if err != nil {
		return time.Time{}, 0, err
	}
	type answer struct {
		t  time.Time
		rt time.Duration
	}
	a, err := call(ctx, c, "clock check", pool+"/"+name, func() (answer, error) {
		start := time.Now()
		if err := io.WriteFull(name, []byte("ceph-docker-plugin clock check\n")); err != nil {
			return answer{}, err
		}
		st, err := io.Stat(name)
		rt := time.Since(start)
		_ = io.Delete(name)
		return answer{st.ModTime, rt}, err
	}, nil)
	return a.t, a.rt, err
}
