package rbd

import (
	"errors"
	"strings"
	"testing"
	"time"

	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/driver/undo"
)

// copyFixture is a provisioner with a source volume "src" (2G, xfs, mount option noatime,
// uid 999) and a logger that keeps what it is told.
func copyFixture(t *testing.T) (*fakeCeph, *Provisioner, *logtest.Hook) {
	t.Helper()
	f := newFake()
	logger, hook := logtest.NewNullLogger()
	p := newProvisioner(f, ProvisionerConfig{Pool: "volumes", Host: "node-1", HostID: idA, Features: []string{"layering"}, Log: logger})
	src := f.add(Spec{Pool: "volumes", Image: "src"}, 2<<30)
	src.meta = map[string]string{metaFSType: "xfs", metaMountOptions: "noatime", metaPrefix + "uid": "999"}
	return f, p, hook
}

// copyOpts are the options of a Create with -o from-volume=src and the given -o keys.
func copyOpts(given ...string) driver.Options {
	o := driver.Options{Size: 10 << 30, FSType: "ext4", Backend: map[string]string{OptFromVolume: "src"},
		Given: map[string]bool{OptFromVolume: true}}
	for _, k := range given {
		o.Given[k] = true
	}
	return o
}

// srcSnaps are the snapshots left on the source.
func srcSnaps(f *fakeCeph) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.images["volumes/src"].snaps)
}

func TestCreateCopy(t *testing.T) {
	f, p, _ := copyFixture(t)
	if err := p.Create(bg, "cp", copyOpts()); err != nil {
		t.Fatal(err)
	}
	img := f.image(Spec{Pool: "volumes", Image: "cp"})
	if img == nil || img.info.Parent != "" || img.info.Size != 2<<30 {
		t.Fatalf("copy %+v: want a flattened image of the source's size", img)
	}
	for k, want := range map[string]string{metaFSType: "xfs", metaMountOptions: "noatime", metaPrefix + "uid": "999", metaFromVolume: "src"} {
		if img.meta[k] != want {
			t.Errorf("copy's %s = %q, want %q (meta %v)", k, img.meta[k], want, img.meta)
		}
	}
	// Snapshot, protect, clone, flatten, then the snapshot goes: the source can be removed.
	snaps := f.called("CreateSnap")
	if len(snaps) != 1 || !strings.HasPrefix(snaps[0], "volumes/src@"+copySnapPrefix+"cp-") {
		t.Fatalf("snapshots taken: %q", snaps)
	}
	if srcSnaps(f) != 0 {
		t.Errorf("the copy's snapshot stays on the source")
	}
	if got := f.called("Clone"); len(got) != 1 || got[0] != snaps[0] {
		t.Errorf("cloned %q, want the snapshot %q", got, snaps[0])
	}
	if got := f.called("UnprotectSnap"); len(got) != 1 || got[0] != snaps[0] {
		t.Errorf("unprotected %q", got)
	}
	if err := p.Remove(bg, "src", driver.RemoveDelete); err != nil {
		t.Errorf("remove the source after the copy: %v", err)
	}

	vol, err := p.Get(bg, "cp")
	if err != nil || vol.Status[OptFromVolume] != "src" || vol.FSType != "xfs" {
		t.Fatalf("get: %+v %v", vol, err)
	}
	if diffs, err := p.Differences(bg, vol, copyOpts()); err != nil || len(diffs) != 0 {
		t.Errorf("same source: %q %v", diffs, err)
	}
	other := copyOpts()
	other.Backend[OptFromVolume] = "other"
	if diffs, _ := p.Differences(bg, vol, other); len(diffs) != 1 || !strings.Contains(diffs[0], "it is a copy of src") {
		t.Errorf("another source: %q", diffs)
	}
	if diffs, _ := p.Differences(bg, driver.Volume{Status: map[string]any{"parent": "volumes/src@" + copySnapPrefix + "x-1"}}, copyOpts()); len(diffs) != 1 ||
		!strings.Contains(diffs[0], "did not finish") {
		t.Errorf("an unfinished copy: %q", diffs)
	}
	if diffs, _ := p.Differences(bg, driver.Volume{Status: map[string]any{}}, copyOpts()); len(diffs) != 1 || !strings.Contains(diffs[0], "not a copy") {
		t.Errorf("not a copy: %q", diffs)
	}
}

