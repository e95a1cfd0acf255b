// Package drivertest is the conformance suite every driver.Provisioner passes (direct RBD and
// Cinder), against the real service: the same cases, the same expectations, so that the
// driver's semantics do not depend on the backend.
package drivertest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/plugin/plugintest"
)

// Harness builds provisioners, one per simulated host.
type Harness struct {
	// New returns a provisioner acting for host.
	New func(t *testing.T, host string) driver.Provisioner
	// Options are backend options for Create (e.g. a volume type); may be nil.
	Options map[string]string
	// Kept returns the backend's names of what Remove with RemoveKeep left of the volume name
	// (images or Cinder volumes named driver.KeptName(name, ...)), and deletes them at cleanup.
	Kept func(t *testing.T, name string) []string
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	t.Run("CreateGetListRemove", func(t *testing.T) { createGetListRemove(t, h) })
	t.Run("OneHostAtATime", func(t *testing.T) { oneHostAtATime(t, h) })
	t.Run("MissingVolume", func(t *testing.T) { missingVolume(t, h) })
	t.Run("RemoveKeep", func(t *testing.T) { removeKeep(t, h) })
	t.Run("FrontEndRecorded", func(t *testing.T) { frontEndRecorded(t, h) })
}

func ctx(t *testing.T) context.Context { return plugintest.Context(t, 90*time.Second) }

func uniq(prefix string) string { return plugintest.Uniq(prefix) }

func create(t *testing.T, h Harness, p driver.Provisioner, name string) {
	t.Helper()
	createAs(t, h, p, name, "")
}

// createAs creates through the given front end ("": none recorded).
func createAs(t *testing.T, h Harness, p driver.Provisioner, name, frontEnd string) {
	t.Helper()
	o := driver.Options{Size: 1 << 30, FSType: "ext4", MountOptions: "noatime", Backend: map[string]string{}, FrontEnd: frontEnd}
	for k, v := range h.Options {
		o.Backend[k] = v
	}
	if err := p.Create(ctx(t), name, o); err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		_ = p.Detach(c, name, driver.Attachment{})
		_ = p.Remove(c, name, driver.RemoveDelete)
	})
}

func createGetListRemove(t *testing.T, h Harness) {
	p := h.New(t, "host-a")
	name := uniq("conf")
	create(t, h, p, name)
	v, err := p.Get(ctx(t), name)
	if err != nil {
		t.Fatal(err)
	}
	if v.Name != name || v.Size != 1<<30 || v.FSType != "ext4" || v.MountOptions != "noatime" || v.Holder != "" {
		t.Fatalf("get = %+v", v)
	}
	err = p.Create(ctx(t), name, driver.Options{Size: 1 << 30, FSType: "ext4", Backend: h.Options})
	if !errors.Is(err, driver.ErrExists) {
		t.Fatalf("create again: %v, want ErrExists", err)
	}
	vols, err := p.List(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(vols, func(v driver.Volume) bool { return v.Name == name }) {
		t.Fatalf("list does not contain %s", name)
	}
	// Another host sees it too (Get and List are cluster-wide).
	if _, err := h.New(t, "host-b").Get(ctx(t), name); err != nil {
		t.Fatalf("host-b get: %v", err)
	}
	if err := p.Remove(ctx(t), name, driver.RemoveDelete); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Get(ctx(t), name); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("get after remove: %v, want ErrNotFound", err)
	}
}

// Remove with REMOVE_ACTION=keep: Docker forgets the volume (Get and List no longer see it, the
// name can be used again) and the backend keeps it under driver.KeptName.
func removeKeep(t *testing.T, h Harness) {
	p := h.New(t, "host-a")
	name := uniq("keep")
	create(t, h, p, name)
	if err := p.Remove(ctx(t), name, driver.RemoveKeep); err != nil {
		t.Fatalf("remove (keep): %v", err)
	}
	kept := h.Kept(t, name)
	if len(kept) != 1 || !strings.HasPrefix(kept[0], name+"~removed-") {
		t.Fatalf("after Remove (keep) the backend holds %q; want one %s~removed-<time>", kept, name)
	}
	if _, err := p.Get(ctx(t), name); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("get after remove (keep): %v, want ErrNotFound", err)
	}
	vols, err := p.List(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vols {
		if strings.HasPrefix(v.Name, name) {
			t.Fatalf("list after remove (keep) has %s", v.Name)
		}
	}
	// The name is free: a new volume, not the kept one.
	create(t, h, p, name)
	if v, err := p.Get(ctx(t), name); err != nil || v.Holder != "" {
		t.Fatalf("get of the new %s: %+v, %v", name, v, err)
	}
	if again := h.Kept(t, name); len(again) != 1 || again[0] != kept[0] {
		t.Fatalf("kept copies after the new Create: %q, want %q", again, kept)
	}
}

