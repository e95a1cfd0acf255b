package fuse

import (
	"context"
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestRetryBusy(t *testing.T) {
	waits := []time.Duration{time.Millisecond, time.Millisecond, time.Millisecond}
	t.Run("busy for a moment", func(t *testing.T) {
		calls := 0
		err := retryBusy(context.Background(), waits, func() error {
			if calls++; calls < 3 {
				return unix.EBUSY
			}
			return nil
		})
		if err != nil || calls != 3 {
			t.Fatalf("err %v after %d calls; want nil after 3", err, calls)
		}
	})
	t.Run("busy for good", func(t *testing.T) {
		calls := 0
		err := retryBusy(context.Background(), waits, func() error { calls++; return unix.EBUSY })
		if !errors.Is(err, unix.EBUSY) || calls != len(waits)+1 {
			t.Fatalf("err %v after %d calls; want EBUSY after %d", err, calls, len(waits)+1)
		}
	})
	t.Run("other errors at once", func(t *testing.T) {
		calls := 0
		err := retryBusy(context.Background(), waits, func() error { calls++; return unix.ENXIO })
		if !errors.Is(err, unix.ENXIO) || calls != 1 {
			t.Fatalf("err %v after %d calls; want ENXIO after 1", err, calls)
		}
	})
	t.Run("context ends the pauses", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		calls := 0
		start := time.Now()
		err := retryBusy(ctx, []time.Duration{time.Hour}, func() error { calls++; return unix.EBUSY })
		if !errors.Is(err, unix.EBUSY) || calls != 1 || time.Since(start) > time.Second {
			t.Fatalf("err %v after %d calls in %s; want EBUSY after 1 call, at once", err, calls, time.Since(start))
		}
	})
}
