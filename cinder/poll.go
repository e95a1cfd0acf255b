package cinder

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// errPollEnded is poll's answer when ctx ended before the volume settled.
var errPollEnded = errors.New("volume not settled when the context ended")

// poll reads volume id (v nil when the read failed) until settled says it is done or fails,
// waiting between reads as backoff says; when ctx ends first, it returns the last volume read and
// errPollEnded.
func (p *Provisioner) poll(ctx context.Context, c *gophercloud.ServiceClient, id string, settled func(v *volumes.Volume, err error) (bool, error)) (*volumes.Volume, error) {
	next := p.backoff()
	for {
		v, err := volumes.Get(ctx, c, id).Extract()
		if done, err := settled(v, err); done || err != nil {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, errPollEnded
		case <-p.after(next()):
		}
	}
}

// waitStatus polls the volume until it reaches want (or an error status, or ctx's end).
func (p *Provisioner) waitStatus(ctx context.Context, c *gophercloud.ServiceClient, id, want string) (*volumes.Volume, error) {
	v, err := p.poll(ctx, c, id, func(v *volumes.Volume, err error) (bool, error) {
		switch {
		case err != nil:
			return false, apiError("get", id, err)
		case v.Status == want:
			return true, nil
		case strings.HasPrefix(v.Status, "error"):
			return false, fmt.Errorf("volume %s went to status %q (see the cinder-volume log)", id, v.Status)
		}
		return false, nil
	})
	if errors.Is(err, errPollEnded) {
		return v, fmt.Errorf("%w: volume %s still %q, not %q, at the deadline", driver.ErrTimeout, id, v.Status, want)
	}
	return v, err
}

// waitGone polls a volume being deleted until it is gone (deletion is asynchronous), or its
// deletion failed, or ctx ends.
func (p *Provisioner) waitGone(ctx context.Context, c *gophercloud.ServiceClient, name, id string) error {
	v, err := p.poll(ctx, c, id, func(v *volumes.Volume, err error) (bool, error) {
		switch {
		case gophercloud.ResponseCodeIs(err, http.StatusNotFound):
			return true, nil
		case err != nil:
			return false, apiError("get", name, err)
		case v.Status == "error_deleting":
			return false, fmt.Errorf("cinder could not delete volume %s (%s): status error_deleting (see the cinder-volume log)", name, id)
		}
		return false, nil
	})
	if errors.Is(err, errPollEnded) {
		return fmt.Errorf("%w: volume %s (%s) still %q at the deadline", driver.ErrTimeout, name, id, v.Status)
	}
	return err
}

// backoff returns the waits between status polls: 50 ms for the first second (Cinder's RBD
// backend makes a volume available in a few hundred milliseconds: a fixed 500 ms poll made Create
// take twice as long as Cinder itself, and doubling from 50 ms still overshot by ~100 ms at p50,
// measured by cmd/cdp-bench), then doubling up to cfg.Poll.
func (p *Provisioner) backoff() func() time.Duration {
	d := min(50*time.Millisecond, p.cfg.Poll)
	n := 0
	return func() time.Duration {
		w := d
		if n++; n >= 20 {
			d = min(2*d, p.cfg.Poll)
		}
		return w
	}
}
