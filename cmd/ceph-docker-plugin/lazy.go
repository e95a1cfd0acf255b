package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/rbd"
)

// lazyRBD is the rbd backend of a plugin that may start before Ceph answers (a site powering up,
// a monitor quorum still forming): the plugin serves at once, as dockerd needs, while a background
// loop connects and retries with backoff. Calls made before the connection wait for it briefly,
// then fail with ErrTimeout, so that Get answers for known volumes from memory and the rest say
// what is wrong. (A plugin that exits when Ceph does not answer leaves dockerd with a plugin that
// will not enable, and the reason only in dockerd's log.)
type lazyRBD struct {
	connect func(ctx context.Context) (*rbd.Cluster, error)
	cfg     rbd.ProvisionerConfig
	log     *logrus.Entry
	// wait is how long a call waits for a connection in progress.
	wait time.Duration

	ready chan struct{} // closed once prov is set
	prov  *rbd.Provisioner

	mu      sync.Mutex
	cluster *rbd.Cluster
	lastErr error
	stop    context.CancelFunc
	done    chan struct{} // closed when the connect loop has ended
}

var _ driver.Provisioner = (*lazyRBD)(nil)

// startLazyRBD starts connecting in the background.
func startLazyRBD(connect func(ctx context.Context) (*rbd.Cluster, error), cfg rbd.ProvisionerConfig, log *logrus.Entry, wait time.Duration) *lazyRBD {
	ctx, cancel := context.WithCancel(context.Background())
	l := &lazyRBD{connect: connect, cfg: cfg, log: log, wait: wait, ready: make(chan struct{}), stop: cancel, done: make(chan struct{})}
	go l.loop(ctx)
	return l
}

func (l *lazyRBD) loop(ctx context.Context) {
	defer close(l.done)
	backoff := time.Second
	for attempt := 1; ; attempt++ {
		c, err := l.connect(ctx)
		if err == nil {
			l.mu.Lock()
			if ctx.Err() != nil { // closed meanwhile
				l.mu.Unlock()
				c.Close()
				return
			}
			l.cluster = c
			l.mu.Unlock()
			l.prov = rbd.NewProvisioner(c, l.cfg)
			close(l.ready)
			if attempt > 1 {
				l.log.WithField("attempts", attempt).Info("connected to Ceph")
			}
			return
		}
		l.mu.Lock()
		l.lastErr = err
		l.mu.Unlock()
		l.log.WithError(err).WithField("retry-in", backoff.String()).Warn("Ceph is not reachable: calls fail until it is; retrying")
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// p returns the provisioner once connected; a call made before waits at most l.wait for it.
func (l *lazyRBD) p(ctx context.Context) (*rbd.Provisioner, error) {
	select {
	case <-l.ready:
		return l.prov, nil
	default:
	}
	wctx, cancel := context.WithTimeout(ctx, l.wait)
	defer cancel()
	select {
	case <-l.ready:
		return l.prov, nil
	case <-wctx.Done():
	}
	l.mu.Lock()
	last := l.lastErr
	l.mu.Unlock()
	why := "still connecting"
	if last != nil {
		why = last.Error()
	}
	return nil, fmt.Errorf("%w: Ceph is not reachable yet (%s); the plugin keeps trying to connect", driver.ErrTimeout, why)
}

// Close stops connecting and closes the connection, if any.
func (l *lazyRBD) Close() {
	l.stop()
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cluster != nil {
		l.cluster.Close()
	}
}

func (l *lazyRBD) Create(ctx context.Context, name string, opts driver.Options) error {
	p, err := l.p(ctx)
	if err != nil {
		return err
	}
	return p.Create(ctx, name, opts)
}

func (l *lazyRBD) Get(ctx context.Context, name string) (driver.Volume, error) {
	p, err := l.p(ctx)
	if err != nil {
		return driver.Volume{}, err
	}
	return p.Get(ctx, name)
}

func (l *lazyRBD) List(ctx context.Context) ([]driver.Volume, error) {
	p, err := l.p(ctx)
	if err != nil {
		return nil, err
	}
	return p.List(ctx)
}

func (l *lazyRBD) Remove(ctx context.Context, name string, action driver.RemoveAction) error {
	p, err := l.p(ctx)
	if err != nil {
		return err
	}
	return p.Remove(ctx, name, action)
}

func (l *lazyRBD) Attach(ctx context.Context, name string, req driver.AttachRequest) (driver.Attachment, error) {
	p, err := l.p(ctx)
	if err != nil {
		return driver.Attachment{}, err
	}
	return p.Attach(ctx, name, req)
}

func (l *lazyRBD) Detach(ctx context.Context, name string, att driver.Attachment) error {
	p, err := l.p(ctx)
	if err != nil {
		return err
	}
	return p.Detach(ctx, name, att)
}

// BackendOptions needs no connection.
func (l *lazyRBD) BackendOptions() []string {
	return rbd.BackendOptions()
}

func (l *lazyRBD) Differences(ctx context.Context, vol driver.Volume, opts driver.Options) ([]string, error) {
	p, err := l.p(ctx)
	if err != nil {
		return nil, err
	}
	return p.Differences(ctx, vol, opts)
}

// RoundSize needs no connection.
func (l *lazyRBD) RoundSize(size uint64) uint64 { return size }

func (l *lazyRBD) RecordClients(ctx context.Context, name string, att driver.Attachment, m driver.Mapping) error {
	p, err := l.p(ctx)
	if err != nil {
		return err
	}
	return p.RecordClients(ctx, name, att, m)
}

// Capacity answers CSI's GetCapacity (csi.Capacity) once connected.
func (l *lazyRBD) Capacity(ctx context.Context, params map[string]string) (uint64, error) {
	p, err := l.p(ctx)
	if err != nil {
		return 0, err
	}
	return p.Capacity(ctx, params)
}
