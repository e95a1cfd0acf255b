//go:build integration

package main

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/rbd"
	"github.com/cephdocker/ceph-docker-plugin/rbd/fuse"
)

// Two plugin instances as two hosts (own sockets, state, mount roots and cephx client instances)
// on one Ceph: one host at a time; an explicit, fenced takeover from a dead host. With each
// backend: with Cinder the claim is the Cinder attachment, and the takeover deletes the dead
// host's attachment after fencing its Ceph clients.
func TestTwoHosts(t *testing.T) {
	t.Parallel()
	eachBackend(t, labEnv(t), testTwoHosts)
}

func testTwoHosts(t *testing.T, be backend) {
	l := labEnv(t)
	a := newPlugin(t, l, "host-a", be.env...)
	b := newPlugin(t, l, "host-b", be.env...)
	a.start()
	b.start()
	name := uniq("twohost")
	a.create(name, map[string]string{"size": "1G"})
	t.Cleanup(func() { _ = b.try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil) })

	// B sees the volume A created (Get/List are cluster-wide).
	if g := b.get(name); g.Volume.Name != name {
		t.Fatalf("host-b get = %+v", g)
	}

	pathA := a.mount(name, "a1")
	dataA := randomData(t, 1<<20)
	writeFile(t, filepath.Join(pathA, "from-a.bin"), dataA)

	msg := b.fail("/VolumeDriver.Mount", map[string]string{"Name": name, "ID": "b1"})
	if !strings.Contains(msg, "host-a") || !strings.Contains(msg, name) || !strings.Contains(msg, "LOCK_BREAK") {
		t.Fatalf("host-b mount while host-a holds it: %q", msg)
	}
	if g := b.get(name); g.Volume.Status["holder"] == nil || !strings.Contains(g.Volume.Status["holder"].(string), "host-a") {
		t.Fatalf("host-b get does not name the holder: %+v", g.Volume.Status)
	}
	msg = b.fail("/VolumeDriver.Remove", map[string]string{"Name": name})
	if !strings.Contains(msg, "in use") || !strings.Contains(msg, "host-a") {
		t.Fatalf("host-b remove while host-a holds it: %q", msg)
	}
	b.assertClean() // the refusal left nothing behind

	a.unmount(name, "a1")
	a.assertClean()
	pathB := b.mount(name, "b1")
	got, err := os.ReadFile(filepath.Join(pathB, "from-a.bin"))
	if err != nil || sha256.Sum256(got) != sha256.Sum256(dataA) {
		t.Fatalf("host-b reads host-a's data: %v", err)
	}
	dataB := randomData(t, 1<<20)
	writeFile(t, filepath.Join(pathB, "from-b.bin"), dataB)
	b.unmount(name, "b1")
	b.assertClean()

	// host-a takes it again and its plugin dies (killed; its mapping stays, still connected).
	pathA = a.mount(name, "a2")
	admin := adminCluster(t, l)
	spec := rbd.Spec{Pool: be.pool, Image: be.image(a, name)}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second) // the takeover below waits up to 35 s
	defer cancel()
	var clientsA []string
	if be.name == "rbd" {
		lockers, err := admin.Lockers(ctx, spec)
		if err != nil || len(lockers) != 1 || !strings.Contains(lockers[0].Cookie, "host-a") {
			t.Fatalf("host lock while host-a holds the volume: %+v, %v", lockers, err)
		}
		clientsA = append(clientsA, lockers[0].Addr)
	}
	watchers, err := admin.OtherWatchers(ctx, spec)
	if err != nil || len(watchers) == 0 {
		t.Fatalf("watchers while host-a maps the volume: %+v, %v", watchers, err)
	}
	for _, w := range watchers {
		clientsA = append(clientsA, w.Addr)
	}
	a.kill9()

	msg = b.fail("/VolumeDriver.Mount", map[string]string{"Name": name, "ID": "b2"})
	if !strings.Contains(msg, "host-a") {
		t.Fatalf("host-b mount of a dead host's volume without LOCK_BREAK: %q", msg)
	}
	// host-a's mapping still answers Ceph (its watch on the image lives): host-a is alive, and
	// LOCK_BREAK=on does not take the volume from it. (CALL_TIMEOUT 14s: the wait for the watch
	// to lapse gives up after 4 s.)
	b.stop()
	b.start("LOCK_BREAK=on", "CALL_TIMEOUT=14s")
	msg = b.fail("/VolumeDriver.Mount", map[string]string{"Name": name, "ID": "b2"})
	if !strings.Contains(msg, "host-a") || !strings.Contains(msg, "alive") || !strings.Contains(msg, name) {
		t.Fatalf("host-b mount with LOCK_BREAK=on while host-a's mapping is alive: %q, want a refusal saying host-a is alive", msg)
	}
	for _, addr := range clientsA {
		if bl, err := admin.Blocklisted(ctx, addr); err != nil || bl {
			t.Errorf("host-a client %s blocklisted = %v, %v after a refused takeover", addr, bl, err)
		}
	}
	b.assertClean()
	// Now host-a becomes unreachable: its rbd-fuse daemons stop (SIGSTOP), their watch lapses
	// within 30 s, and the takeover goes ahead, fencing them.
	frozen := fuse.Daemons(a.fuseRoot())
	if len(frozen) == 0 {
		t.Fatal("host-a has no rbd-fuse daemon to freeze")
	}
	for _, pid := range frozen {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, pid := range frozen {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	})
	b.stop()
	b.start("LOCK_BREAK=on", "CALL_TIMEOUT=55s")
	start := time.Now()
	pathB = b.mount(name, "b2")
	t.Logf("host-b took the volume over %.1fs after host-a's clients froze", time.Since(start).Seconds())
	for _, pid := range frozen {
		_ = syscall.Kill(pid, syscall.SIGCONT) // back, but fenced
	}
	for _, addr := range clientsA {
		bl, err := admin.Blocklisted(ctx, addr)
		if err != nil || !bl {
			t.Errorf("host-a client %s blocklisted = %v, %v", addr, bl, err)
		}
	}
	if !strings.Contains(b.logs(), "took the volume over") {
		t.Errorf("host-b did not log the takeover")
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{"from-a.bin", dataA}, {"from-b.bin", dataB}} {
		got, err := os.ReadFile(filepath.Join(pathB, f.name))
		if err != nil || sha256.Sum256(got) != sha256.Sum256(f.data) {
			t.Fatalf("host-b after takeover reads %s: %v", f.name, err)
		}
	}
	// host-a's mapping is fenced: what it writes does not reach the cluster.
	done := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(filepath.Join(pathA, "late.bin"), os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			_, err = f.Write(randomData(t, 64<<10))
			if err == nil {
				err = f.Sync()
			}
			f.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Error("host-a wrote and synced after being fenced")
		} else {
			t.Logf("host-a's write after fencing: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Log("host-a's write after fencing did not complete in 20s (blocked, as fenced I/O does)")
	}
	b.unmount(name, "b2")
	b.assertClean()
	be.assertReleased(b, name)
}

func adminCluster(t *testing.T, l lab) *rbd.Cluster {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := rbd.Connect(ctx, rbd.Config{ConfPath: l.conf, User: "admin", Keyring: l.adminKeyring})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}
