package driver

import (
	"context"
	"errors"
	"time"
)

// Observer is told what the plugin does, for metrics: every call's outcome and duration, whether
// the backend answers, and every takeover's fencing. Its methods must be quick and must not block.
type Observer interface {
	// Call reports one request of Docker's (op: "create", "mount", ...) and its outcome.
	Call(op string, err error, took time.Duration)
	// Backend reports whether the backend (Ceph, or Keystone + Cinder) answered the last request
	// made of it: false when it did not answer in time.
	Backend(answered bool)
	// Fenced reports a takeover of volume from a dead holder, fencing clients of its clients.
	Fenced(volume string, clients int)
}

// observed is a Provisioner that reports to an Observer whether the backend answers. Every
// capability of a backend is a method of Provisioner, so this wrapper cannot drop one.
type observed struct {
	p   Provisioner
	obs Observer
}

var _ Provisioner = observed{}

// report says whether err means the backend answered: a success or a definite refusal does; a
// timeout does not. Other failures (a mapper's, a bad request's) say nothing about it.
func (o observed) report(err error) {
	switch {
	case err == nil || refused(err):
		o.obs.Backend(true)
	case errors.Is(err, ErrTimeout):
		o.obs.Backend(false)
	}
}

func (o observed) Create(ctx context.Context, name string, opts Options) error {
	err := o.p.Create(ctx, name, opts)
	o.report(err)
	return err
}

func (o observed) Get(ctx context.Context, name string) (Volume, error) {
	v, err := o.p.Get(ctx, name)
	o.report(err)
	return v, err
}

func (o observed) List(ctx context.Context) ([]Volume, error) {
	v, err := o.p.List(ctx)
	o.report(err)
	return v, err
}

func (o observed) Remove(ctx context.Context, name string, action RemoveAction) error {
	err := o.p.Remove(ctx, name, action)
	o.report(err)
	return err
}

func (o observed) Attach(ctx context.Context, name string, req AttachRequest) (Attachment, error) {
	a, err := o.p.Attach(ctx, name, req)
	o.report(err)
	if err == nil && len(a.Fenced) > 0 {
		o.obs.Fenced(name, len(a.Fenced))
	}
	return a, err
}

func (o observed) Detach(ctx context.Context, name string, att Attachment) error {
	err := o.p.Detach(ctx, name, att)
	o.report(err)
	return err
}

func (o observed) RecordClients(ctx context.Context, name string, att Attachment, m Mapping) error {
	err := o.p.RecordClients(ctx, name, att, m)
	o.report(err)
	return err
}

func (o observed) BackendOptions() []string { return o.p.BackendOptions() }

func (o observed) Differences(ctx context.Context, vol Volume, opts Options) ([]string, error) {
	d, err := o.p.Differences(ctx, vol, opts)
	o.report(err)
	return d, err
}

func (o observed) RoundSize(size uint64) uint64 { return o.p.RoundSize(size) }
