//go:build integration

package main

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// The volume lifecycle through the socket, as dockerd drives it, with each backend.
func TestProtocolLifecycle(t *testing.T) {
	t.Parallel()
	eachBackend(t, labEnv(t), testProtocolLifecycle)
}

func testProtocolLifecycle(t *testing.T, b backend) {
	l := labEnv(t)
	p := newPlugin(t, l, "host-a", b.env...)
	p.start()
	name := uniq("proto")

	var caps struct{ Capabilities struct{ Scope string } }
	p.call("/VolumeDriver.Capabilities", struct{}{}, &caps)
	if caps.Capabilities.Scope != "global" {
		t.Fatalf("scope = %q, want global", caps.Capabilities.Scope)
	}

	p.create(name, map[string]string{"size": "1G", "fstype": "ext4", "mount-options": "noatime"})
	// Docker calls Create again on every swarm node: compatible options succeed.
	p.create(name, map[string]string{"size": "1G"})
	t.Cleanup(func() { _ = p.try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil) })

	g := p.get(name)
	st := g.Volume.Status
	if g.Volume.Name != name || st["size"] != "1G" || st["fstype"] != "ext4" || g.Volume.Mountpoint != "" {
		t.Fatalf("get = %+v", g.Volume)
	}
	if b.name == "rbd" && st["image"] != l.pool+"/"+name {
		t.Fatalf("get = %+v: want image %s/%s", g.Volume, l.pool, name)
	}
	image := b.image(p, name)
	var list struct{ Volumes []struct{ Name string } }
	p.call("/VolumeDriver.List", struct{}{}, &list)
	if !slices.ContainsFunc(list.Volumes, func(v struct{ Name string }) bool { return v.Name == name }) {
		t.Fatalf("list does not contain %s: %+v", name, list.Volumes)
	}

	path1 := p.mount(name, "c1")
	path2 := p.mount(name, "c2")
	if path1 != path2 {
		t.Fatalf("two mounts, two paths: %s %s", path1, path2)
	}
	if n := p.mappingsOf(b.pool, image); n != 1 {
		t.Fatalf("%d mappings after two mounts, want 1", n)
	}
	g = p.get(name)
	if g.Volume.Mountpoint != path1 || g.Volume.Status["device"] == "" || len(g.Volume.Status["mounts"].([]any)) != 2 {
		t.Fatalf("get while mounted = %+v", g.Volume)
	}
	var pathResp struct{ Mountpoint string }
	p.call("/VolumeDriver.Path", map[string]string{"Name": name}, &pathResp)
	if pathResp.Mountpoint != path1 {
		t.Fatalf("path = %q, want %q", pathResp.Mountpoint, path1)
	}
	data := randomData(t, 4<<20)
	sum := sha256.Sum256(data)
	writeFile(t, filepath.Join(path1, "data.bin"), data)

	p.unmount(name, "c1")
	if !isMounted(t, path1) {
		t.Fatal("unmounted while c2 still uses it")
	}
	p.unmount(name, "c2")
	if isMounted(t, path1) {
		t.Fatal("still mounted after the last unmount")
	}
	p.assertClean()
	// Unmount of an unknown ID (dockerd calls it after a failed mount) succeeds.
	p.unmount(name, "never-mounted")

	path := p.mount(name, "c3")
	got, err := os.ReadFile(filepath.Join(path, "data.bin"))
	if err != nil || sha256.Sum256(got) != sum {
		t.Fatalf("data after remount: %v (sum %x want %x)", err, sha256.Sum256(got), sum)
	}
	p.unmount(name, "c3")
	p.remove(name)
	msg := p.fail("/VolumeDriver.Get", map[string]string{"Name": name})
	if !strings.Contains(msg, name) || !strings.Contains(msg, "not found") {
		t.Fatalf("get after remove: %q", msg)
	}
	p.assertClean()
}

// Errors reach the caller as plain strings that name the volume and say what is wrong, with
// each backend.
func TestProtocolErrors(t *testing.T) {
	t.Parallel()
	eachBackend(t, labEnv(t), testProtocolErrors)
}

