//go:build integration

package main

import (
	"crypto/sha256"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cephdocker/ceph-docker-plugin/cinder"
	"github.com/cephdocker/ceph-docker-plugin/plugin/plugintest"
)

// cinderEnv returns the plugin settings for BACKEND=cinder against the lab Keystone + Cinder.
func cinderEnv(t *testing.T) []string {
	t.Helper()
	return append(plugintest.MustOpenStack(t).Settings(), "BACKEND=cinder")
}

// openstackCLI runs the openstack CLI as the plugin's Keystone user and decodes its JSON.
func openstackCLI(t *testing.T, out any, args ...string) {
	t.Helper()
	cmd := exec.Command("/usr/bin/openstack", append(args, "-f", "json")...)
	cmd.Env = append(os.Environ(), "OS_VOLUME_API_VERSION=3.54")
	raw, err := cmd.Output()
	if err != nil {
		t.Fatalf("openstack %v: %v", args, err)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		t.Fatalf("openstack %v: %v\n%s", args, err, raw)
	}
}

// The protocol lifecycle with BACKEND=cinder; while mounted, Cinder shows the volume in-use,
// attached to this host for the container (derived UUID, full ID as the mount point).
func TestProtocolLifecycleCinder(t *testing.T) {
	t.Parallel()
	l := labEnv(t)
	p := newPlugin(t, l, "host-a", cinderEnv(t)...)
	p.start()
	name := uniq("cinder")
	p.create(name, map[string]string{"size": "1G", "fstype": "ext4", "volume-type": "rbd"})
	t.Cleanup(func() { _ = p.try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil) })
	p.create(name, map[string]string{"size": "1G"}) // idempotent

	g := p.get(name)
	st := g.Volume.Status
	id, _ := st["cinder-id"].(string)
	if st["size"] != "1G" || st["fstype"] != "ext4" || id == "" || st["cinder-status"] != "available" || st["volume-type"] != "rbd" {
		t.Fatalf("get = %+v", g.Volume)
	}

	const c1 = "c1aa0000000000000000000000000000000000000000000000000000000000c1"
	path := p.mount(name, c1)
	path2 := p.mount(name, "c2")
	if path != path2 {
		t.Fatalf("paths %s %s", path, path2)
	}
	if n := p.mappingsOf("cinder", "volume-"+id); n != 1 {
		t.Fatalf("%d mappings of volume-%s, want 1", n, id)
	}
	var show struct {
		Status      string
		Attachments []map[string]any
	}
	openstackCLI(t, &show, "volume", "show", id)
	if show.Status != "in-use" || len(show.Attachments) != 1 {
		t.Fatalf("cinder shows %+v", show)
	}
	a := show.Attachments[0]
	// (Cinder's attachments API leaves host_name empty: the host, by name and identity, is in
	// the mount point.)
	if device := "docker:host-a/" + p.hostID() + "/" + c1; a["server_id"] != cinder.InstanceUUID(c1) || a["device"] != device {
		t.Fatalf("attachment %v: want server %s, device %s", a, cinder.InstanceUUID(c1), device)
	}
	data := randomData(t, 1<<20)
	writeFile(t, filepath.Join(path, "data.bin"), data)
	msg := p.fail("/VolumeDriver.Remove", map[string]string{"Name": name})
	if !strings.Contains(msg, "in use") {
		t.Fatalf("remove while mounted: %q", msg)
	}
	p.unmount(name, c1)
	p.unmount(name, "c2")
	p.assertClean()
	openstackCLI(t, &show, "volume", "show", id)
	if show.Status != "available" || len(show.Attachments) != 0 {
		t.Fatalf("after unmount cinder shows %+v", show)
	}

	path = p.mount(name, "c3")
	got, err := os.ReadFile(filepath.Join(path, "data.bin"))
	if err != nil || sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("data after remount: %v", err)
	}
	p.unmount(name, "c3")
	p.remove(name)
	if msg := p.fail("/VolumeDriver.Get", map[string]string{"Name": name}); !strings.Contains(msg, "not found") && !strings.Contains(msg, "no volume named") {
		t.Fatalf("get after remove: %q", msg)
	}
	p.assertClean()
}

// Wrong password: a clear error naming Keystone and the user, never the password.
func TestCinderWrongPassword(t *testing.T) {
	t.Parallel()
	l := labEnv(t)
	env := cinderEnv(t)
	const secret = "not-the-password-9f1c"
	p := newPlugin(t, l, "host-a", append(env, "OS_PASSWORD="+secret)...)
	p.start()
	msg := p.fail("/VolumeDriver.Get", map[string]string{"Name": "anything"})
	if !strings.Contains(msg, "refused the credentials") || !strings.Contains(msg, os.Getenv("OS_USERNAME")) {
		t.Fatalf("wrong password: %q", msg)
	}
	if strings.Contains(msg, secret) || strings.Contains(p.logs(), secret) {
		t.Fatal("the password appears in the error or the logs")
	}
}