func oneHostAtATime(t *testing.T, h Harness) {
	a, b := h.New(t, "host-a"), h.New(t, "host-b")
	name := uniq("hold")
	create(t, h, a, name)
	att, err := a.Attach(ctx(t), name, driver.AttachRequest{Host: "host-a", MountID: "mount-a"})
	if err != nil {
		t.Fatal(err)
	}
	if att.Map.Pool == "" || att.Map.Image == "" || att.Map.User == "" || len(att.Map.Monitors) == 0 {
		t.Fatalf("attachment does not say what to map: %+v", att)
	}
	again, err := a.Attach(ctx(t), name, driver.AttachRequest{Host: "host-a", MountID: "mount-a"})
	if err != nil || again.Map.ImageSpec != att.Map.ImageSpec {
		t.Fatalf("attach again by the holder: %+v, %v", again, err)
	}
	if v, err := b.Get(ctx(t), name); err != nil || !strings.Contains(v.Holder, "host-a") {
		t.Fatalf("host-b sees holder %q (%v), want host-a named", v.Holder, err)
	}
	_, err = b.Attach(ctx(t), name, driver.AttachRequest{Host: "host-b", MountID: "mount-b"})
	if !errors.Is(err, driver.ErrBusyElsewhere) || !strings.Contains(err.Error(), "host-a") {
		t.Fatalf("host-b attach: %v, want ErrBusyElsewhere naming host-a", err)
	}
	if err := b.Remove(ctx(t), name, driver.RemoveDelete); !errors.Is(err, driver.ErrInUse) {
		t.Fatalf("remove while held: %v, want ErrInUse", err)
	}
	if err := a.Detach(ctx(t), name, att); err != nil {
		t.Fatal(err)
	}
	if err := a.Detach(ctx(t), name, att); err != nil {
		t.Fatalf("detach twice: %v", err)
	}
	var attB driver.Attachment
	deadline := time.Now().Add(60 * time.Second)
	for {
		attB, err = b.Attach(ctx(t), name, driver.AttachRequest{Host: "host-b", MountID: "mount-b"})
		if err == nil || time.Now().After(deadline) || !errors.Is(err, driver.ErrBusyElsewhere) {
			break
		}
		time.Sleep(500 * time.Millisecond) // a backend may release asynchronously
	}
	if err != nil {
		t.Fatalf("host-b attach after host-a detached: %v", err)
	}
	if err := b.Detach(ctx(t), name, attB); err != nil {
		t.Fatal(err)
	}
}

func missingVolume(t *testing.T, h Harness) {
	p := h.New(t, "host-a")
	name := uniq("missing")
	if _, err := p.Get(ctx(t), name); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("get: %v, want ErrNotFound", err)
	}
	if _, err := p.Attach(ctx(t), name, driver.AttachRequest{Host: "host-a", MountID: "m"}); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("attach: %v, want ErrNotFound", err)
	}
	if err := p.Remove(ctx(t), name, driver.RemoveDelete); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("remove: %v, want ErrNotFound", err)
	}
	if err := p.Detach(ctx(t), name, driver.Attachment{}); err != nil {
		t.Errorf("detach of a missing volume: %v, want success", err)
	}
}

// The front end a volume was created through is recorded with it and read back by every host
// (driver/frontend.go); a Create without one records nothing.
func frontEndRecorded(t *testing.T, h Harness) {
	p := h.New(t, "host-a")
	for _, fe := range []string{driver.FrontEndCSI, driver.FrontEndVolume, ""} {
		name := uniq("fe")
		createAs(t, h, p, name, fe)
		v, err := h.New(t, "host-b").Get(ctx(t), name)
		if err != nil {
			t.Fatal(err)
		}
		if v.FrontEnd != fe {
			t.Errorf("volume created through front end %q reads back as %q", fe, v.FrontEnd)
		}
	}
}
