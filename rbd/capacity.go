package rbd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// PoolAvail is how many bytes can still be written to a pool: `ceph df`'s max_avail, which
// accounts for the pool's replication or erasure coding and the fullest OSD its rule uses. An
// unknown pool is ErrNotFound. (`profile rbd` users may ask: it is a monitor read.)
func (c *Cluster) PoolAvail(ctx context.Context, pool string) (uint64, error) {
	out, err := c.monCommand(ctx, "df", map[string]any{"prefix": "df"})
	if err != nil {
		return 0, err
	}
	return poolAvail(out, pool)
}

// poolAvail reads a pool's max_avail from `ceph df` JSON output.
func poolAvail(out []byte, pool string) (uint64, error) {
	var df struct {
		Pools []struct {
			Name  string `json:"name"`
			Stats struct {
				MaxAvail *uint64 `json:"max_avail"`
			} `json:"stats"`
		} `json:"pools"`
	}
	if err := json.Unmarshal(out, &df); err != nil {
		return 0, opErr("df", "mon", fmt.Errorf("unexpected output: %w", err))
	}
	for _, p := range df.Pools {
		if p.Name == pool {
			if p.Stats.MaxAvail == nil {
				return 0, opErr("df", "pool "+pool, fmt.Errorf("no max_avail in the output"))
			}
			return *p.Stats.MaxAvail, nil
		}
	}
	return 0, fmt.Errorf("rbd df: %w: no pool %q", driver.ErrNotFound, pool)
}

// Capacity is how many bytes a new volume can have in the pool its parameters (the -o options)
// name, RBD_POOL by default: the pool's max_avail. A pool quota is not taken into account.
func (p *Provisioner) Capacity(ctx context.Context, params map[string]string) (uint64, error) {
	pool := p.cfg.Pool
	if v, ok := params[OptPool]; ok {
		if !validPoolName(v) {
			return 0, fmt.Errorf("%w: pool %q is not a valid pool name", driver.ErrInvalid, v)
		}
		pool = v
	}
	n, err := p.c.PoolAvail(ctx, pool)
	if errors.Is(err, driver.ErrNotFound) {
		return 0, fmt.Errorf("%w: pool %s does not exist (from the pool option, or RBD_POOL)", driver.ErrInvalid, pool)
	}
	if err != nil {
		return 0, fmt.Errorf("capacity of pool %s: %w", pool, err)
	}
	return n, nil
}
