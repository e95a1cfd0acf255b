//go:build integration

package rbd_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// PoolAvail as the least-privilege user answers what `ceph df` tells the admin (max_avail moves
// with other writers: within 5%), and an unknown pool is ErrNotFound.
func TestPoolAvail(t *testing.T) {
	e := lab(t)
	c := e.connect(t)
	got, err := c.PoolAvail(ctxFor(t, 20*time.Second), e.pool)
	if err != nil {
		t.Fatal(err)
	}
	var df struct {
		Pools []struct {
			Name  string
			Stats struct {
				MaxAvail uint64 `json:"max_avail"`
			}
		}
	}
	if err := json.Unmarshal([]byte(e.ceph(t, "df", "-f", "json")), &df); err != nil {
		t.Fatal(err)
	}
	var want uint64
	for _, p := range df.Pools {
		if p.Name == e.pool {
			want = p.Stats.MaxAvail
		}
	}
	if want == 0 || got == 0 || got < want-want/20 || got > want+want/20 {
		t.Errorf("PoolAvail(%s) = %d; ceph df says %d", e.pool, got, want)
	}
	if _, err := c.PoolAvail(ctxFor(t, 20*time.Second), "no-such-pool-cdp"); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("unknown pool: %v, want ErrNotFound", err)
	}
}