func testProtocolErrors(t *testing.T, b backend) {
	l := labEnv(t)
	p := newPlugin(t, l, "host-a", b.env...)
	p.start()
	name := uniq("err")

	cases := []struct {
		path string
		req  map[string]any
		want []string
	}{
		{"/VolumeDriver.Create", map[string]any{"Name": name, "Opts": map[string]string{"colour": "red"}}, []string{name, `unknown option "colour"`, "allowed are size"}},
		{"/VolumeDriver.Create", map[string]any{"Name": name, "Opts": map[string]string{"size": "huge"}}, []string{name, `size "huge"`}},
		{"/VolumeDriver.Create", map[string]any{"Name": name, "Opts": map[string]string{"fstype": "btrfs"}}, []string{`fstype "btrfs"`, "ext4, xfs"}},
		{"/VolumeDriver.Create", map[string]any{"Name": "../etc", "Opts": map[string]string{}}, []string{`"../etc"`, "may contain only"}},
		{"/VolumeDriver.Mount", map[string]any{"Name": "a/b", "ID": "x"}, []string{`"a/b"`}},
		{"/VolumeDriver.Get", map[string]any{"Name": name + "-missing"}, []string{name + "-missing", "not found"}},
		{"/VolumeDriver.Mount", map[string]any{"Name": name + "-missing", "ID": "x"}, []string{name + "-missing", "not found"}},
		{"/VolumeDriver.Remove", map[string]any{"Name": name + "-missing"}, []string{name + "-missing", "not found"}},
	}
	for _, c := range cases {
		msg := p.fail(c.path, c.req)
		for _, w := range c.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%s %v: %q does not contain %q", c.path, c.req, msg, w)
			}
		}
	}

	// In-use remove.
	p.create(name, map[string]string{"size": "1G"})
	t.Cleanup(func() { _ = p.try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil) })
	p.mount(name, "c1")
	msg := p.fail("/VolumeDriver.Remove", map[string]string{"Name": name})
	if !strings.Contains(msg, name) || !strings.Contains(msg, "in use") || !strings.Contains(msg, "host-a") {
		t.Errorf("remove while mounted: %q", msg)
	}
	// Create with another size than the existing volume.
	msg = p.fail("/VolumeDriver.Create", map[string]any{"Name": name, "Opts": map[string]string{"size": "2G"}})
	if !strings.Contains(msg, "exists") || !strings.Contains(msg, "it has 1G") {
		t.Errorf("incompatible create: %q", msg)
	}
	p.unmount(name, "c1")
	p.remove(name)
	p.assertClean()
}

// Ceph that does not answer: calls fail within CALL_TIMEOUT with a message, instead of hanging.
func TestProtocolCephUnreachable(t *testing.T) {
	t.Parallel()
	l := labEnv(t)
	pool := blockedPool(t, l)
	p := newPlugin(t, l, "host-a", "RBD_POOL="+pool, "CALL_TIMEOUT=3s", "CEPH_TIMEOUT=2s")
	p.start()
	for _, c := range []struct {
		path string
		req  any
	}{
		{"/VolumeDriver.Get", map[string]string{"Name": "v"}},
		{"/VolumeDriver.Create", map[string]any{"Name": "v", "Opts": map[string]string{}}},
		{"/VolumeDriver.List", struct{}{}},
		{"/VolumeDriver.Mount", map[string]string{"Name": "v", "ID": "x"}},
		{"/VolumeDriver.Remove", map[string]string{"Name": "v"}},
	} {
		start := time.Now()
		msg := p.fail(c.path, c.req)
		took := time.Since(start)
		if took > 5*time.Second {
			t.Errorf("%s answered after %v (CALL_TIMEOUT 3s)", c.path, took)
		}
		if !strings.Contains(msg, "timed out") && !strings.Contains(msg, "did not answer") {
			t.Errorf("%s: %q does not say it timed out", c.path, msg)
		}
	}
}

