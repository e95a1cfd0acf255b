//go:build integration

package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/rbd"
)

// roBackend is a backend of the read-only sharing test, with how an operator switches a
// volume's access there.
type roBackend struct {
	backend
	// setAccess stores access (driver.AccessReadOnly, AccessReadWrite) as the volume's.
	setAccess func(t *testing.T, p *plugin, name, access string)
	// claims lists the backend's claims on the volume, for the test to check what is left.
	claims func(t *testing.T, p *plugin, name string) []roClaim
	// deadReader is what a read-write Mount refused beside readers says to run for a dead one.
	deadReader string
}

// roClaim is one host's claim on a volume as the backend records it.
type roClaim struct {
	Holder string // names the host (rbd: the host lock's cookie)
	Shared bool   // a read-only claim
	Addr   string // the Ceph client that holds it, "" when the backend does not say
}

// readOnlyBackends are the backends this test runs with. BACKEND=cinder has its own test of the
// same sequence (readonly_cinder_integration_test.go): its claims are Cinder attachments, and
// readers need a multiattach volume type.
func readOnlyBackends(t *testing.T, l lab) []roBackend {
	admin := adminCluster(t, l)
	spec := func(p *plugin, name string) rbd.Spec { return rbd.Spec{Pool: l.pool, Image: name} }
	return []roBackend{{
		backend:    backend{name: "rbd", pool: l.pool},
		deadReader: "rados -p POOL lock break rbd_header.ID " + rbd.HostLockName,
		setAccess: func(t *testing.T, p *plugin, name, access string) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := admin.SetMetas(ctx, spec(p, name), map[string]string{driver.MetaAccess: access}); err != nil {
				t.Fatal(err)
			}
		},
		claims: func(t *testing.T, p *plugin, name string) []roClaim {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ls, err := admin.Lockers(ctx, spec(p, name))
			if err != nil {
				t.Fatal(err)
			}
			out := make([]roClaim, 0, len(ls))
			for _, l := range ls {
				out = append(out, roClaim{Holder: l.Cookie, Shared: l.Shared, Addr: l.Addr})
			}
			return out
		},
	}}
}

// Read-only sharing with plugin instances as hosts (must-show 3): a volume filled read-write and
// switched to readonly is mounted by two hosts at once, which read the same checksum and cannot
// write; a read-write Mount is refused naming both readers (with LOCK_BREAK=on too, fencing
// nobody); and the reverse: while a host writes it, a read-only Mount is refused naming the
// writer. Nothing is left behind.
func TestReadOnlySharing(t *testing.T) {
	t.Parallel()
	l := labEnv(t)
	for _, be := range readOnlyBackends(t, l) {
		t.Run(be.name, func(t *testing.T) { t.Parallel(); testReadOnlySharing(t, l, be) })
	}
}

