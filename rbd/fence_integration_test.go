//go:build integration

package rbd_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/rbd"
)

// BreakLock returns only once the OSDs enforce the fence: a fenced client that tries to take the
// exclusive lock back and write right after it returned is refused, even when the OSD had not
// yet received the OSD map with its blocklist entry when the monitor answered. That lag is short
// and rare (without the barrier in BreakLock, about 3 fenced clients in 100 wrote here), so
// lanes in parallel fence many clients, one after the other.
func TestFencedClientCannotWriteOnceBreakLockReturned(t *testing.T) {
	e := lab(t)
	const lanes, rounds = 8, 8
	var wg sync.WaitGroup
	var wrote, tried atomic.Int32
	for lane := range lanes {
		fencer := e.connect(t)
		spec := rbd.Spec{Pool: e.pool, Image: uniqueName("fence" + strconv.Itoa(lane))}
		if err := fencer.Create(ctxFor(t, 30*time.Second), spec, rbd.CreateOptions{Size: 16 * mib, Features: []string{"layering", "exclusive-lock"}}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = fencer.Remove(ctxFor(t, 30*time.Second), spec) })
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range rounds {
				addr, late, err := fenceAndWriteBack(ctxFor(t, 60*time.Second), e, fencer, spec)
				if err != nil {
					t.Errorf("lane %d round %d: %v", lane, round, err)
					return
				}
				tried.Add(1)
				if late {
					wrote.Add(1)
					t.Errorf("lane %d round %d: fenced client %s took the lock back and wrote after BreakLock returned", lane, round, addr)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d of %d fenced clients wrote after BreakLock returned", wrote.Load(), tried.Load())
	if tried.Load() != lanes*rounds {
		t.Errorf("%d fences tried, want %d", tried.Load(), lanes*rounds)
	}
}

// fenceAndWriteBack connects an old holder that writes, lets the exclusive lock go and closes
// the image (only the fence can stop it from taking the lock back), has fencer BreakLock it, and
// then has it take the lock and write at once. late says that write succeeded.
func fenceAndWriteBack(ctx context.Context, e labEnv, fencer *rbd.Cluster, spec rbd.Spec) (addr string, late bool, err error) {
	old, err := rbd.Connect(ctx, rbd.Config{ConfPath: e.conf, User: e.user, Keyring: e.keyring, OpTimeout: 10 * time.Second})
	if err != nil {
		return "", false, err
	}
	defer old.Close()
	if addr, err = old.ClientAddr(); err != nil {
		return "", false, err
	}
	held, err := old.AcquireLock(ctx, spec)
	if err != nil {
		return addr, false, err
	}
	if err := errors.Join(held.Write(ctx, []byte("old"), 0), held.Release(ctx)); err != nil {
		return addr, false, err
	}
	if _, err := fencer.BreakLock(ctx, spec, "", addr); err != nil {
		return addr, false, err
	}
	l, err := old.AcquireLock(ctx, spec)
	if err != nil {
		return addr, false, nil // refused: fenced
	}
	werr := l.Write(ctx, []byte("late"), 0)
	_ = l.Release(ctx)
	return addr, werr == nil, nil
}
