package driver

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// otherDriver is a second plugin on the same backend (and host) serving the other front end.
func (e *testEnv) otherDriver(t *testing.T, frontEnd string, mods ...func(*Config)) *Driver {
	t.Helper()
	cfg := e.cfg
	cfg.FrontEnd = frontEnd
	for _, mod := range mods {
		mod(&cfg)
	}
	files, err := NewFileStore(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	d := New(cfg, e.prov, e.mapper, e.mounter, files)
	if err := d.Reconcile(bg); err != nil {
		t.Fatal(err)
	}
	return d
}

func wantOther(t *testing.T, what string, err error, name string, mentions ...string) {
	t.Helper()
	if !errors.Is(err, ErrOtherFrontEnd) {
		t.Fatalf("%s: %v; want ErrOtherFrontEnd", what, err)
	}
	for _, m := range append([]string{"volume " + name + " "}, mentions...) {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("%s: %q does not mention %q", what, err, m)
		}
	}
}

// A cluster volume (made through CSI) is refused by the volume plugin on the same backend: Get
// (so that dockerd turns to the cluster volume), Mount, Remove and a Create of the same name;
// nothing is claimed, mapped or removed meanwhile. Its own front end serves it.
func TestFrontEndCSIVolumeRefusedByVolumePlugin(t *testing.T) {
	e := newTestDriver(t, func(c *Config) { c.FrontEnd = FrontEndCSI })
	if err := e.d.Create(bg, "c", map[string]string{"size": "1G"}); err != nil {
		t.Fatal(err)
	}
	if got := e.prov.createdOptions(); len(got) != 1 || got[0].FrontEnd != FrontEndCSI {
		t.Fatalf("Create recorded %+v; want FrontEnd csi", got)
	}
	vp := e.otherDriver(t, FrontEndVolume)

	_, err := vp.Get(bg, "c")
	wantOther(t, "Get", err, "c", "swarm cluster volumes", "PROTOCOL=csi", "swarm manager")
	m := e.rec.mark()
	_, err = vp.Mount(bg, "c", "ctr1")
	wantOther(t, "Mount", err, "c", "does not mount it")
	e.assertGone("c")
	if _, ok, _ := vp.state.Load("c"); ok {
		t.Errorf("the refused Mount left state behind")
	}
	wantOther(t, "Remove", vp.Remove(bg, "c"), "c", "does not remove it")
	if !e.prov.exists("c") {
		t.Fatal("the volume plugin removed the cluster volume")
	}
	err = vp.Create(bg, "c", nil)
	wantOther(t, "Create of the same name", err, "c", "create of the same name")
	if !errors.Is(err, ErrExists) {
		t.Errorf("Create of the same name: %v; want ErrExists too", err)
	}
	assertOps(t, "the refusals (Create is tried: the backend answers it exists)", e.rec.ops(m), "prov.Attach c", "prov.Detach c", "prov.Create c")

	// LOCK_BREAK=on: refused before Attach, which could fence the other front end's holder.
	lb := e.otherDriver(t, FrontEndVolume, func(c *Config) { c.LockBreak = true })
	m = e.rec.mark()
	_, err = lb.Mount(bg, "c", "ctr2")
	wantOther(t, "Mount with LOCK_BREAK=on", err, "c")
	assertOps(t, "Mount with LOCK_BREAK=on", e.rec.ops(m))

	// Its own front end mounts and removes it.
	e.mustMount("c", "csi:/s")
	e.mustUnmount("c", "csi:/s")
	if err := e.d.Remove(bg, "c"); err != nil {
		t.Fatal(err)
	}
}

