package rbd

import (
	"context"
	"sync"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// Lazy is the direct-RBD driver.Provisioner of a plugin that may start before Ceph answers: each
// call gets the cluster from a Connector (see there for how long it waits), so that Get answers
// for known volumes from the driver's memory and the rest say what is wrong.
type Lazy struct {
	cfg ProvisionerConfig
	// cluster is the Connector's connection (a fake in tests).
	cluster func(ctx context.Context) (ceph, error)

	mu   sync.Mutex
	prov *Provisioner
}

// Every method of driver.Provisioner, forwarded: the compiler refuses a Lazy that drops one.
var _ driver.Provisioner = (*Lazy)(nil)

// NewLazy returns the provisioner that connects through conn.
func NewLazy(conn *Connector, cfg ProvisionerConfig) *Lazy {
	return &Lazy{cfg: cfg, cluster: func(ctx context.Context) (ceph, error) {
		c, err := conn.Cluster(ctx)
		if err != nil {
			return nil, err
		}
		return c, nil
	}}
}

// p is the provisioner, once connected.
func (l *Lazy) p(ctx context.Context) (*Provisioner, error) {
	c, err := l.cluster(ctx)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.prov == nil {
		l.prov = newProvisioner(c, l.cfg)
	}
	return l.prov, nil
}

// Create implements driver.Provisioner.
func (l *Lazy) Create(ctx context.Context, name string, opts driver.Options) error {
	p, err := l.p(ctx)
	if err != nil {
		return err
	}
	return p.Create(ctx, name, opts)
}

// Get implements driver.Provisioner.
func (l *Lazy) Get(ctx context.Context, name string) (driver.Volume, error) {
	p, err := l.p(ctx)
	if err != nil {
		return driver.Volume{}, err
	}
	return p.Get(ctx, name)
}

// List implements driver.Provisioner.
func (l *Lazy) List(ctx context.Context) ([]driver.Volume, error) {
	p, err := l.p(ctx)
	if err != nil {
		return nil, err
	}
	return p.List(ctx)
}

// Remove implements driver.Provisioner.
func (l *Lazy) Remove(ctx context.Context, name string, action driver.RemoveAction) error {
	p, err := l.p(ctx)
	if err != nil {
		return err
	}
	return p.Remove(ctx, name, action)
}

// Attach implements driver.Provisioner.
func (l *Lazy) Attach(ctx context.Context, name string, req driver.AttachRequest) (driver.Attachment, error) {
	p, err := l.p(ctx)
	if err != nil {
		return driver.Attachment{}, err
	}
	return p.Attach(ctx, name, req)
}

// Detach implements driver.Provisioner.
func (l *Lazy) Detach(ctx context.Context, name string, att driver.Attachment) error {
	p, err := l.p(ctx)
	if err != nil {
		return err
	}
	return p.Detach(ctx, name, att)
}

// BackendOptions implements driver.Provisioner; it needs no connection.
func (l *Lazy) BackendOptions() []string { return BackendOptions() }

// Differences implements driver.Provisioner.
func (l *Lazy) Differences(ctx context.Context, vol driver.Volume, opts driver.Options) ([]string, error) {
	p, err := l.p(ctx)
	if err != nil {
		return nil, err
	}
	return p.Differences(ctx, vol, opts)
}

// RoundSize implements driver.Provisioner; it needs no connection.
func (l *Lazy) RoundSize(size uint64) uint64 { return size }

// RecordClients implements driver.Provisioner.
func (l *Lazy) RecordClients(ctx context.Context, name string, att driver.Attachment, m driver.Mapping) error {
	p, err := l.p(ctx)
	if err != nil {
		return err
	}
	return p.RecordClients(ctx, name, att, m)
}

// Guard is Cinder mode's view of Ceph, with the host's own cephx user: who watches an image
// before a new attachment completes, the holder's record of its clients, and fencing for
// LOCK_BREAK=on takeovers (cinder's Watchers, Recorder and Fencer).
type Guard struct {
	Conn  *Connector
	Local LocalClients // this host's mappings' clients
}

// Fence fences a dead holder only (see Cluster.FenceDeadHolder).
func (g Guard) Fence(ctx context.Context, spec driver.ImageSpec, holder string) ([]string, error) {
	c, err := g.Conn.Cluster(ctx)
	if err != nil {
		return nil, err
	}
	return c.FenceDeadHolder(ctx, spec, TakeOverReserve, holder)
}

// ForeignWatchers waits for the clients that are not this host's to stop watching the image
// (see Cluster.WaitForeign) and returns the addresses of those still watching.
func (g Guard) ForeignWatchers(ctx context.Context, spec driver.ImageSpec) ([]string, error) {
	c, err := g.Conn.Cluster(ctx)
	if err != nil {
		return nil, err
	}
	ws, err := c.WaitForeign(ctx, spec, g.Local, TakeOverReserve)
	return addrsOf(ws), err
}

// LiveWatchers is Cluster.LiveWatchers.
func (g Guard) LiveWatchers(ctx context.Context, spec driver.ImageSpec) ([]string, error) {
	c, err := g.Conn.Cluster(ctx)
	if err != nil {
		return nil, err
	}
	return c.LiveWatchers(ctx, spec)
}

// RecordClients is Cluster.RecordClients.
func (g Guard) RecordClients(ctx context.Context, spec driver.ImageSpec, host, id string, clients []string) error {
	c, err := g.Conn.Cluster(ctx)
	if err != nil {
		return err
	}
	_, err = c.RecordClients(ctx, spec, host, id, clients)
	return err
}

// ClearClients is Cluster.ClearHolder.
func (g Guard) ClearClients(ctx context.Context, spec driver.ImageSpec, id string) error {
	c, err := g.Conn.Cluster(ctx)
	if err != nil {
		return err
	}
	return c.ClearHolder(ctx, spec, id)
}

// Capacity answers CSI's GetCapacity (csi.Capacity) once connected.
func (l *Lazy) Capacity(ctx context.Context, params map[string]string) (uint64, error) {
	p, err := l.p(ctx)
	if err != nil {
		return 0, err
	}
	return p.Capacity(ctx, params)
}
