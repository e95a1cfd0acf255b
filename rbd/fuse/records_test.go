package fuse

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// fakeHost is a fake sysfs, /dev and /proc tree for the mapper's records.
type fakeHost struct {
	t    *testing.T
	f    *Fuse
	base string
}

func newFakeHost(t *testing.T) *fakeHost {
	base := t.TempDir()
	f := &Fuse{Root: filepath.Join(base, "root"), SysfsRoot: filepath.Join(base, "sys"),
		DevRoot: filepath.Join(base, "dev"), ProcRoot: filepath.Join(base, "proc")}
	for _, d := range []string{f.Root, filepath.Join(f.SysfsRoot, "block"), f.DevRoot, f.ProcRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return &fakeHost{t: t, f: f, base: base}
}

func (h *fakeHost) write(path, content string) {
	h.t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// loop attaches fake loop device n to backing.
func (h *fakeHost) loop(n int, backing string) {
	h.write(filepath.Join(h.f.SysfsRoot, "block", "loop"+strconv.Itoa(n), "loop", "backing_file"), backing+"\n")
	h.write(filepath.Join(h.f.DevRoot, "loop"+strconv.Itoa(n)), "") // LOOP_GET_STATUS fails: "cannot tell", live
}

// proc adds a fake process with the command line args.
func (h *fakeHost) proc(pid int, args ...string) {
	h.write(filepath.Join(h.f.ProcRoot, strconv.Itoa(pid), "cmdline"), strings.Join(args, "\x00")+"\x00")
}

func devices(ms []driver.Mapping) []string {
	var out []string
	for _, m := range ms {
		out = append(out, filepath.Base(m.Device))
	}
	return out
}

// A mapped image's lookup verifies only its own recorded loop device: the other images' loops
// are not read (here: a loop of the same image that the record does not name is not seen).
func TestLookupVerifiesOnlyTheRecordedLoop(t *testing.T) {
	h := newFakeHost(t)
	ctx := context.Background()
	spec := driver.ImageSpec{Pool: "rbd", Image: "vol"}
	for i := 0; i < 50; i++ {
		other := driver.ImageSpec{Pool: "rbd", Image: "other" + strconv.Itoa(i)}
		h.loop(100+i, h.f.imageFile(other))
	}
	h.loop(7, h.f.imageFile(spec))
	live, _, err := h.f.lookup(ctx, spec) // before the start-up List: only its own loops
	if err != nil {
		t.Fatal(err)
	}
	if got := devices(live); !slices.Equal(got, []string{"loop7"}) {
		t.Fatalf("first lookup = %v, want [loop7]", got)
	}
	other3 := h.f.mountDir(driver.ImageSpec{Pool: "rbd", Image: "other3"})
	if _, ok, complete := h.f.recordOf(other3); ok || complete {
		t.Fatalf("a lookup before the first List recorded other images (ok=%v complete=%v): it scanned them all", ok, complete)
	}
	if _, err := h.f.List(ctx); err != nil { // the start-up scan records every image
		t.Fatal(err)
	}
	if rec, ok, complete := h.f.recordOf(other3); !ok || !complete || !slices.Equal(rec.loops, []int{103}) {
		t.Fatalf("record of other3 after the first scan = %+v ok=%v complete=%v, want loop 103", rec, ok, complete)
	}
	h.loop(8, h.f.imageFile(spec)) // unknown to the record
	live, _, err = h.f.lookup(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if got := devices(live); !slices.Equal(got, []string{"loop7"}) {
		t.Fatalf("lookup with a record = %v, want only the recorded loop7 (no scan)", got)
	}
}

// A record that is no longer true (its loop device now backs another image's file) is not
// trusted: the lookup scans and finds the image's real loop, and records it.
func TestLookupScansWhenTheRecordIsWrong(t *testing.T) {
	h := newFakeHost(t)
	ctx := context.Background()
	spec := driver.ImageSpec{Pool: "rbd", Image: "vol"}
	other := driver.ImageSpec{Pool: "rbd", Image: "other"}
	h.f.remember(nil, nil, nil)
	dir := h.f.mountDir(spec)
	h.f.setRecord(dir, &record{loops: []int{3}})
	h.loop(3, h.f.imageFile(other))
	h.loop(4, h.f.imageFile(spec))
	live, _, err := h.f.lookup(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if got := devices(live); !slices.Equal(got, []string{"loop4"}) {
		t.Fatalf("lookup = %v, want [loop4] (never loop3: another image's)", got)
	}
	if rec, _, _ := h.f.recordOf(dir); !slices.Equal(rec.loops, []int{4}) {
		t.Fatalf("record after the scan = %v, want [4]", rec.loops)
	}
}

// After a full scan, an image without a record and without a mount is not mapped: no scan.
func TestLookupOfAnUnknownImageAfterAScan(t *testing.T) {
	h := newFakeHost(t)
	spec := driver.ImageSpec{Pool: "rbd", Image: "new"}
	if _, err := h.f.List(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.loop(9, h.f.imageFile(spec)) // appeared after the scan, without a mount: not a live mapping
	live, stale, err := h.f.lookup(context.Background(), spec)
	if err != nil || len(live) != 0 || len(stale) != 0 {
		t.Fatalf("lookup = %v %v %v, want nothing", live, stale, err)
	}
}

// The recorded rbd-fuse pid is used only while its command line still serves the directory;
// otherwise a scan finds the right one, and never another image's daemon.
func TestDaemonPidsVerifiesTheRecordedPid(t *testing.T) {
	h := newFakeHost(t)
	dir := h.f.mountDir(driver.ImageSpec{Pool: "rbd", Image: "vol"})
	otherDir := h.f.mountDir(driver.ImageSpec{Pool: "rbd", Image: "other"})
	h.proc(100, "rbd-fuse", "-c", "/etc/ceph/ceph.conf", "-p", "rbd", "-r", "other", otherDir)
	h.proc(200, "rbd-fuse", "-c", "/etc/ceph/ceph.conf", "-p", "rbd", "-r", "vol", dir)
	h.proc(300, "/bin/sleep", dir)
	h.f.setRecord(dir, &record{pid: 200})
	if got := h.f.daemonPids(dir); !slices.Equal(got, []int{200}) {
		t.Fatalf("daemonPids with a true record = %v, want [200]", got)
	}
	h.f.setRecord(dir, &record{pid: 100}) // a pid reused (or wrong): it serves another image
	if got := h.f.daemonPids(dir); !slices.Equal(got, []int{200}) {
		t.Fatalf("daemonPids with a wrong record = %v, want [200] (never 100 or 300)", got)
	}
}

// A new daemon is looked for only among the processes started after the recorded last pid.
func TestNewDaemonPidReadsOnlyNewerProcesses(t *testing.T) {
	h := newFakeHost(t)
	dir := h.f.mountDir(driver.ImageSpec{Pool: "rbd", Image: "vol"})
	h.proc(50, "rbd-fuse", "-p", "rbd", "-r", "vol", dir) // older: not looked at
	h.proc(501, "rbd-fuse", "-p", "rbd", "-r", "vol", dir)
	h.write(filepath.Join(h.f.ProcRoot, "sys", "kernel", "ns_last_pid"), "500\n")
	if got := h.f.newDaemonPid(dir, h.f.lastPid()); got != 501 {
		t.Fatalf("newDaemonPid = %d, want 501", got)
	}
	if got := h.f.newDaemonPid(dir, 600); got != 0 {
		t.Fatalf("newDaemonPid after 600 = %d, want 0 (none newer)", got)
	}
}

// A detached stale loop (named by its image only) found by the start-up scan does not make every
// later call scan again: it is looked at only by images of its name.
func TestDetachedStaleLoopConcernsOnlyItsImageName(t *testing.T) {
	h := newFakeHost(t)
	h.loop(11, "/vol") // its rbd-fuse died and its mount was detached
	h.f.remember(nil, []staleLoop{{Device: filepath.Join(h.f.DevRoot, "loop11"), Spec: driver.ImageSpec{Image: "vol"}}}, nil)
	if _, _, complete := h.f.recordOf(h.f.mountDir(driver.ImageSpec{Pool: "rbd", Image: "x"})); !complete {
		t.Fatal("a detached stale loop made the records incomplete (every call would scan)")
	}
	other := driver.ImageSpec{Pool: "rbd", Image: "other"}
	h.loop(12, h.f.imageFile(other)) // unrecorded and without a mount: not looked at
	if live, stale, err := h.f.lookup(context.Background(), other); err != nil || len(live)+len(stale) != 0 {
		t.Fatalf("lookup(other) = %v %v %v, want nothing", live, stale, err)
	}
	if got := h.f.anonOf("vol"); !slices.Equal(got, []int{11}) {
		t.Fatalf("detached loops of vol = %v, want [11]", got)
	}
}