// The reverse: a volume made through the volume plugin is refused by the CSI front end (the
// core's Describe, Mount, Remove and a create of the same name).
func TestFrontEndVolumeRefusedByCSI(t *testing.T) {
	e := newTestDriver(t, func(c *Config) { c.FrontEnd = FrontEndVolume })
	if err := e.d.Create(bg, "v", nil); err != nil {
		t.Fatal(err)
	}
	cp := e.otherDriver(t, FrontEndCSI)
	_, err := cp.Describe(bg, "v")
	wantOther(t, "Describe", err, "v", "Docker's volume protocol", "PROTOCOL=volume", "another name")
	_, err = cp.Mount(bg, "v", "csi:/s")
	wantOther(t, "Mount", err, "v")
	e.assertGone("v")
	wantOther(t, "Remove", cp.Remove(bg, "v"), "v")
	wantOther(t, "Create", cp.Create(bg, "v", nil), "v")
	if !e.prov.exists("v") {
		t.Fatal("removed")
	}
}

// Volumes without the record (made before it existed, or by hand) are served by both front ends,
// as before; a driver without a front end records nothing.
func TestFrontEndUnrecordedServedByBoth(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("old", 1<<30, "ext4")
	if err := e.d.Create(bg, "none", nil); err != nil {
		t.Fatal(err)
	}
	if got := e.prov.createdOptions(); got[0].FrontEnd != "" {
		t.Errorf("a driver without a front end recorded %q", got[0].FrontEnd)
	}
	for _, fe := range []string{FrontEndVolume, FrontEndCSI} {
		d := e.otherDriver(t, fe)
		for _, name := range []string{"old", "none"} {
			if _, err := d.Get(bg, name); err != nil {
				t.Errorf("%s Get %s: %v", fe, name, err)
			}
			if err := d.Create(bg, name, nil); err != nil {
				t.Errorf("%s Create of existing %s: %v", fe, name, err)
			}
			if _, err := d.Mount(bg, name, "id"); err != nil {
				t.Fatalf("%s Mount %s: %v", fe, name, err)
			}
			if err := d.Unmount(bg, name, "id"); err != nil {
				t.Fatal(err)
			}
		}
	}
	d := e.otherDriver(t, FrontEndCSI)
	for _, name := range []string{"old", "none"} {
		if err := d.Remove(bg, name); err != nil {
			t.Errorf("Remove %s: %v", name, err)
		}
	}
}

// With LOCK_BREAK=on a Mount checks the front end before it claims: a takeover must never fence
// the other front end's holder. A front end this version does not know is named as such, and a
// volume whose record cannot be read is not mounted.
func TestFrontEndCheckedBeforeATakeover(t *testing.T) {
	e := newTestDriver(t, func(c *Config) { c.FrontEnd = FrontEndCSI })
	if err := e.d.Create(bg, "c", map[string]string{"size": "1G"}); err != nil {
		t.Fatal(err)
	}
	e.prov.setHolder("c", "host-dead")
	vp := e.otherDriver(t, FrontEndVolume, func(c *Config) { c.LockBreak = true })
	m := e.rec.mark()
	_, err := vp.Mount(bg, "c", "ctr1")
	wantOther(t, "Mount with LOCK_BREAK", err, "c", "does not mount it")
	for _, op := range e.rec.ops(m) {
		if strings.HasPrefix(op, "prov.Attach") {
			t.Fatalf("the volume plugin claimed (%s) a cluster volume before refusing it", op)
		}
	}
	if h := e.prov.holder("c"); h != "host-dead" {
		t.Fatalf("the holder became %q", h)
	}

	e.prov.add("odd", 1<<30, "ext4")
	e.prov.mu.Lock()
	v := e.prov.vols["odd"]
	v.FrontEnd = "nomad"
	e.prov.vols["odd"] = v
	e.prov.mu.Unlock()
	_, err = vp.Mount(bg, "odd", "ctr1")
	wantOther(t, "Mount of an unknown front end's volume", err, "odd", `does not know ("nomad")`)

	e.prov.add("v", 1<<30, "ext4")
	e.prov.failNext("Get", errors.New("rados: ret=-110"))
	if _, err := vp.Mount(bg, "v", "ctr1"); err == nil || !strings.Contains(err.Error(), "cannot tell which front end created it") {
		t.Fatalf("Mount when the record cannot be read = %v", err)
	}
	if _, ok, _ := vp.state.Load("v"); ok {
		t.Fatal("a refused Mount left state")
	}
}
