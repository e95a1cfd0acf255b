package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/attachments"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"github.com/cephdocker/ceph-docker-plugin/cinder"
	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/plugin/plugintest"
)

// cinderClient is a Cinder v3 client for the raw steps, authenticated as the plugin is (OS_*).
func cinderClient(ctx context.Context) (*gophercloud.ServiceClient, error) {
	if os.Getenv("OS_AUTH_URL") == "" {
		return nil, errNoCinder
	}
	o, err := plugintest.OpenStackFromEnv()
	if err != nil {
		return nil, err
	}
	provider, err := openstack.AuthenticatedClient(ctx, o.AuthOptions())
	if err != nil {
		return nil, fmt.Errorf("keystone: %w", err)
	}
	c, err := openstack.NewBlockStorageV3(provider, gophercloud.EndpointOpts{Region: o.Region})
	if err != nil {
		return nil, err
	}
	c.Microversion = "3.54"
	return c, nil
}

// waitVolume waits up to 2 minutes, polling every 20 ms as Create's wait does with that poll, until
// a volume has status want (or is gone, with want "").
func waitVolume(ctx context.Context, c *gophercloud.ServiceClient, id, want string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	_, err := cinder.WaitStatus(ctx, c, id, want, 20*time.Millisecond)
	if want == "" && errors.Is(err, driver.ErrNotFound) {
		return nil
	}
	return err
}

// cinder: Create and first Mount with BACKEND=cinder, against Cinder's own create-to-available
// and attachment (create + complete), followed by the same map + mkfs + mount by hand.
func (b *bench) cinder(ctx context.Context) error {
	c, err := cinderClient(ctx)
	if err != nil {
		return err
	}
	p := newPlugin(b.o.bin, b.o.work, "bench-cinder", "BACKEND=cinder", "CEPH_CONF="+b.env.conf, "CEPH_USER="+b.env.user,
		"CEPH_KEYRING="+b.env.keyring)
	if _, err := p.start(b.o.bin); err != nil {
		return err
	}
	defer p.stop()
	var create, mount, rCreate, rAttach, rMount sample
	for i := 0; i < b.o.cinderN; i++ {
		name := fmt.Sprintf("%s-c-%02d", b.prefix, i)
		if err := timed(&create, func() error { return p.create(name, map[string]string{"size": "1"}) }); err != nil {
			return err
		}
		if err := timed(&mount, func() error { _, err := p.mount(name, "m"+name); return err }); err != nil {
			return err
		}
		if err := p.unmount(name, "m"+name); err != nil {
			return err
		}
		if err := p.remove(name); err != nil {
			return err
		}

		rname := fmt.Sprintf("%s-rawc-%02d", b.prefix, i)
		var vol *volumes.Volume
		if err := timed(&rCreate, func() error {
			var err error
			if vol, err = volumes.Create(ctx, c, volumes.CreateOpts{Name: rname, Size: 1}, nil).Extract(); err != nil {
				return err
			}
			return waitVolume(ctx, c, vol.ID, "available")
		}); err != nil {
			return fmt.Errorf("raw cinder create: %w", err)
		}
		var att *attachments.Attachment
		var m *rawMap
		start := time.Now()
		err := timed(&rAttach, func() error {
			var err error
			att, err = attachments.Create(ctx, c, attachments.CreateOpts{
				VolumeUUID: vol.ID, InstanceUUID: cinder.InstanceUUID(rname), Mode: "rw",
				Connector: map[string]any{"host": "bench-raw", "platform": "x86_64", "os_type": "linux",
					"multipath": false, "do_local_attach": false, "mountpoint": "bench:" + rname},
			}).Extract()
			if err != nil {
				return err
			}
			return attachments.Complete(ctx, c, att.ID).ExtractErr()
		})
		if err == nil {
			spec, perr := cinder.ImageOf(att.ConnectionInfo)
			if perr != nil {
				err = perr
			} else if m, err = b.raw.mapImage(ctx, spec.Pool, spec.Image); err == nil {
				err = b.raw.mkfsMount(ctx, m)
			}
		}
		if err == nil {
			rMount = append(rMount, time.Since(start))
		}
		if m != nil {
			_ = b.raw.unmapImage(ctx, m)
		}
		if att != nil {
			_ = attachments.Delete(ctx, c, att.ID).ExtractErr()
		}
		_ = waitVolume(ctx, c, vol.ID, "available")
		if derr := volumes.Delete(ctx, c, vol.ID, volumes.DeleteOpts{}).ExtractErr(); derr == nil {
			_ = waitVolume(ctx, c, vol.ID, "")
		}
		if err != nil {
			return fmt.Errorf("raw cinder attach + map + mkfs + mount: %w", err)
		}
		if i%5 == 4 {
			logf("cinder: %d/%d runs", i+1, b.o.cinderN)
		}
	}
	b.res.cinder = []latRow{
		{call: "Create (1 GiB)", rawWhat: "Cinder API: volume create, polled every 20 ms until `available`", plugin: create, raw: rCreate},
		{call: "first Mount (attach + map + mkfs + mount)", rawWhat: "Cinder attachment create + complete, then `rbd-fuse` + `losetup` + `mkfs.ext4` + `mount` by hand", plugin: mount, raw: rMount},
	}
	b.res.cinderAttach = rAttach
	return nil
}

// cleanCinder deletes every bench-* Cinder volume of the project (after an interrupted run).
func (b *bench) cleanCinder(ctx context.Context) {
	if !slices.Contains(b.o.phases, "cinder") || os.Getenv("OS_AUTH_URL") == "" {
		return
	}
	c, err := cinderClient(ctx)
	if err != nil {
		logf("cinder cleanup: %v", err)
		return
	}
	_ = volumes.List(c, volumes.ListOpts{}).EachPage(ctx, func(_ context.Context, page pagination.Page) (bool, error) {
		vs, err := volumes.ExtractVolumes(page)
		for _, v := range vs {
			if !strings.HasPrefix(v.Name, "bench-") {
				continue
			}
			for _, a := range v.Attachments {
				_ = attachments.Delete(ctx, c, a.AttachmentID).ExtractErr()
			}
			_ = waitVolume(ctx, c, v.ID, "available")
			if err := volumes.Delete(ctx, c, v.ID, volumes.DeleteOpts{}).ExtractErr(); err != nil {
				logf("cinder cleanup: delete %s: %v", v.Name, err)
			} else {
				logf("cinder cleanup: deleted %s", v.Name)
			}
		}
		return true, err
	})
}