// A plugin that starts while no monitor answers (a site powering up) serves at once: its calls
// fail with a message saying Ceph is not reachable yet, within a bounded time; once the monitors
// answer, it connects by itself and works, without a restart.
func TestProtocolStartsBeforeCeph(t *testing.T) {
	t.Parallel()
	l := labEnv(t)
	raw, err := os.ReadFile(l.conf)
	if err != nil {
		t.Fatal(err)
	}
	// Port 9 (discard) on loopback: nothing listens, the connection is refused.
	down := regexp.MustCompile(`(?m)^mon host = .*$`).ReplaceAll(raw, []byte("mon host = 127.0.0.1:9"))
	if string(down) == string(raw) {
		t.Fatalf("no 'mon host' line to replace in %s", l.conf)
	}
	conf := filepath.Join(t.TempDir(), "ceph.conf")
	if err := os.WriteFile(conf, down, 0o644); err != nil {
		t.Fatal(err)
	}
	p := newPlugin(t, l, "host-a", "CEPH_CONF="+conf, "CALL_TIMEOUT=6s", "CEPH_TIMEOUT=2s")
	p.start() // returns once the socket answers: it would fail if the plugin exited
	for _, path := range []string{"/VolumeDriver.List", "/VolumeDriver.Get"} {
		start := time.Now()
		msg := p.fail(path, map[string]string{"Name": "v"})
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("%s answered after %v; want within half the 6 s CALL_TIMEOUT", path, took)
		}
		if !strings.Contains(msg, "not reachable") {
			t.Errorf("%s: %q does not say Ceph is not reachable", path, msg)
		}
	}
	// The monitors "come up": the plugin's next attempt (backoff at most 8 s by now) connects.
	if err := os.WriteFile(conf, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	name := uniq("late")
	deadline := time.Now().Add(40 * time.Second)
	for {
		err := p.try("/VolumeDriver.Create", map[string]any{"Name": name, "Opts": map[string]string{"size": "64M"}}, nil)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the plugin did not connect after the monitors came back: %v\n%s", err, p.logs())
		}
		time.Sleep(time.Second)
	}
	t.Cleanup(func() {
		// Under load the Remove can outlast the 6 s CALL_TIMEOUT: then remove the image directly.
		if p.try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil) != nil {
			l.admin(t, "rbd", "rm", l.pool+"/"+name)
		}
	})
	if g := p.get(name); g.Volume.Name != name {
		t.Fatalf("get after connecting late = %+v", g)
	}
	if !strings.Contains(p.logs(), "connected to Ceph") {
		t.Error("the plugin did not log that it connected")
	}
}

// blockedPool makes a pool whose placement groups map to no OSD, so that all I/O to it waits.
func blockedPool(t *testing.T, l lab) string {
	const pool, root, rule = "cdp-blocked-p", "cdp-empty-p", "cdp-nowhere-p"
	if strings.Contains(l.admin(t, "ceph", "osd", "pool", "ls"), pool) {
		l.admin(t, "ceph", "osd", "pool", "rm", pool, pool, "--yes-i-really-really-mean-it")
	}
	l.admin(t, "ceph", "osd", "crush", "add-bucket", root, "root")
	if !strings.Contains(l.admin(t, "ceph", "osd", "crush", "rule", "ls"), rule) {
		l.admin(t, "ceph", "osd", "crush", "rule", "create-replicated", rule, root, "osd")
	}
	l.admin(t, "ceph", "osd", "pool", "create", pool, "8", "8", "replicated", rule)
	l.admin(t, "ceph", "osd", "pool", "application", "enable", pool, "rbd")
	// The least-privilege user has no caps on this pool, and needs none here: with no OSD to
	// serve its placement groups, requests wait before any OSD could check caps.
	t.Cleanup(func() { l.admin(t, "ceph", "osd", "pool", "rm", pool, pool, "--yes-i-really-really-mean-it") })
	return pool
}

// REMOVE_ACTION=trash moves the image to the rbd trash (recoverable); keep leaves it in place.
func TestProtocolRemoveActions(t *testing.T) {
	t.Parallel()
	l := labEnv(t)
	trash := newPlugin(t, l, "host-a", "REMOVE_ACTION=trash")
	trash.start()
	name := uniq("trash")
	trash.create(name, map[string]string{"size": "32M"})
	trash.remove(name)
	if !strings.Contains(l.admin(t, "rbd", "trash", "ls", l.pool), name) {
		t.Fatalf("%s not in the trash of %s", name, l.pool)
	}
	if strings.Contains(l.admin(t, "rbd", "ls", l.pool), name) {
		t.Fatalf("%s still listed in %s", name, l.pool)
	}
	trash.stop()

	keep := newPlugin(t, l, "host-b", "REMOVE_ACTION=keep")
	keep.start()
	name = uniq("keep")
	keep.create(name, map[string]string{"size": "32M"})
	keep.remove(name)
	// keep: Docker forgets the volume, the image stays as NAME~removed-TIME.
	kept := ""
	for _, img := range strings.Fields(l.admin(t, "rbd", "ls", l.pool)) {
		if img == name {
			t.Fatalf("REMOVE_ACTION=keep left %s under its name: Docker would still list it", name)
		}
		if strings.HasPrefix(img, name+"~removed-") {
			kept = img
		}
	}
	if kept == "" {
		t.Fatalf("REMOVE_ACTION=keep removed %s", name)
	}
	if msg := keep.fail("/VolumeDriver.Get", map[string]string{"Name": name}); !strings.Contains(msg, "not found") {
		t.Fatalf("Get after Remove with keep: %q, want not found", msg)
	}
	l.admin(t, "rbd", "rm", l.pool+"/"+kept)
}
