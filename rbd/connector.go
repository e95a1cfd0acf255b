package rbd

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// Connector is the plugin's one connection to Ceph, made when it is first needed: the plugin
// serves at once, as dockerd needs, even while Ceph does not answer (a site powering up, a
// monitor quorum still forming). A call that needs the cluster starts a connection attempt
// bounded by the call's deadline (and by ConnectTimeout), and waits for it at most Wait; a
// failed attempt is retried in the background with backoff until one succeeds, so that calls
// made meanwhile fail fast with ErrTimeout saying why. (A plugin that exits when Ceph does not
// answer leaves dockerd with a plugin that will not enable, and the reason only in dockerd's log.)
//
// It serves the rbd Provisioner (Lazy) and Cinder mode's view of Ceph (Guard).
type Connector struct {
	cfg Config
	// Wait is how long a call waits for a connection in progress (0: 10 s).
	Wait time.Duration
	// ConnectTimeout bounds an attempt that no call's deadline bounds (0: 50 s).
	ConnectTimeout time.Duration
	Log            logrus.FieldLogger
	// dial connects (Connect; tests fake it).
	dial func(ctx context.Context, cfg Config) (*Cluster, error)

	mu       sync.Mutex
	c        *Cluster
	attempt  chan struct{} // non-nil while an attempt runs; closed when it ends
	lastErr  error
	failures int
	retry    *time.Timer
	closed   bool
	stop     context.Context // ends attempts when the connector is closed
	cancel   context.CancelFunc
	attempts sync.WaitGroup
}

// NewConnector returns a connector for cfg; nothing is connected until Start or a first use.
func NewConnector(cfg Config, log logrus.FieldLogger) *Connector {
	stop, cancel := context.WithCancel(context.Background())
	if log == nil {
		log = logrus.StandardLogger()
	}
	return &Connector{cfg: cfg, Log: log, dial: Connect, stop: stop, cancel: cancel}
}

// Start begins connecting in the background, without waiting.
func (k *Connector) Start() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.c == nil && !k.closed {
		k.startLocked(time.Now().Add(k.connectTimeout()))
	}
}

func (k *Connector) wait() time.Duration {
	if k.Wait > 0 {
		return k.Wait
	}
	return 10 * time.Second
}

func (k *Connector) connectTimeout() time.Duration {
	if k.ConnectTimeout > 0 {
		return k.ConnectTimeout
	}
	return 50 * time.Second
}

// Cluster returns the connection, connecting first if need be. While Ceph does not answer it
// fails, within Wait, with ErrTimeout and the reason.
func (k *Connector) Cluster(ctx context.Context) (*Cluster, error) {
	k.mu.Lock()
	if k.c != nil {
		defer k.mu.Unlock()
		return k.c, nil
	}
	if k.closed {
		k.mu.Unlock()
		return nil, &OpError{Op: "connect", What: "client." + k.cfg.User, Kind: driver.ErrInvalid, Err: errors.New("the plugin is stopping")}
	}
	deadline := time.Now().Add(k.connectTimeout())
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	attempt := k.startLocked(deadline)
	k.mu.Unlock()

	wctx, cancel := context.WithTimeout(ctx, k.wait())
	defer cancel()
	select {
	case <-attempt:
	case <-wctx.Done():
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.c != nil {
		return k.c, nil
	}
	why := "still connecting"
	if k.lastErr != nil {
		why = k.lastErr.Error()
	}
	return nil, fmt.Errorf("%w: Ceph is not reachable yet (%s); the plugin keeps trying to connect", driver.ErrTimeout, why)
}

// startLocked starts an attempt bounded by deadline unless one runs already, and returns the
// channel closed when the running attempt ends. k.mu is held.
func (k *Connector) startLocked(deadline time.Time) chan struct{} {
	if k.attempt != nil {
		return k.attempt
	}
	if k.retry != nil {
		k.retry.Stop()
		k.retry = nil
	}
	done := make(chan struct{})
	k.attempt = done
	k.attempts.Add(1)
	go k.connect(deadline, done)
	return done
}

// connect is one attempt.
func (k *Connector) connect(deadline time.Time, done chan struct{}) {
	defer k.attempts.Done()
	defer close(done)
	ctx, cancel := context.WithDeadline(k.stop, deadline)
	c, err := k.dial(ctx, k.cfg)
	cancel()
	if err != nil {
		err = fmt.Errorf("connect to Ceph as client.%s: %w", k.cfg.withDefaults().User, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.attempt = nil
	switch {
	case err == nil && k.closed:
		defer c.Close() // after k.mu is released (deferred calls run last first)
	case err == nil:
		k.c = c
		if k.failures > 0 {
			k.Log.WithField("attempts", k.failures+1).Info("connected to Ceph")
		}
	case k.closed:
	default:
		k.lastErr = err
		k.failures++
		backoff := min(time.Second<<min(k.failures-1, 5), 30*time.Second)
		k.Log.WithError(err).WithField("retry-in", backoff.String()).Warn("Ceph is not reachable: calls fail until it is; retrying")
		k.retry = time.AfterFunc(backoff, k.retryNow)
	}
}

// retryNow is a background attempt after a failed one.
func (k *Connector) retryNow() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.retry = nil
	if k.c == nil && !k.closed {
		k.startLocked(time.Now().Add(k.connectTimeout()))
	}
}

// Close stops connecting and closes the connection, if any.
func (k *Connector) Close() {
	k.mu.Lock()
	k.closed = true
	if k.retry != nil {
		k.retry.Stop()
	}
	k.mu.Unlock()
	k.cancel()
	k.attempts.Wait()
	k.mu.Lock()
	c := k.c
	k.c = nil
	k.mu.Unlock()
	if c != nil {
		c.Close()
	}
}
