package driver

import (
	"context"
	"fmt"
	"sync"
)

// volumeLocks serializes calls on one volume while letting different volumes proceed in
// parallel. A second caller on a volume waits (Docker does not retry) until the first is done or
// its own deadline passes. The map's mutex is held only to find the lock, never across I/O.
type volumeLocks struct {
	mu sync.Mutex
	m  map[string]*volumeLock
}

type volumeLock struct {
	ch   chan struct{} // holds a token while locked
	refs int           // callers holding or waiting
}

// lock takes the volume's lock, waiting at most until ctx ends.
func (l *volumeLocks) lock(ctx context.Context, name string) (unlock func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: volume %s: the request's deadline passed before it started: %w", ErrTimeout, name, err)
	}
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*volumeLock{}
	}
	vl := l.m[name]
	if vl == nil {
		vl = &volumeLock{ch: make(chan struct{}, 1)}
		l.m[name] = vl
	}
	vl.refs++
	l.mu.Unlock()

	release := func() {
		l.mu.Lock()
		vl.refs--
		if vl.refs == 0 {
			delete(l.m, name)
		}
		l.mu.Unlock()
	}
	select {
	case vl.ch <- struct{}{}:
		return func() { <-vl.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, fmt.Errorf("%w: volume %s is busy with another request that did not finish in time: %w", ErrTimeout, name, ctx.Err())
	}
}

// size is the number of volumes with a holder or waiter (tests).
func (l *volumeLocks) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}
