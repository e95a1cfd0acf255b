//go:build integration

package main

import (
	"strings"
	"testing"
)

// Every backend capability reaches the binary: an idempotent Create of an existing name with
// another backend option is refused naming the option, and the same options again are accepted.
// (A wrapper between the driver and the backend that forwarded only some methods would drop the
// comparison silently: this test drives the binary, wrappers included.)
func TestProtocolCreateComparesBackendOptions(t *testing.T) {
	t.Parallel()
	l := labEnv(t)
	t.Run("rbd", func(t *testing.T) {
		t.Parallel()
		p := newPlugin(t, l, "host-a")
		p.start()
		base, name := uniq("cmp-base"), uniq("cmp")
		p.create(base, map[string]string{"size": "128M"})
		t.Cleanup(func() { _ = p.try("/VolumeDriver.Remove", map[string]string{"Name": base}, nil) })
		l.admin(t, "rbd", "snap", "create", l.pool+"/"+base+"@s1")
		t.Cleanup(func() {
			// The clone's parent snapshot (protected by the clone's Create): unprotect and remove
			// it once the clone is gone, so that the base can be removed.
			_ = p.try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil)
			l.admin(t, "rbd", "snap", "unprotect", l.pool+"/"+base+"@s1")
			l.admin(t, "rbd", "snap", "purge", l.pool+"/"+base)
		})
		clone := uniq("cmp-clone")
		p.create(clone, map[string]string{"from-snapshot": base + "@s1"})
		t.Cleanup(func() { _ = p.try("/VolumeDriver.Remove", map[string]string{"Name": clone}, nil) })
		p.create(name, map[string]string{"size": "128M"})

		refused := []struct {
			opts map[string]string
			want string
		}{
			{map[string]string{"size": "128M", "features": "layering"}, "features layering (it has "},
			{map[string]string{"size": "128M", "pool": cinderPool}, "pool " + cinderPool + " (it is in pool " + l.pool + ")"},
			{map[string]string{"data-pool": cinderPool}, "data-pool " + cinderPool + " (it has none)"},
			{map[string]string{"from-snapshot": base + "@s1"}, "from-snapshot " + base + "@s1 (it is not a clone)"},
		}
		for _, c := range refused {
			msg := p.fail("/VolumeDriver.Create", map[string]any{"Name": name, "Opts": c.opts})
			if !strings.Contains(msg, name) || !strings.Contains(msg, c.want) || !strings.Contains(msg, "remove it first") {
				t.Errorf("Create %s again with %v: %q, want a refusal naming %q", name, c.opts, msg, c.want)
			}
		}
		msg := p.fail("/VolumeDriver.Create", map[string]any{"Name": clone, "Opts": map[string]string{"from-snapshot": name + "@s1"}})
		if !strings.Contains(msg, "from-snapshot "+name+"@s1") {
			t.Errorf("Create of the clone with another source: %q", msg)
		}
		for _, opts := range []map[string]string{
			{"size": "128M"},
			{"size": "128M", "pool": l.pool, "features": "layering,exclusive-lock,object-map,fast-diff,deep-flatten"},
			{"data-pool": l.pool},
		} {
			p.create(name, opts)
		}
		p.create(clone, map[string]string{"from-snapshot": base + "@s1"})
	})
	t.Run("cinder", func(t *testing.T) {
		t.Parallel()
		p := newPlugin(t, l, "host-a", cinderEnv(t)...)
		p.start()
		name := uniq("cmp")
		// Cinder sizes in whole GiB: 200M makes 1G, and 200M or 1G again is the same volume.
		p.create(name, map[string]string{"size": "200M", "volume-type": "rbd", "availability-zone": "nova"})
		t.Cleanup(func() { _ = p.try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil) })
		if st := p.get(name).Volume.Status; st["size"] != "1G" {
			t.Fatalf("size of a 200M Cinder volume: %v, want 1G", st["size"])
		}
		refused := []struct {
			opts map[string]string
			want string
		}{
			{map[string]string{"size": "2G"}, "size 2G (it has 1G)"},
			{map[string]string{"volume-type": "__DEFAULT__"}, "volume-type __DEFAULT__ (it has rbd)"},
			{map[string]string{"availability-zone": "elsewhere"}, "availability-zone elsewhere (it has nova)"},
			{map[string]string{"snapshot-id": "7d3c1a8e-2f4b-4c1e-9a6d-0b5e8f2c3d41"}, "snapshot-id 7d3c1a8e-2f4b-4c1e-9a6d-0b5e8f2c3d41 (it has none)"},
		}
		for _, c := range refused {
			msg := p.fail("/VolumeDriver.Create", map[string]any{"Name": name, "Opts": c.opts})
			if !strings.Contains(msg, name) || !strings.Contains(msg, c.want) || !strings.Contains(msg, "remove it first") {
				t.Errorf("Create %s again with %v: %q, want a refusal naming %q", name, c.opts, msg, c.want)
			}
		}
		for _, opts := range []map[string]string{
			{"size": "200M"}, {"size": "1G"}, {"volume-type": "rbd", "availability-zone": "nova"},
		} {
			p.create(name, opts)
		}
	})
}
