//go:build integration

package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/rbd"
)

// Two plugin instances with the same NODE_NAME (two machines cloned with one hostname) on one
// Ceph, each with its own STATE_DIR: they are two hosts. The second is refused while the first
// holds the volume, by a message naming the volume and the holder by name and identity; the
// refused Mount (and Docker's Unmount after it) leaves the first host's claim alone; once the
// first lets go, the second mounts and reads its data. With each backend.
func TestSameNodeName(t *testing.T) {
	t.Parallel()
	eachBackend(t, labEnv(t), testSameNodeName)
}

func testSameNodeName(t *testing.T, be backend) {
	l := labEnv(t)
	node := uniq("twin")
	a := newPlugin(t, l, node, be.env...)
	b := newPlugin(t, l, node, be.env...)
	a.start()
	b.start()
	idA, idB := a.hostID(), b.hostID()
	if idA == idB {
		t.Fatalf("two STATE_DIRs, one host identity %s", idA)
	}
	name := uniq("samename")
	a.create(name, map[string]string{"size": "1G"})
	t.Cleanup(func() { _ = b.try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil) })

	pathA := a.mount(name, "a1")
	dataA := randomData(t, 1<<20)
	writeFile(t, filepath.Join(pathA, "from-a.bin"), dataA)

	// The holder recorded its clients (its own connection and its rbd-fuse daemon) under its
	// identity, for a host that may have to fence it.
	admin := adminCluster(t, l)
	spec := rbd.Spec{Pool: be.pool, Image: be.image(a, name)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rec, ok, err := admin.Holder(ctx, spec)
	if err != nil || !ok || rec.ID != idA || rec.Host != node || len(rec.Clients) < 2 {
		t.Fatalf("holder record of %s = %+v, %v, %v; want %s's identity with its connection and its mapping's client", spec, rec, ok, err, node)
	}
	t.Logf("holder record: %s (host ID %s), clients %v", rec.Host, driver.ShortHostID(rec.ID), rec.Clients)

	msg := b.fail("/VolumeDriver.Mount", map[string]string{"Name": name, "ID": "b1"})
	t.Logf("the second %s's Mount: %s", node, msg)
	for _, want := range []string{name, node, driver.ShortHostID(idA), "NODE_NAME", "LOCK_BREAK"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("refusal %q does not say %q", msg, want)
		}
	}
	// Docker calls Unmount after a failed Mount: it must not release the first host's claim.
	b.call("/VolumeDriver.Unmount", map[string]string{"Name": name, "ID": "b1"}, nil)
	b.assertClean()
	if n := b.mappingsOf(be.pool, be.image(a, name)); n != 0 {
		t.Fatalf("the refused host maps the volume %d times", n)
	}
	holder, _ := b.get(name).Volume.Status["holder"].(string)
	if !strings.Contains(holder, node) || !strings.Contains(holder, driver.ShortHostID(idA)) {
		t.Fatalf("Get on the second host: holder %q, want %s with identity %s", holder, node, driver.ShortHostID(idA))
	}
	// Still the first host's: the second is refused again, and the first keeps writing.
	writeFile(t, filepath.Join(pathA, "from-a-2.bin"), dataA)
	if msg := b.fail("/VolumeDriver.Mount", map[string]string{"Name": name, "ID": "b2"}); !strings.Contains(msg, driver.ShortHostID(idA)) {
		t.Fatalf("second refusal: %q", msg)
	}

	a.unmount(name, "a1")
	a.assertClean()
	be.assertReleased(a, name)
	pathB := b.mount(name, "b3")
	got, err := os.ReadFile(filepath.Join(pathB, "from-a.bin"))
	if err != nil || sha256.Sum256(got) != sha256.Sum256(dataA) {
		t.Fatalf("the second host reads the first's data: %v", err)
	}
	msg = a.fail("/VolumeDriver.Mount", map[string]string{"Name": name, "ID": "a2"})
	if !strings.Contains(msg, driver.ShortHostID(idB)) || !strings.Contains(msg, name) {
		t.Fatalf("the first host's Mount while the second holds the volume: %q", msg)
	}
	b.unmount(name, "b3")
	b.assertClean()
	be.assertReleased(b, name)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	if _, ok, err := admin.Holder(ctx2, spec); err != nil || ok {
		t.Fatalf("holder record after the last release: present %v, %v", ok, err)
	}
}

// hostID is the identity the plugin keeps in its STATE_DIR.
func (p *plugin) hostID() string {
	p.t.Helper()
	raw, err := os.ReadFile(filepath.Join(p.dir, "state", driver.HostIDFile))
	if err != nil {
		p.t.Fatal(err)
	}
	var h driver.HostID
	if err := json.Unmarshal(raw, &h); err != nil || !driver.ValidHostID(h.ID) {
		p.t.Fatalf("host identity %q: %v", raw, err)
	}
	return h.ID
}
