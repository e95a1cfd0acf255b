package rbd

import (
	"context"
	"errors"
	"testing"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

func TestCapacityIsThePoolsMaxAvail(t *testing.T) {
	f, p := provFixture()
	f.avail = map[string]uint64{p.cfg.Pool: 7 << 30, "fast": 3 << 30}
	ctx := context.Background()
	if n, err := p.Capacity(ctx, nil); err != nil || n != 7<<30 {
		t.Fatalf("Capacity(RBD_POOL) = %d, %v; want %d", n, err, uint64(7<<30))
	}
	if n, err := p.Capacity(ctx, map[string]string{OptPool: "fast"}); err != nil || n != 3<<30 {
		t.Fatalf("Capacity(pool=fast) = %d, %v; want %d", n, err, uint64(3<<30))
	}
	if _, err := p.Capacity(ctx, map[string]string{OptPool: "nope"}); !errors.Is(err, driver.ErrInvalid) {
		t.Fatalf("Capacity of a missing pool = %v, want ErrInvalid naming it", err)
	}
	if _, err := p.Capacity(ctx, map[string]string{OptPool: "../x"}); !errors.Is(err, driver.ErrInvalid) {
		t.Fatalf("Capacity of a bad pool name = %v, want ErrInvalid", err)
	}
	f.fail["PoolAvail"] = errors.New("mon down")
	if _, err := p.Capacity(ctx, nil); err == nil || errors.Is(err, driver.ErrInvalid) {
		t.Fatalf("Capacity with Ceph failing = %v, want the failure passed on", err)
	}
}
