package rbd

import (
	"context"
	"errors"
	"strings"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// The index: a RADOS object in the default pool (indexObject) whose omap maps the names of
// volumes created in other pools (-o pool=...) to "pool/image", so that Get finds them from any
// host.

// readIndex reads the index object's omap in pool; a missing object is ErrNotFound.
func (c *Cluster) readIndex(ctx context.Context, pool string) (map[string][]byte, error) {
	io, err := c.ioctx(ctx, pool, "")
	if err != nil {
		return nil, err
	}
	return call(ctx, c, "read index", pool+"/"+indexObject, func() (map[string][]byte, error) {
		return io.GetAllOmapValues(indexObject, "", "", 1000)
	}, nil)
}

// writeIndex sets name to value in the index in pool.
func (c *Cluster) writeIndex(ctx context.Context, pool, name, value string) error {
	io, err := c.ioctx(ctx, pool, "")
	if err != nil {
		return err
	}
	return c.do(ctx, "write index", pool+"/"+indexObject, func() error {
		return io.SetOmap(indexObject, map[string][]byte{name: []byte(value)})
	}, nil)
}

// dropIndex removes name from the index in pool.
func (c *Cluster) dropIndex(ctx context.Context, pool, name string) error {
	io, err := c.ioctx(ctx, pool, "")
	if err != nil {
		return err
	}
	return c.do(ctx, "write index", pool+"/"+indexObject, func() error {
		return io.RmOmapKeys(indexObject, []string{name})
	}, nil)
}

// index reads the volumes of other pools from the index in the default pool.
func (p *Provisioner) index(ctx context.Context) (map[string]Spec, error) {
	raw, err := p.c.readIndex(ctx, p.cfg.Pool)
	if errors.Is(err, driver.ErrNotFound) {
		return map[string]Spec{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := make(map[string]Spec, len(raw))
	for name, v := range raw {
		pool, image, ok := strings.Cut(string(v), "/")
		if ok {
			out[name] = Spec{Pool: pool, Image: image}
		}
	}
	return out, nil
}

func (p *Provisioner) setIndex(ctx context.Context, name string, spec Spec) error {
	return p.c.writeIndex(ctx, p.cfg.Pool, name, spec.Pool+"/"+spec.Image)
}

func (p *Provisioner) unindex(ctx context.Context, name string) error {
	err := p.c.dropIndex(ctx, p.cfg.Pool, name)
	if errors.Is(err, driver.ErrNotFound) {
		return nil
	}
	return err
}
