//go:build integration

package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/attachments"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/rbd"
	"github.com/cephdocker/ceph-docker-plugin/rbd/fuse"
)

// Read-only sharing with BACKEND=cinder (must-show 3), three plugin instances as three hosts on a
// multiattach volume type: host-a fills a volume read-write; switched to readonly (the volume
// property docker-plugin.access, set through Cinder's API as the plugin's Keystone user), host-a
// and host-b both mount it, each through a read-only Cinder attachment and a read-only mapping,
// and read the same checksum; a write through the mount fails with EROFS; switched back to
// readwrite while both hold it, host-c's Mount is refused naming host-a and host-b; and the
// reverse: while host-a holds it read-write, host-b's read-only Mount is refused naming host-a.
// Nothing is left behind: attachments, mappings, loop devices, mounts, the volume.
func TestCinderReadOnlySharing(t *testing.T) {
	l := labEnv(t)
	env := cinderEnv(t)
	a, b, c := newPlugin(t, l, "host-a", env...), newPlugin(t, l, "host-b", env...), newPlugin(t, l, "host-c", env...)
	for _, p := range []*plugin{a, b, c} {
		p.start()
	}
	cs := blockStorage(t)
	name := uniq("rosh")
	a.create(name, map[string]string{"size": "1G", "volume-type": "rbd-multiattach"})
	id := cinderVolumeGone(t, cs, a, name)

	// host-a fills it read-write and lets it go.
	pa := a.mount(name, "a1")
	data := randomData(t, 4<<20)
	writeFile(t, filepath.Join(pa, "data.bin"), data)
	sum := sha256.Sum256(data)
	a.unmount(name, "a1")
	a.assertClean()

	// Read-only: both hosts read it at once.
	setAccess(t, cs, id, driver.AccessReadOnly)
	pa = a.mount(name, "a2")
	pb := b.mount(name, "b1")
	for _, h := range []struct {
		p    *plugin
		path string
	}{{a, pa}, {b, pb}} {
		got, err := os.ReadFile(filepath.Join(h.path, "data.bin"))
		if err != nil || sha256.Sum256(got) != sum {
			t.Fatalf("%s reads data.bin: %v (checksum matches: %v)", h.p.name, err, err == nil && sha256.Sum256(got) == sum)
		}
		assertReadOnlyMapping(t, h.p)
		err = os.WriteFile(filepath.Join(h.path, "late.bin"), []byte("x"), 0o644)
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s writes through its read-only mount: %v, want EROFS", h.p.name, err)
		}
	}
	assertAttachments(t, cs, id, "while two hosts read", "ro", "ro")
	// On the Ceph side: no host lock, while both hosts' rbd-fuse watch the image.
	assertNoHostLock(t, l, id)
	admin := adminCluster(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if ws, err := admin.OtherWatchers(ctx, rbd.Spec{Pool: cinderPool, Image: "volume-" + id}); err != nil || len(ws) < 2 {
		t.Errorf("watchers while two hosts read: %+v, %v: want both hosts' mappings", ws, err)
	}
	holder, _ := c.get(name).Volume.Status["holder"].(string)
	t.Logf("host-c's inspect: holder %q", holder)
	if !strings.Contains(holder, "host host-a") || !strings.Contains(holder, "host host-b") || strings.Count(holder, "read-only") != 2 {
		t.Errorf("host-c's inspect names the holders %q: want host-a and host-b, read-only", holder)
	}

	// Back to readwrite while both read: a writer is refused, naming both readers.
	setAccess(t, cs, id, driver.AccessReadWrite)
	msg := c.fail("/VolumeDriver.Mount", map[string]string{"Name": name, "ID": "c1"})
	if !strings.Contains(msg, name) || !strings.Contains(msg, "read-only") || !strings.Contains(msg, "host host-a") || !strings.Contains(msg, "host host-b") {
		t.Fatalf("host-c's read-write Mount while host-a and host-b read: %q, want a refusal naming both readers", msg)
	}
	t.Logf("host-c's read-write Mount while host-a and host-b read: %s", msg)
	c.assertClean()
	assertAttachments(t, cs, id, "after host-c's refusal", "ro", "ro")
	a.unmount(name, "a2")
	b.unmount(name, "b1")
	a.assertClean()
	b.assertClean()
	cinderBackend.assertReleased(a, name)

	// The reverse: host-a writes it; switched to readonly meanwhile, host-b's read-only Mount is
	// refused naming host-a.
	pa = a.mount(name, "a3")
	writeFile(t, filepath.Join(pa, "more.bin"), randomData(t, 64<<10))
	setAccess(t, cs, id, driver.AccessReadOnly)
	msg = b.fail("/VolumeDriver.Mount", map[string]string{"Name": name, "ID": "b2"})
	if !strings.Contains(msg, name) || !strings.Contains(msg, "read-write") || !strings.Contains(msg, "host host-a") {
		t.Fatalf("host-b's read-only Mount while host-a writes: %q, want a refusal naming host-a", msg)
	}
	t.Logf("host-b's read-only Mount while host-a writes: %s", msg)
	b.assertClean()
	assertAttachments(t, cs, id, "after host-b's refusal", "rw")
	release(a, name, "a3")
}