// A larger -o size grows the copy; a smaller one, another fstype, a bad or missing source and
// both sources at once are refused before anything is made.
func TestCreateCopyOptions(t *testing.T) {
	f, p, _ := copyFixture(t)
	big := copyOpts(driver.OptSize, driver.OptMountOptions)
	big.Size, big.SizeGiven, big.MountOptions = 3<<30, true, "nodiratime"
	if err := p.Create(bg, "big", big); err != nil {
		t.Fatal(err)
	}
	if img := f.image(Spec{Pool: "volumes", Image: "big"}); img.info.Size != 3<<30 || img.meta[metaMountOptions] != "nodiratime" {
		t.Errorf("grown copy %+v meta %v", img.info, img.meta)
	}
	f.calls = nil
	small := copyOpts(driver.OptSize)
	small.Size, small.SizeGiven = 1<<30, true
	xfs := copyOpts(driver.OptFSType)
	both := copyOpts()
	both.Backend[OptFromSnapshot] = "src@s"
	for _, c := range []struct {
		src  string
		opts driver.Options
		kind error
		want string
	}{
		{"src", small, driver.ErrInvalid, "cannot be shrunk"},
		{"src", xfs, driver.ErrInvalid, "holds a xfs filesystem"},
		{"src", both, driver.ErrInvalid, "not both"},
		{"../etc", copyOpts(), driver.ErrInvalid, "from-volume"},
		{"a@b", copyOpts(), driver.ErrInvalid, "from-volume"},
		{"volumes/src", copyOpts(), driver.ErrInvalid, "from-volume"},
		{"nope", copyOpts(), driver.ErrNotFound, "from-volume nope"},
	} {
		c.opts.Backend[OptFromVolume] = c.src
		err := p.Create(bg, "c", c.opts)
		if !errors.Is(err, c.kind) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("source %q %+v: %v, want %v with %q", c.src, c.opts, err, c.kind, c.want)
		}
	}
	if got := f.called("CreateSnap"); len(got) != 0 || f.image(Spec{Pool: "volumes", Image: "c"}) != nil {
		t.Errorf("refused copies made snapshots %q or an image", got)
	}
	for _, what := range f.called("Describe") {
		if what != "volumes/c" && what != "volumes/src" && what != "volumes/nope" {
			t.Errorf("a hostile source name reached Ceph: Describe %q", what)
		}
	}
}

// Each step that fails undoes the ones before it: the copy goes, then the snapshot.
func TestCreateCopyUndoes(t *testing.T) {
	for _, method := range []string{"CreateSnap", "ProtectSnap", "Clone", "Flatten", "Info", "Resize", "SetMetas"} {
		f, p, _ := copyFixture(t)
		f.fail[method] = errors.New(method + " failed")
		opts := copyOpts(driver.OptSize)
		opts.Size, opts.SizeGiven = 3<<30, true
		err := p.Create(bg, "cp", opts)
		if err == nil || !strings.Contains(err.Error(), method+" failed") || strings.Contains(err.Error(), "undoing") {
			t.Errorf("%s: err %v", method, err)
		}
		if f.image(Spec{Pool: "volumes", Image: "cp"}) != nil || srcSnaps(f) != 0 || f.image(Spec{Pool: "volumes", Image: "src"}) == nil {
			t.Errorf("%s: left the copy %v, %d snapshots on the source", method, f.image(Spec{Pool: "volumes", Image: "cp"}) != nil, srcSnaps(f))
		}
	}
}

