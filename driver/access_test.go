package driver

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestParseAccess(t *testing.T) {
	def := OptionDefaults{Size: 1 << 30, FSType: "ext4"}
	for v, want := range map[string]string{"readonly": AccessReadOnly, "readwrite": AccessReadWrite, "": AccessReadWrite} {
		o, err := ParseOptions(map[string]string{OptAccess: v}, def, nil)
		if err != nil || o.Access != want {
			t.Errorf("access=%q: %q, %v; want %q", v, o.Access, err, want)
		}
	}
	for _, v := range []string{"ro", "READONLY", "readonly,rw", "read only", "../x"} {
		if _, err := ParseOptions(map[string]string{OptAccess: v}, def, nil); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "access") {
			t.Errorf("access=%q: %v, want ErrInvalid naming access", v, err)
		}
	}
	if got := StoredMeta(Options{FSType: "ext4", Access: AccessReadOnly})[MetaAccess]; got != AccessReadOnly {
		t.Errorf("stored access %q", got)
	}
	if _, ok := StoredMeta(Options{FSType: "ext4", Access: AccessReadWrite})[MetaAccess]; ok {
		t.Error("readwrite is the default and stores nothing")
	}
	var vol Volume
	vol.SetStored(func(k string) string { return map[string]string{MetaFSType: "ext4", MetaAccess: "readonly"}[k] })
	if !vol.ReadOnly() {
		t.Errorf("SetStored did not read the access: %+v", vol)
	}
	// A value planted in the metadata is refused at Mount.
	vol.Access = "rw;reboot"
	if err := CheckStored("ext4", vol); !errors.Is(err, ErrInvalid) {
		t.Errorf("CheckStored of a planted access: %v", err)
	}
}

func TestWithReadOnly(t *testing.T) {
	for in, want := range map[string]string{"": "ro", "nosuid,nodev": "nosuid,nodev,ro", "rw,noatime": "noatime,ro", "ro,ro": "ro"} {
		if got := withReadOnly(in); got != want {
			t.Errorf("withReadOnly(%q) = %q, want %q", in, got, want)
		}
	}
}

// readOnlyVolume adds a volume with access=readonly that carries an ext4 filesystem already.
func (e *testEnv) readOnlyVolume(name string) {
	e.prov.add(name, 1<<30, "ext4")
	e.prov.mu.Lock()
	v := e.prov.vols[name]
	v.Access = AccessReadOnly
	e.prov.vols[name] = v
	e.prov.mu.Unlock()
	e.mounter.mu.Lock()
	e.mounter.fs["/dev/fake0"] = "ext4"
	e.mounter.mu.Unlock()
}

func TestReadOnlyVolumeIsMappedAndMountedReadOnly(t *testing.T) {
	e := newTestDriver(t)
	e.readOnlyVolume("v")
	m := e.rec.mark()
	e.mustMount("v", "id1")
	assertOps(t, "first Mount of a readonly volume", e.rec.ops(m), "prov.Attach v", "map.Map v", "mnt.Mount v")
	if !e.mapper.lastReq.ReadOnly {
		t.Error("mapped read-write")
	}
	if got := e.mounter.mountCalls(); len(got) != 1 || !slices.Contains(strings.Split(got[0].options, ","), "ro") {
		t.Errorf("mounts %+v, want one with ro", got)
	}
	if n := e.mounter.count("FormatIfBlank"); n != 0 {
		t.Errorf("FormatIfBlank called %d times on a read-only mapping", n)
	}
	info, err := e.d.Get(bg, "v")
	if err != nil || info.Status["access"] != AccessReadOnly || info.Status["mapped"] != "read-only" {
		t.Errorf("Get: %+v, %v", info.Status, err)
	}
	// Another host reads it at the same time; a writer is refused naming the readers.
	other := e.otherHost(t, "host-b")
	if _, err := other.Mount(bg, "v", "id-b"); err != nil {
		t.Fatalf("a second host's read-only Mount: %v", err)
	}
	if _, err := e.otherHost(t, "host-c").Use(bg, "v", "id-c", Use{Writable: true}); !errors.Is(err, ErrInvalid) {
		t.Errorf("a writable use on a third host: %v", err)
	}
	// A writable use of it on this host is refused, and so is a shared read-only use of a volume
	// held read-write.
	if _, err := e.d.Use(bg, "v", "id2", Use{Writable: true}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("writable use of a volume up read-only: %v", err)
	}
	if err := other.Unmount(bg, "v", "id-b"); err != nil {
		t.Fatal(err)
	}
	e.mustUnmount("v", "id1")
	e.assertGone("v")
}

// otherHost is a second plugin on the same backend as another host (its own name, mount root and
// state; the fakes' mapper and mounter stand for its kernel too).
func (e *testEnv) otherHost(t *testing.T, node string) *Driver {
	return e.otherDriver(t, "", func(c *Config) { c.Node, c.MountRoot = node, t.TempDir() })
}