func testReadOnlySharing(t *testing.T, l lab, be roBackend) {
	a := newPlugin(t, l, "host-a", be.env...)
	b := newPlugin(t, l, "host-b", be.env...)
	c := newPlugin(t, l, "host-c", append(be.env, "LOCK_BREAK=on")...)
	a.start()
	b.start()
	c.start()
	name := uniq("rosh")
	a.create(name, map[string]string{"size": "256M"})
	t.Cleanup(func() { _ = a.try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil) })

	// Filled read-write by host-a, cleanly unmounted.
	data := randomData(t, 1<<20)
	want := sha256.Sum256(data)
	writeFile(t, filepath.Join(a.mount(name, "fill"), "data.bin"), data)
	a.unmount(name, "fill")
	a.assertClean()

	be.setAccess(t, a, name, driver.AccessReadOnly)
	paths := map[*plugin]string{a: a.mount(name, "a1"), b: b.mount(name, "b1")}
	for p, path := range paths {
		got, err := os.ReadFile(filepath.Join(path, "data.bin"))
		if err != nil || sha256.Sum256(got) != want {
			t.Fatalf("%s reads the data read-only: %v (checksum matches: %v)", p.name, err, err == nil && sha256.Sum256(got) == want)
		}
		err = os.WriteFile(filepath.Join(path, "write.bin"), []byte("x"), 0o644)
		if !errors.Is(err, syscall.EROFS) {
			t.Fatalf("%s writes through its read-only mount: %v, want EROFS", p.name, err)
		}
		if !isMounted(t, path) {
			t.Fatalf("%s: %s not mounted", p.name, path)
		}
	}
	t.Logf("host-a and host-b both read sha256 %x read-only", want[:8])
	lockers := be.claims(t, a, name)
	if len(lockers) != 2 || !lockers[0].Shared || !lockers[1].Shared {
		t.Fatalf("claims while two hosts read: %+v, want two shared", lockers)
	}
	holder, _ := c.get(name).Volume.Status["holder"].(string)
	if !strings.HasPrefix(holder, "read-only by ") || !strings.Contains(holder, "host-a") || !strings.Contains(holder, "host-b") {
		t.Errorf("docker volume inspect on host-c: holder %q, want both readers", holder)
	}

	// A read-write Mount (the access switched back while both read) is refused naming both
	// readers, with LOCK_BREAK=on too, and fences nobody.
	be.setAccess(t, a, name, driver.AccessReadWrite)
	msg := c.fail("/VolumeDriver.Mount", map[string]string{"Name": name, "ID": "c1"})
	for _, s := range []string{name, "held read-only by", "host-a", "host-b", be.deadReader} {
		if !strings.Contains(msg, s) {
			t.Errorf("host-c's read-write Mount beside readers: %q does not say %q", msg, s)
		}
	}
	t.Logf("host-c refused: %s", msg)
	c.assertClean()
	admin := adminCluster(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, lk := range lockers {
		if lk.Addr == "" {
			continue
		}
		if bl, err := admin.Blocklisted(ctx, lk.Addr); err != nil || bl {
			t.Errorf("reader %s blocklisted = %v, %v after a refused read-write Mount", lk.Addr, bl, err)
		}
	}
	if got := be.claims(t, a, name); len(got) != 2 {
		t.Errorf("claims after the refusal: %+v, want the two readers'", got)
	}
	// host-b's plugin dies and starts again (its mapping stays): its reconcile recognises its
	// shared claim as its own and keeps it read-only, though the access now says readwrite.
	b.kill9()
	b.start()
	if strings.Contains(b.logs(), "could not repair") {
		t.Errorf("host-b's restart did not keep its read-only claim:\n%s", b.logs())
	}
	if got := be.claims(t, a, name); len(got) != 2 || !got[0].Shared || !got[1].Shared {
		t.Errorf("claims after host-b's restart: %+v, want the two readers'", got)
	}
	// The readers keep reading (their claim and mapping are what they were).
	if got, err := os.ReadFile(filepath.Join(paths[b], "data.bin")); err != nil || sha256.Sum256(got) != want {
		t.Errorf("host-b reads after host-c's refusal and its restart: %v", err)
	}
	if err := os.WriteFile(filepath.Join(paths[b], "write.bin"), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("host-b writes after its restart: %v, want EROFS", err)
	}
	a.unmount(name, "a1")
	b.unmount(name, "b1")
	for _, p := range []*plugin{a, b, c} {
		p.assertClean()
	}
	if got := be.claims(t, a, name); len(got) != 0 {
		t.Fatalf("claims after both readers unmounted: %+v", got)
	}

	// The reverse: host-a holds it read-write; a read-only Mount on host-b is refused naming it.
	pathA := a.mount(name, "a2")
	writeFile(t, filepath.Join(pathA, "more.bin"), randomData(t, 64<<10))
	be.setAccess(t, a, name, driver.AccessReadOnly)
	msg = b.fail("/VolumeDriver.Mount", map[string]string{"Name": name, "ID": "b2"})
	for _, s := range []string{name, "in use read-write by host host-a", "never takes a volume over"} {
		if !strings.Contains(msg, s) {
			t.Errorf("host-b's read-only Mount beside a writer: %q does not say %q", msg, s)
		}
	}
	t.Logf("host-b refused: %s", msg)
	b.assertClean()
	if got := be.claims(t, a, name); len(got) != 1 || got[0].Shared || !strings.Contains(got[0].Holder, "host-a") {
		t.Errorf("claims while host-a writes: %+v, want host-a's exclusive one", got)
	}
	a.unmount(name, "a2")
	a.assertClean()
	be.assertReleased(a, name)
	if got := be.claims(t, a, name); len(got) != 0 {
		t.Fatalf("claims left: %+v", got)
	}
}