// A flatten cut off by the deadline says what to do; a copy that cannot be removed at once (the
// aborted flatten still has it open) is retried until the cleanup bound, and an undo that fails
// is in the error with what it left.
func TestCreateCopyTimeout(t *testing.T) {
	f, p, _ := copyFixture(t)
	f.fail["Flatten"] = &OpError{Op: "flatten", What: "volumes/cp", Kind: driver.ErrTimeout, Err: errors.New("Ceph did not answer before the deadline")}
	f.fail["Remove"] = &OpError{Op: "remove", What: "volumes/cp", Kind: driver.ErrInUse, Err: errors.New("image has watchers")}
	ctx := undo.WithCleanup(bg, 700*time.Millisecond)
	start := time.Now()
	err := p.Create(ctx, "cp", copyOpts())
	took := time.Since(start)
	if !errors.Is(err, driver.ErrTimeout) || !strings.Contains(err.Error(), "CALL_TIMEOUT") ||
		!strings.Contains(err.Error(), "remove copy volumes/cp") || !strings.Contains(err.Error(), "image has watchers") {
		t.Fatalf("err %v", err)
	}
	if n := len(f.called("Remove")); n < 2 || took > 5*time.Second {
		t.Errorf("removal tried %d times in %v: want retries within the cleanup bound", n, took)
	}
	// The copy stays, so its snapshot (protected, with a clone) stays too, as the error says.
	if srcSnaps(f) != 1 {
		t.Errorf("snapshots on the source: %d", srcSnaps(f))
	}
}

// A copy made whose snapshot cannot be removed succeeds, and the log says how to remove it.
func TestCreateCopyLeavesASnapshotItCannotRemove(t *testing.T) {
	f, p, hook := copyFixture(t)
	f.fail["RemoveSnap"] = errors.New("osd busy")
	if err := p.Create(bg, "cp", copyOpts()); err != nil {
		t.Fatal(err)
	}
	if f.image(Spec{Pool: "volumes", Image: "cp"}) == nil {
		t.Fatal("no copy")
	}
	e := hook.LastEntry()
	if e == nil || !strings.Contains(e.Message, "rbd snap rm volumes/src@"+copySnapPrefix+"cp-") || e.Data["volume"] != "cp" {
		t.Fatalf("log: %+v", e)
	}
}

// Remove of a source takes away the snapshots that copies interrupted long ago (a plugin killed
// mid-copy) left on it, once no clone needs them; a copy's snapshot in progress, or one with its
// clone still there, keeps the source.
func TestRemoveDropsStaleCopySnapshots(t *testing.T) {
	f, p, hook := copyFixture(t)
	src := Spec{Pool: "volumes", Image: "src"}
	snap := func(age time.Duration) Spec {
		s := src
		s.Snap = copySnapName("cp", time.Now().Add(-age))
		if err := f.CreateSnap(bg, s); err != nil {
			t.Fatal(err)
		}
		if err := f.ProtectSnap(bg, s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	fresh := snap(time.Minute)
	err := p.Remove(bg, "src", driver.RemoveDelete)
	if !errors.Is(err, driver.ErrInUse) || !strings.Contains(err.Error(), "copy of it being made") || srcSnaps(f) != 1 {
		t.Fatalf("remove with a copy in progress: %v (%d snapshots)", err, srcSnaps(f))
	}
	if err := f.UnprotectSnap(bg, fresh); err != nil {
		t.Fatal(err)
	}
	if err := f.RemoveSnap(bg, fresh); err != nil {
		t.Fatal(err)
	}

	old := snap(time.Hour)
	if err := f.Clone(bg, old, Spec{Pool: "volumes", Image: "cp"}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := p.Remove(bg, "src", driver.RemoveDelete); !errors.Is(err, driver.ErrInUse) || srcSnaps(f) != 1 {
		t.Fatalf("remove while the unfinished copy stays: %v", err)
	}
	if e := hook.LastEntry(); e == nil || !strings.Contains(e.Message, "rbd children "+old.String()) {
		t.Errorf("log: %+v", e)
	}
	if err := p.Remove(bg, "cp", driver.RemoveDelete); err != nil {
		t.Fatal(err)
	}
	if err := p.Remove(bg, "src", driver.RemoveDelete); err != nil || f.image(src) != nil {
		t.Fatalf("remove once the unfinished copy is gone: %v", err)
	}
}
