package driver

import (
	"context"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
)

// Plugin adapts the Driver to Docker's volume protocol (go-plugins-helpers' volume.Driver).
// The protocol gives no context: each request gets one here, with a deadline under the daemon's
// own (60 s for most calls, 120 s for Create and Mount).
type Plugin struct {
	D       *Driver
	Timeout time.Duration
	Log     *logrus.Entry
	// Observer, when set, is told of every call's outcome and duration (metrics).
	Observer Observer
}

var _ volume.Driver = (*Plugin)(nil)

func (p *Plugin) call(op, name string, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), p.Timeout)
	defer cancel()
	start := time.Now()
	err := fn(ctx)
	took := time.Since(start)
	if p.Observer != nil {
		p.Observer.Call(op, err, took)
	}
	log := p.Log.WithFields(logrus.Fields{"op": op, "duration": took.Round(time.Millisecond)})
	if name != "" {
		log = log.WithField("volume", name)
	}
	if err != nil {
		log.WithError(err).Warn("request failed")
		return err
	}
	log.Debug("request done")
	return nil
}

// Create implements volume.Driver.
func (p *Plugin) Create(r *volume.CreateRequest) error {
	return p.call("create", r.Name, func(ctx context.Context) error { return p.D.Create(ctx, r.Name, r.Options) })
}

// Remove implements volume.Driver.
func (p *Plugin) Remove(r *volume.RemoveRequest) error {
	return p.call("remove", r.Name, func(ctx context.Context) error { return p.D.Remove(ctx, r.Name) })
}

// Mount implements volume.Driver.
func (p *Plugin) Mount(r *volume.MountRequest) (*volume.MountResponse, error) {
	var path string
	err := p.call("mount", r.Name, func(ctx context.Context) error {
		var err error
		path, err = p.D.Mount(ctx, r.Name, r.ID)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &volume.MountResponse{Mountpoint: path}, nil
}

// Unmount implements volume.Driver.
func (p *Plugin) Unmount(r *volume.UnmountRequest) error {
	return p.call("unmount", r.Name, func(ctx context.Context) error { return p.D.Unmount(ctx, r.Name, r.ID) })
}

// Path implements volume.Driver.
func (p *Plugin) Path(r *volume.PathRequest) (*volume.PathResponse, error) {
	var path string
	err := p.call("path", r.Name, func(ctx context.Context) error {
		var err error
		path, err = p.D.Path(ctx, r.Name)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &volume.PathResponse{Mountpoint: path}, nil
}

func toVolume(v VolumeInfo) *volume.Volume {
	out := &volume.Volume{Name: v.Name, Mountpoint: v.Mountpoint, Status: v.Status}
	if !v.CreatedAt.IsZero() {
		out.CreatedAt = v.CreatedAt.UTC().Format(time.RFC3339)
	}
	return out
}

// Get implements volume.Driver.
func (p *Plugin) Get(r *volume.GetRequest) (*volume.GetResponse, error) {
	var info VolumeInfo
	err := p.call("get", r.Name, func(ctx context.Context) error {
		var err error
		info, err = p.D.Get(ctx, r.Name)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &volume.GetResponse{Volume: toVolume(info)}, nil
}

// List implements volume.Driver.
func (p *Plugin) List() (*volume.ListResponse, error) {
	var vols []VolumeInfo
	err := p.call("list", "", func(ctx context.Context) error {
		var err error
		vols, err = p.D.List(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := &volume.ListResponse{Volumes: make([]*volume.Volume, 0, len(vols))}
	for _, v := range vols {
		out.Volumes = append(out.Volumes, toVolume(v))
	}
	return out, nil
}

// Capabilities implements volume.Driver: volumes are cluster-wide.
func (p *Plugin) Capabilities() *volume.CapabilitiesResponse {
	return &volume.CapabilitiesResponse{Capabilities: volume.Capability{Scope: "global"}}
}
