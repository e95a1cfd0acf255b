package rbd

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ceph/go-ceph/rados"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// fakeOpens scripts pool opens: a pool in block waits until its channel is closed; others open
// at once. It counts the opens per pool.
type fakeOpens struct {
	mu    sync.Mutex
	block map[string]chan struct{}
	calls map[string]int
}

func (f *fakeOpens) open(pool string) (*rados.IOContext, error) {
	f.mu.Lock()
	f.calls[pool]++
	ch := f.block[pool]
	f.mu.Unlock()
	if ch != nil {
		<-ch
	}
	if pool == "missing" {
		return nil, rados.ErrNotFound
	}
	return &rados.IOContext{}, nil
}

func (f *fakeOpens) count(pool string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[pool]
}

// A pool whose open waits on the monitors (missing from the client's OSD map) holds up neither
// the calls on other pools nor the cluster's mutex; its callers get a timeout at their deadline;
// the open, once it completes, serves the next call.
func TestIOContextOpenIsBoundedAndHoldsNothingUp(t *testing.T) {
	release := make(chan struct{})
	f := &fakeOpens{block: map[string]chan struct{}{"new": release}, calls: map[string]int{}}
	c := newCluster(Config{User: "docker", OpTimeout: time.Second}, nil)
	c.openIOContext = f.open

	const deadline = 200 * time.Millisecond
	var wg sync.WaitGroup
	var timeouts atomic.Int32
	for range 3 { // three callers of the new pool: one open
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			start := time.Now()
			_, err := c.ioctx(ctx, "new", "")
			if took := time.Since(start); took > deadline+500*time.Millisecond {
				t.Errorf("ioctx of a pool whose open hangs returned after %v (deadline %v)", took, deadline)
			}
			if errors.Is(err, driver.ErrTimeout) {
				timeouts.Add(1)
			} else {
				t.Errorf("ioctx of a pool whose open hangs = %v, want ErrTimeout", err)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond) // the opens of "new" are waiting now
	// Meanwhile: the mutex is free, and another pool opens at once.
	if !c.mu.TryLock() {
		t.Fatal("the cluster mutex is held while a pool open waits")
	}
	c.mu.Unlock()
	start := time.Now()
	io, err := c.ioctx(context.Background(), "volumes", "")
	if err != nil || io == nil || time.Since(start) > 100*time.Millisecond {
		t.Fatalf("ioctx of another pool while one open hangs = %v, %v after %v", io, err, time.Since(start))
	}
	if err := c.do(context.Background(), "probe", "volumes", func() error { return nil }, nil); err != nil {
		t.Fatalf("a call while a pool open hangs: %v", err)
	}
	wg.Wait()
	if timeouts.Load() != 3 || f.count("new") != 1 {
		t.Fatalf("%d timeouts, %d opens of the new pool; want 3 callers timed out on one open", timeouts.Load(), f.count("new"))
	}

	// The monitors answer: the abandoned open completes and is kept.
	close(release)
	io, err = c.ioctx(context.Background(), "new", "")
	if err != nil || io == nil {
		t.Fatalf("ioctx once the open completed = %v, %v", io, err)
	}
	if again, _ := c.ioctx(context.Background(), "new", ""); again != io || f.count("new") != 1 {
		t.Fatalf("the completed open is not reused: %d opens", f.count("new"))
	}
	c.inflight.Wait() // nothing left running
}

// A failed open is not cached, and says which pool and what to check.
func TestIOContextOpenErrorNamesThePool(t *testing.T) {
	f := &fakeOpens{calls: map[string]int{}}
	c := newCluster(Config{User: "docker"}, nil)
	c.openIOContext = f.open
	for i := 1; i <= 2; i++ {
		_, err := c.ioctx(context.Background(), "missing", "")
		if !errors.Is(err, driver.ErrNotFound) || !strings.Contains(err.Error(), `pool "missing"`) {
			t.Fatalf("open of a missing pool = %v, want ErrNotFound naming it", err)
		}
		if f.count("missing") != i {
			t.Fatalf("open %d: %d opens; a failure must not be cached", i, f.count("missing"))
		}
	}
}