// A read-only volume of a type that is not multiattach: Cinder attaches it to one host at a time,
// and a second reader is refused saying so, naming the first, and to use a multiattach type.
func TestCinderReadOnlyNotMultiattach(t *testing.T) {
	l := labEnv(t)
	env := cinderEnv(t)
	a, b := newPlugin(t, l, "host-a", env...), newPlugin(t, l, "host-b", env...)
	a.start()
	b.start()
	cs := blockStorage(t)
	name := uniq("rosingle")
	a.create(name, map[string]string{"size": "1G", "volume-type": "rbd"})
	id := cinderVolumeGone(t, cs, a, name)
	a.mount(name, "a1") // formats it
	a.unmount(name, "a1")
	setAccess(t, cs, id, driver.AccessReadOnly)
	pa := a.mount(name, "a2")
	if _, err := os.ReadDir(pa); err != nil {
		t.Fatal(err)
	}
	assertReadOnlyMapping(t, a)
	assertNoHostLock(t, l, id)
	msg := b.fail("/VolumeDriver.Mount", map[string]string{"Name": name, "ID": "b1"})
	for _, want := range []string{name, "read-only", "host host-a", "not multiattach", "multiattach volume type (-o volume-type="} {
		if !strings.Contains(msg, want) {
			t.Errorf("host-b's Mount of a read-only volume host-a reads, type rbd: %q does not say %q", msg, want)
		}
	}
	t.Logf("host-b's Mount of a read-only volume of type rbd that host-a reads: %s", msg)
	b.assertClean()
	assertAttachments(t, cs, id, "after host-b's refusal", "ro")
	release(a, name, "a2")
}

// cinderBackend is the Cinder backend as the protocol-level tests see it.
var cinderBackend = backend{name: "cinder", pool: cinderPool}

// cinderVolumeGone returns the Cinder ID of volume name, and makes sure at the end of the test
// that the volume is gone: removed by the test, or else by p, or else deleted through cs.
func cinderVolumeGone(t *testing.T, cs *gophercloud.ServiceClient, p *plugin, name string) string {
	t.Helper()
	id := strings.TrimPrefix(cinderBackend.image(p, name), "volume-")
	t.Cleanup(func() {
		if p.try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil) == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for _, a := range cinderAttachments(t, cs, id) {
			_ = attachments.Delete(ctx, cs, a.ID).ExtractErr()
		}
		if err := volumes.Delete(ctx, cs, id, volumes.DeleteOpts{}).ExtractErr(); err != nil && !gophercloud.ResponseCodeIs(err, 404) {
			t.Errorf("delete Cinder volume %s (%s) left by the test: %v", id, name, err)
		}
	})
	return id
}

// setAccess sets the volume's docker-plugin.access property, as `openstack volume set --property`
// does (Cinder's volume update with the volume's metadata), as the plugin's Keystone user.
func setAccess(t *testing.T, cs *gophercloud.ServiceClient, id, access string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := volumes.Get(ctx, cs, id).Extract()
	if err != nil {
		t.Fatalf("Cinder volume %s: %v", id, err)
	}
	meta := v.Metadata
	meta[driver.MetaAccess] = access
	if _, err := volumes.Update(ctx, cs, id, volumes.UpdateOpts{Metadata: meta}).Extract(); err != nil {
		t.Fatalf("set %s=%s on Cinder volume %s: %v", driver.MetaAccess, access, id, err)
	}
}

// assertReadOnlyMapping fails unless the host maps exactly one image, read-only (the fuse
// mapper's loop device).
func assertReadOnlyMapping(t *testing.T, p *plugin) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	maps, err := fuse.New(p.fuseRoot(), "", "").List(ctx)
	if err != nil || len(maps) != 1 || !maps[0].ReadOnly {
		t.Fatalf("%s's mappings %+v, %v: want one, read-only", p.name, maps, err)
	}
}

// assertNoHostLock fails unless Cinder volume id's image has no host lock (rbd.HostLockName): in
// Cinder mode the claim is the attachment, and nothing locks the image for a read-only one.
func assertNoHostLock(t *testing.T, l lab, id string) {
	t.Helper()
	admin := adminCluster(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	spec := rbd.Spec{Pool: cinderPool, Image: "volume-" + id}
	if lockers, err := admin.Lockers(ctx, spec); err != nil || len(lockers) != 0 {
		t.Errorf("host locks of %s read-only: %+v, %v", spec, lockers, err)
	}
	if info, err := admin.Info(ctx, spec); err == nil {
		t.Logf("image %s: features %v", spec, info.Features)
	}
}

// assertAttachments fails unless Cinder volume id's attachments are completed ones of the modes
// given (in any order), when (for the message).
func assertAttachments(t *testing.T, cs *gophercloud.ServiceClient, id, when string, modes ...string) {
	t.Helper()
	var got []string
	for _, a := range cinderAttachments(t, cs, id) {
		got = append(got, a.AttachMode+" "+a.Status)
	}
	var want []string
	for _, m := range modes {
		want = append(want, m+" attached")
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("attachments of Cinder volume %s %s: %q, want %q", id, when, got, want)
	}
}

// release unmounts the last use (mount ID id) of volume name on p, checks that nothing is left on
// p's host nor in Cinder (no attachment, status available), and removes the volume.
func release(p *plugin, name, id string) {
	p.t.Helper()
	p.unmount(name, id)
	p.assertClean()
	cinderBackend.assertReleased(p, name)
	p.remove(name)
}
