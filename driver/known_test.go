package driver

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// While the backend is unreachable, Get answers for a volume it knew, with the error in its
// Status (dockerd would otherwise make a local volume of that name); unknown names still fail.
func TestGetAnswersFromMemoryWhileBackendUnreachable(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	if _, err := e.d.Get(bg, "v"); err != nil {
		t.Fatal(err)
	}
	e.prov.failAlways("Get", fmt.Errorf("%w: Cinder unreachable", ErrTimeout))
	info, err := e.d.Get(bg, "v")
	if err != nil {
		t.Fatalf("Get with the backend down: %v", err)
	}
	if info.Name != "v" || info.Status["size"] != "1G" || !strings.Contains(fmt.Sprint(info.Status["backend-error"]), "Cinder unreachable") {
		t.Fatalf("info = %+v", info)
	}
	if _, err := e.d.Get(bg, "never-seen"); !errors.Is(err, ErrTimeout) {
		t.Fatalf("unknown volume with the backend down: %v", err)
	}
	e.prov.failAlways("Get", fmt.Errorf("gone: %w", ErrNotFound))
	if _, err := e.d.Get(bg, "v"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("not found is not masked: %v", err)
	}
	e.prov.failAlways("Get", fmt.Errorf("%w: down", ErrTimeout))
	if _, err := e.d.Get(bg, "v"); err == nil {
		t.Fatal("a volume the backend said was gone is still answered from memory")
	}
}

// The names of the volumes seen survive a restart: while the backend is unreachable, Get of
// a known volume still answers (Docker would otherwise create a local volume of that name),
// and a volume removed is forgotten.
func TestKnownVolumesSurviveRestart(t *testing.T) {
	e := newTestDriver(t)
	e.cfg.Known = e.files
	d := New(e.cfg, e.prov, e.mapper, e.mounter, e.store)
	if err := d.Reconcile(bg); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b"} {
		if err := d.Create(bg, n, nil); err != nil {
			t.Fatal(err)
		}
	}
	e.prov.add("listed", 1<<30, "ext4")
	if _, err := d.List(bg); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(bg, "b"); err != nil {
		t.Fatal(err)
	}

	// Restart with the backend down.
	d2 := New(e.cfg, e.prov, e.mapper, e.mounter, e.store)
	if err := d2.Reconcile(bg); err != nil {
		t.Fatal(err)
	}
	down := fmt.Errorf("%w: cinder unreachable", ErrTimeout)
	for _, n := range []string{"a", "listed"} {
		e.prov.failNext("Get", down)
		info, err := d2.Get(bg, n)
		if err != nil || info.Name != n || info.Status["backend-error"] == nil {
			t.Errorf("Get %s after a restart with the backend down: %+v, %v", n, info, err)
		}
	}
	e.prov.failNext("Get", down)
	if _, err := d2.Get(bg, "b"); !errors.Is(err, ErrTimeout) {
		t.Errorf("Get of the removed volume b: %v, want the backend's error", err)
	}
}