func TestReadOnlyBlankVolumeIsRefusedAndUndone(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.prov.mu.Lock()
	v := e.prov.vols["v"]
	v.Access = AccessReadOnly
	e.prov.vols["v"] = v
	e.prov.mu.Unlock()
	m := e.rec.mark()
	_, err := e.d.Mount(bg, "v", "id1")
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "no filesystem") || !strings.Contains(err.Error(), "from-volume") {
		t.Fatalf("read-only Mount of a blank volume: %v", err)
	}
	assertOps(t, "refused and undone", e.rec.ops(m), "prov.Attach v", "map.Map v", "map.Unmap v", "prov.Detach v")
	if n := e.mounter.count("FormatIfBlank"); n != 0 {
		t.Errorf("formatted a read-only volume (%d calls)", n)
	}
	e.assertGone("v")
}

func TestSharedReadOnlyUseAndWriters(t *testing.T) {
	e := newTestDriver(t)
	e.mapper.reuse = true // the image's filesystem is found again on its next mapping
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "w") // formats it, read-write
	// A shared read-only use beside this host's read-write use is refused.
	if _, err := e.d.Use(bg, "v", "r", Use{ReadOnly: true}); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "read-write") {
		t.Errorf("shared read-only use of a volume up read-write: %v", err)
	}
	// Another host's shared read-only use is refused while this host writes it.
	other := e.otherHost(t, "host-b")
	if _, err := other.Use(bg, "v", "r", Use{ReadOnly: true}); !errors.Is(err, ErrBusyElsewhere) {
		t.Errorf("read-only use elsewhere while this host writes: %v", err)
	}
	e.mustUnmount("v", "w")
	// Now two hosts read it; a writer is refused naming the readers.
	if _, err := e.d.Use(bg, "v", "r1", Use{ReadOnly: true}); err != nil {
		t.Fatalf("shared read-only use: %v", err)
	}
	if _, err := other.Use(bg, "v", "r2", Use{ReadOnly: true}); err != nil {
		t.Fatalf("a second host's shared read-only use: %v", err)
	}
	if _, err := e.d.Use(bg, "v", "w2", Use{Writable: true}); !errors.Is(err, ErrInvalid) {
		t.Errorf("writable use on a host that reads it: %v", err)
	}
	_, err := e.otherHost(t, "host-c").Use(bg, "v", "w3", Use{Writable: true})
	if !errors.Is(err, ErrBusyElsewhere) || !strings.Contains(err.Error(), "host-a") {
		t.Errorf("a writer on a third host while two read: %v", err)
	}
}

func TestReadOnlyMountErrorSaysWhatToDo(t *testing.T) {
	err := readOnlyMountError("v", fmt.Errorf("mount /dev/rbd0: %w", syscall.EROFS))
	if !errors.Is(err, syscall.EROFS) || !strings.Contains(err.Error(), "journal") || !strings.Contains(err.Error(), MetaAccess) {
		t.Errorf("EROFS: %v", err)
	}
	if err := readOnlyMountError("v", syscall.EINVAL); strings.Contains(err.Error(), "journal") {
		t.Errorf("EINVAL explained as a journal: %v", err)
	}
}

func TestCreateComparesAccess(t *testing.T) {
	e := newTestDriver(t)
	if err := e.d.Create(bg, "v", map[string]string{OptAccess: "readonly"}); err != nil {
		t.Fatal(err)
	}
	if got := e.prov.created[len(e.prov.created)-1].Access; got != AccessReadOnly {
		t.Errorf("created with access %q", got)
	}
	e.prov.mu.Lock()
	v := e.prov.vols["v"]
	v.Access = AccessReadOnly // what the backend stored
	e.prov.vols["v"] = v
	e.prov.mu.Unlock()
	if err := e.d.Create(bg, "v", map[string]string{OptAccess: "readonly"}); err != nil {
		t.Errorf("same access again: %v", err)
	}
	if err := e.d.Create(bg, "v", map[string]string{OptAccess: "readwrite"}); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "access readwrite (it has readonly)") {
		t.Errorf("other access: %v", err)
	}
	if err := e.d.Create(bg, "v", nil); err != nil {
		t.Errorf("no options: %v", err)
	}
}

// Create of a read-only copy only creates it: its journal, if it needs replaying, is replayed at
// its first read-only use (replay_test.go).
func TestCreateOfAReadOnlyCopyOnlyCreates(t *testing.T) {
	e := newTestDriver(t)
	m := e.rec.mark()
	if err := e.d.Create(bg, "cp", map[string]string{OptFromVolume: "src", OptAccess: AccessReadOnly}); err != nil {
		t.Fatal(err)
	}
	assertOps(t, "Create of a read-only copy", e.rec.ops(m), "prov.Create cp")
	e.assertGone("cp")
}
