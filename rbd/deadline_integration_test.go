//go:build integration

package rbd_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/rbd"
)

// Every operation returns by its context's deadline when Ceph does not answer, with an error that
// says so (driver.ErrTimeout), instead of hanging.
func TestOperationsHonourDeadlineWhenPoolBlocks(t *testing.T) {
	e := lab(t)
	// librados' own timeout is kept short so that the calls abandoned at the deadline end soon.
	c := e.connectWith(t, 3*time.Second)
	pool := blockedPool(t, e)
	spec := rbd.Spec{Pool: pool, Image: "img"}
	snap := rbd.Spec{Pool: pool, Image: "img", Snap: "s"}
	child := rbd.Spec{Pool: pool, Image: "child"}
	ops := map[string]func(context.Context) error{
		"create":      func(ctx context.Context) error { return c.Create(ctx, spec, rbd.CreateOptions{Size: mib}) },
		"info":        func(ctx context.Context) error { _, err := c.Info(ctx, spec); return err },
		"list":        func(ctx context.Context) error { _, err := c.List(ctx, pool, ""); return err },
		"resize":      func(ctx context.Context) error { return c.Resize(ctx, spec, 2*mib) },
		"remove":      func(ctx context.Context) error { return c.Remove(ctx, spec) },
		"trash":       func(ctx context.Context) error { return c.Trash(ctx, spec, 0) },
		"trash ls":    func(ctx context.Context) error { _, err := c.TrashList(ctx, pool, ""); return err },
		"set meta":    func(ctx context.Context) error { return c.SetMeta(ctx, spec, "k", "v") },
		"get meta":    func(ctx context.Context) error { _, err := c.GetMeta(ctx, spec, "k"); return err },
		"list meta":   func(ctx context.Context) error { _, err := c.ListMeta(ctx, spec); return err },
		"remove meta": func(ctx context.Context) error { return c.RemoveMeta(ctx, spec, "k") },
		"snap create": func(ctx context.Context) error { return c.CreateSnap(ctx, snap) },
		"snap ls":     func(ctx context.Context) error { _, err := c.ListSnaps(ctx, spec); return err },
		"protect":     func(ctx context.Context) error { return c.ProtectSnap(ctx, snap) },
		"unprotect":   func(ctx context.Context) error { return c.UnprotectSnap(ctx, snap) },
		"snap rm":     func(ctx context.Context) error { return c.RemoveSnap(ctx, snap) },
		"clone":       func(ctx context.Context) error { return c.Clone(ctx, snap, child, rbd.CreateOptions{}) },
		"flatten":     func(ctx context.Context) error { return c.Flatten(ctx, spec) },
		"watchers":    func(ctx context.Context) error { _, err := c.Watchers(ctx, spec); return err },
		"lock owners": func(ctx context.Context) error { _, err := c.LockOwners(ctx, spec); return err },
		"lock acquire": func(ctx context.Context) error {
			l, err := c.AcquireLock(ctx, spec)
			if err == nil {
				_ = l.Release(ctx)
			}
			return err
		},
		"break lock": func(ctx context.Context) error { _, err := c.BreakLock(ctx, spec, ""); return err },
	}
	const deadline = 1500 * time.Millisecond
	const slack = time.Second // scheduling on a loaded 2-core CI machine
	// All operations run at once (each waits out its own deadline), then each is checked.
	type result struct {
		err  error
		took time.Duration
	}
	results := make(map[string]result, len(ops))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, op := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			start := time.Now()
			err := op(ctx)
			mu.Lock()
			results[name] = result{err, time.Since(start)}
			mu.Unlock()
		}()
	}
	wg.Wait()
	for name, r := range results {
		t.Run(name, func(t *testing.T) {
			if r.took > deadline+slack {
				t.Errorf("returned after %v, deadline was %v", r.took, deadline)
			}
			if !errors.Is(r.err, driver.ErrTimeout) {
				t.Errorf("err = %v, want ErrTimeout", r.err)
			}
		})
	}
}

// Connecting to monitors that do not answer gives up at the deadline.
func TestConnectHonoursDeadline(t *testing.T) {
	e := lab(t)
	conf := filepath.Join(t.TempDir(), "dead.conf")
	// 127.0.0.1:9 (discard) has no monitor: nothing answers there.
	if err := os.WriteFile(conf, []byte("[global]\nmon host = 127.0.0.1:9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err := rbd.Connect(ctx, rbd.Config{ConfPath: conf, User: e.user, Keyring: e.keyring, OpTimeout: 30 * time.Second})
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("connect returned after %v, deadline 2s", took)
	}
	if !errors.Is(err, driver.ErrTimeout) {
		t.Errorf("err = %v, want ErrTimeout", err)
	}
}
