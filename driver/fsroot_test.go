package driver

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeFS is an FSAdmin over a table of sizes and roots, counting calls; grow can be held open.
type fakeFS struct {
	mu       sync.Mutex
	sizes    map[string]Sizes    // device -> sizes
	roots    map[string]RootInfo // mount path -> root
	set      map[string]RootSpec // mount path -> what SetRoot applied
	grows    int
	growErr  error
	growGate chan struct{} // when set, Grow waits for it to close
	growing  chan struct{} // when set, Grow signals here that it started
	online   error         // OnlineGrowError's answer
	offline  int           // grows of an unmounted filesystem
}

func newFakeFS() *fakeFS {
	return &fakeFS{sizes: map[string]Sizes{}, roots: map[string]RootInfo{}, set: map[string]RootSpec{}}
}

func (f *fakeFS) SetRoot(_ context.Context, path string, spec RootSpec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.set[path] = spec
	return nil
}

func (f *fakeFS) RootOf(_ context.Context, path string) (RootInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r, ok := f.roots[path]; ok {
		return r, nil
	}
	return RootInfo{Mode: 0o755, LostFound: true}, nil
}

func (f *fakeFS) Sizes(_ context.Context, dev, _, _ string) (Sizes, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sizes[dev]
	if !ok {
		return Sizes{Device: 1 << 30, FS: 1 << 30}, nil
	}
	return s, nil
}

func (f *fakeFS) Grow(ctx context.Context, dev, path, _ string) error {
	f.mu.Lock()
	gate, started := f.growGate, f.growing
	f.mu.Unlock()
	if started != nil {
		started <- struct{}{}
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.grows++
	if path == "" {
		f.offline++
	}
	if f.growErr != nil {
		return f.growErr
	}
	s := f.sizes[dev]
	s.FS = s.Device
	f.sizes[dev] = s
	return nil
}

func (f *fakeFS) setSizes(dev string, s Sizes) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sizes[dev] = s
}

func (f *fakeFS) growCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.grows
}

func (f *fakeFS) applied(path string) (RootSpec, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.set[path]
	return s, ok
}

func (f *fakeFS) OnlineGrowError(string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.online
}

func withFS(fs *fakeFS) func(*Config) { return func(c *Config) { c.FS = fs } }

// Hostile and malformed root options are refused at Create, naming the option; good ones are
// stored in canonical form.
func TestRootOptionsParsing(t *testing.T) {
	def := OptionDefaults{Size: 1 << 30, FSType: "ext4"}
	for _, c := range []struct {
		raw  map[string]string
		want string // "" : accepted
	}{
		{map[string]string{"uid": "-1"}, "uid"},
		{map[string]string{"uid": "4294967295"}, "uid"},
		{map[string]string{"uid": "99999999999"}, "uid"},
		{map[string]string{"uid": "postgres"}, "numeric"},
		{map[string]string{"uid": "1e3"}, "uid"},
		{map[string]string{"uid": " 999"}, "uid"},
		{map[string]string{"uid": "0x10"}, "uid"},
		{map[string]string{"uid": ""}, "uid"},
		{map[string]string{"gid": "+5"}, "gid"},
		{map[string]string{"gid": "1\n2"}, "gid"},
		{map[string]string{"mode": "4755"}, "setuid"},
		{map[string]string{"mode": "6777"}, "setuid"},
		{map[string]string{"mode": "17777"}, "mode"},
		{map[string]string{"mode": "0o755"}, "octal"},
		{map[string]string{"mode": "rwxr-xr-x"}, "octal"},
		{map[string]string{"mode": "888"}, "octal"},
		{map[string]string{"mode": "-755"}, "octal"},
		{map[string]string{"lost-found": "delete"}, "keep or remove"},
		{map[string]string{"uid": "999", "gid": "999", "mode": "750", "lost-found": "keep"}, ""},
		{map[string]string{"uid": "0", "gid": "4294967294", "mode": "2770"}, ""},
	} {
		o, err := ParseOptions(c.raw, def, nil)
		if c.want == "" {
			if err != nil {
				t.Errorf("%v: %v", c.raw, err)
			}
			continue
		}
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v (%+v), want an invalid-argument error mentioning %q", c.raw, err, o.Root, c.want)
		}
	}
	o, err := ParseOptions(map[string]string{"uid": "00999", "mode": "750"}, def, nil)
	if err != nil || o.Root != (RootOptions{UID: "999", Mode: "0750"}) {
		t.Errorf("canonical form: %+v, %v", o.Root, err)
	}
	// Defaults fill what -o leaves out, and -o wins.
	def.Root = RootOptions{UID: "1000", GID: "1000"}
	o, err = ParseOptions(map[string]string{"uid": "999"}, def, nil)
	if err != nil || o.Root != (RootOptions{UID: "999", GID: "1000"}) {
		t.Errorf("with defaults: %+v, %v", o.Root, err)
	}
}

func TestRootSpecLostFound(t *testing.T) {
	for _, c := range []struct {
		r    RootOptions
		want RootSpec
	}{
		{RootOptions{}, RootSpec{UID: -1, GID: -1, Mode: -1}},
		{RootOptions{UID: "999"}, RootSpec{UID: 999, GID: -1, Mode: -1}},
		{RootOptions{Mode: "0700", LostFound: "keep"}, RootSpec{UID: -1, GID: -1, Mode: 0o700}},
		{RootOptions{LostFound: "remove"}, RootSpec{UID: -1, GID: -1, Mode: -1, RemoveLostFound: true}},
	} {
		if got := c.r.Spec(); got != c.want {
			t.Errorf("%+v.Spec() = %+v, want %+v", c.r, got, c.want)
		}
	}
}

// A new filesystem gets the root options; a Mount of an existing one whose root differs logs it
// and changes nothing.
func TestRootOptionsAppliedOnlyWhenFormatted(t *testing.T) {
	fs := newFakeFS()
	e := newTestDriver(t, withFS(fs))
	if err := e.d.Create(bg, "v", map[string]string{"uid": "999", "gid": "999", "lost-found": "remove"}); err != nil {
		t.Fatal(err)
	}
	e.mustMount("v", "id1")
	spec, ok := fs.applied(e.path("v"))
	if !ok || spec != (RootSpec{UID: 999, GID: 999, Mode: -1, RemoveLostFound: true}) {
		t.Fatalf("root applied at the first format: %+v, %v", spec, ok)
	}
	e.mustUnmount("v", "id1")

	// The filesystem exists now; someone chowned its root back to root.
	fs.mu.Lock()
	delete(fs.set, e.path("v"))
	fs.roots[e.path("v")] = RootInfo{UID: 0, GID: 0, Mode: 0o755}
	fs.mu.Unlock()
	e.mounter.setFS("/dev/fake1", "ext4") // the next mapping's device carries the filesystem
	e.mustMount("v", "id2")
	if spec, ok := fs.applied(e.path("v")); ok {
		t.Errorf("an existing filesystem's root was changed: %+v", spec)
	}
	var logged bool
	for _, en := range e.logs.AllEntries() {
		if strings.Contains(en.Message, "root differs") && strings.Contains(en.Data["differences"].(string), "uid 999 (it has 0)") {
			logged = true
		}
	}
	if !logged {
		t.Error("the difference between the root and the options was not logged")
	}
}

// Create of an existing volume with other root options is refused, naming them; the same ones,
// or none, are accepted.
func TestCreateComparesRootOptions(t *testing.T) {
	e := newTestDriver(t)
	if err := e.d.Create(bg, "v", map[string]string{"uid": "999", "mode": "0750"}); err != nil {
		t.Fatal(err)
	}
	for _, ok := range []map[string]string{{"uid": "999"}, {"uid": "0999", "mode": "750"}, {}} {
		if err := e.d.Create(bg, "v", ok); err != nil {
			t.Errorf("Create again with %v: %v", ok, err)
		}
	}
	err := e.d.Create(bg, "v", map[string]string{"uid": "1000", "gid": "5"})
	if err == nil || !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "uid 1000 (it has 999)") ||
		!strings.Contains(err.Error(), "gid 5 (it has none recorded)") {
		t.Errorf("Create with another uid: %v", err)
	}
}

// Options planted in the backend after Create are refused at Mount before anything is formatted.
func TestStoredRootOptionsCheckedAtMount(t *testing.T) {
	e := newTestDriver(t, withFS(newFakeFS()))
	e.prov.add("v", 1<<30, "ext4")
	e.prov.mu.Lock()
	v := e.prov.vols["v"]
	v.Root = RootOptions{Mode: "4777"}
	e.prov.vols["v"] = v
	e.prov.mu.Unlock()
	_, err := e.d.Mount(bg, "v", "id1")
	if err == nil || !strings.Contains(err.Error(), "setuid") || !strings.Contains(err.Error(), "docker-plugin.mode") {
		t.Fatalf("Mount with a planted mode: %v", err)
	}
	if n := len(e.mounter.formattedDevices()); n != 0 {
		t.Errorf("formatted %d devices", n)
	}
}

// A device bigger than its filesystem is grown at the first Mount; a smaller one is refused
// before mounting, saying what to do.
func TestGrowAtMountAndShrinkRefused(t *testing.T) {
	fs := newFakeFS()
	e := newTestDriver(t, withFS(fs))
	e.prov.add("v", 2<<30, "ext4")
	e.mounter.setFS("/dev/fake0", "ext4")
	fs.setSizes("/dev/fake0", Sizes{Device: 2 << 30, FS: 1 << 30})
	e.mustMount("v", "id1")
	if fs.growCount() != 1 {
		t.Fatalf("grows at Mount: %d, want 1", fs.growCount())
	}
	info, err := e.d.Get(bg, "v")
	if err != nil || info.Status["filesystem-size"] != "2G" || info.Status["device-size"] != "2G" ||
		!strings.Contains(info.Status["resize"].(string), "grown from 1G to 2G") {
		t.Errorf("inspect after a grow: %v, %v", info.Status, err)
	}
	e.mustUnmount("v", "id1")

	e.mounter.setFS("/dev/fake1", "ext4")
	fs.setSizes("/dev/fake1", Sizes{Device: 1 << 30, FS: 2 << 30})
	_, err = e.d.Mount(bg, "v", "id2")
	if err == nil || !strings.Contains(err.Error(), "smaller than its filesystem") || !strings.Contains(err.Error(), "rbd resize --size 2G") {
		t.Fatalf("Mount of a shrunk volume: %v", err)
	}
	if e.mounter.mountCount() != 0 {
		t.Errorf("a shrunk volume was mounted")
	}
	info, err = e.d.Get(bg, "v")
	if err != nil || !strings.HasPrefix(info.Status["resize"].(string), "refused:") {
		t.Errorf("inspect after a refused shrink: %v, %v", info.Status, err)
	}
	if fs.growCount() != 1 {
		t.Errorf("grows: %d", fs.growCount())
	}
}

// The watcher grows a mounted volume whose device grew, within about one interval; it does not
// retry a grow that left the filesystem as it was until the device changes again.
func TestWatcherGrowsMountedVolume(t *testing.T) {
	fs := newFakeFS()
	e := watched(t, fs, 20*time.Millisecond)
	fs.setSizes("/dev/fake0", Sizes{Device: 3 << 30, FS: 1 << 30})
	start := time.Now()
	for fs.growCount() == 0 {
		if time.Since(start) > 5*time.Second {
			t.Fatal("the watcher did not grow the volume")
		}
		time.Sleep(5 * time.Millisecond)
	}
	waitFor(t, "the status shows the grown filesystem", func() bool { s, _ := e.d.growth.snapshot("v"); return s.FS == 3<<30 })

	// A tail too small to use: the grow leaves the filesystem as it is, once.
	fs.mu.Lock()
	fs.growErr = errors.New("nothing to do")
	fs.sizes["/dev/fake0"] = Sizes{Device: 3<<30 + 4<<20, FS: 3 << 30}
	fs.mu.Unlock()
	waitFor(t, "a second grow", func() bool { return fs.growCount() == 2 })
	time.Sleep(100 * time.Millisecond)
	if n := fs.growCount(); n != 2 {
		t.Errorf("the watcher retried a grow of the same device size: %d grows", n)
	}
}

// An Unmount waits for a grow in progress before it unmounts, and the watcher starts no grow of
// a volume whose teardown holds its lock.
func TestUnmountWaitsForGrow(t *testing.T) {
	fs := newFakeFS()
	fs.growGate, fs.growing = make(chan struct{}), make(chan struct{}, 1)
	e := watched(t, fs, 10*time.Millisecond)
	fs.setSizes("/dev/fake0", Sizes{Device: 2 << 30, FS: 1 << 30})
	growStarted(t, fs)

	unmounted := make(chan error, 1)
	go func() { unmounted <- e.d.Unmount(bg, "v", "id1") }()
	select {
	case err := <-unmounted:
		t.Fatalf("Unmount returned during a grow: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if e.mounter.device(e.path("v")) == "" {
		t.Fatal("unmounted during a grow")
	}
	close(fs.growGate)
	if err := <-unmounted; err != nil {
		t.Fatal(err)
	}
	e.assertGone("v")
	if n := fs.growCount(); n != 1 {
		t.Errorf("grows: %d, want 1", n)
	}

	// An Unmount whose deadline passes while the grow runs says so and leaves the volume up.
	fs.mu.Lock()
	fs.growGate = make(chan struct{})
	fs.mu.Unlock()
	e.mustMount("v", "id2")
	st, _ := e.state("v")
	fs.setSizes(st.Device, Sizes{Device: 3 << 30, FS: 2 << 30})
	growStarted(t, fs)
	tctx, tcancel := context.WithTimeout(bg, 50*time.Millisecond)
	defer tcancel()
	if err := e.d.Unmount(tctx, "v", "id2"); err == nil || !strings.Contains(err.Error(), "being grown") {
		t.Errorf("Unmount during a long grow: %v", err)
	}
	close(fs.growGate)
}

// A filesystem this process cannot grow while mounted (ext4 without CAP_SYS_RESOURCE) grows
// offline at the next first Mount; while mounted, the watcher only reports why it cannot.
func TestGrowOfflineWhenOnlineIsNotPossible(t *testing.T) {
	fs := newFakeFS()
	fs.online = errors.New("no CAP_SYS_RESOURCE")
	e := watched(t, fs, 10*time.Millisecond)
	fs.setSizes("/dev/fake0", Sizes{Device: 2 << 30, FS: 1 << 30})
	waitFor(t, "the watcher's report", func() bool {
		info, err := e.d.Get(bg, "v")
		r, _ := info.Status["resize"].(string)
		return err == nil && strings.Contains(r, "cannot grow while mounted: no CAP_SYS_RESOURCE") && strings.Contains(r, "next first Mount")
	})
	if fs.growCount() != 0 {
		t.Fatalf("grew a mounted filesystem without the means to: %d", fs.growCount())
	}
	e.mustUnmount("v", "id1")
	e.mounter.setFS("/dev/fake1", "ext4")
	fs.setSizes("/dev/fake1", Sizes{Device: 2 << 30, FS: 1 << 30})
	e.mustMount("v", "id2")
	fs.mu.Lock()
	offline := fs.offline
	fs.mu.Unlock()
	if offline != 1 || fs.growCount() != 1 {
		t.Errorf("grows at the next Mount: %d offline of %d, want 1 of 1", offline, fs.growCount())
	}
	info, _ := e.d.Get(bg, "v")
	if r, _ := info.Status["resize"].(string); !strings.Contains(r, "grown from 1G to 2G before mounting") {
		t.Errorf("inspect: %v", info.Status)
	}
}

// watched is a driver with fs, volume "v" (1G, ext4) mounted on /dev/fake0, and the grow watcher
// running every interval until the test ends.
func watched(t *testing.T, fs *fakeFS, interval time.Duration) *testEnv {
	e := newTestDriver(t, withFS(fs))
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "id1")
	ctx, cancel := context.WithCancel(bg)
	done := make(chan struct{})
	go func() { e.d.WatchGrowth(ctx, interval); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

// growStarted waits until fs's Grow has started.
func growStarted(t *testing.T, fs *fakeFS) {
	t.Helper()
	select {
	case <-fs.growing:
	case <-time.After(5 * time.Second):
		t.Fatal("the watcher did not grow the mounted volume")
	}
}

// A volume mounted read-only (mount-options ro) is not grown, at Mount or by the watcher.
func TestReadOnlyMountNotGrown(t *testing.T) {
	fs := newFakeFS()
	e := newTestDriver(t, withFS(fs))
	if err := e.d.Create(bg, "v", map[string]string{"mount-options": "ro"}); err != nil {
		t.Fatal(err)
	}
	e.mounter.setFS("/dev/fake0", "ext4")
	fs.setSizes("/dev/fake0", Sizes{Device: 2 << 30, FS: 1 << 30})
	e.mustMount("v", "id1")
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	go e.d.WatchGrowth(ctx, 5*time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	if n := fs.growCount(); n != 0 {
		t.Errorf("a read-only volume was grown %d times", n)
	}
}

// refresher is a DeviceRefresher (the fuse mapper's loop devices) that fails until told not to.
type refresher struct {
	mu    sync.Mutex
	err   error
	calls []ImageSpec
}

func (r *refresher) Refresh(_ context.Context, spec ImageSpec) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, spec)
	return r.err
}

func (r *refresher) count() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.calls) }

// With a mapper whose devices keep their size (fuse), the watcher refreshes the device before it
// measures; a refresh that fails grows nothing (the size read would be the old one) and is
// retried at the next round.
func TestWatcherRefreshesTheDeviceFirst(t *testing.T) {
	fs := newFakeFS()
	r := &refresher{err: errors.New("rbd-fuse gone")}
	e := newTestDriver(t, withFS(fs), func(c *Config) { c.Refresher = r })
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "id1")
	fs.setSizes("/dev/fake0", Sizes{Device: 3 << 30, FS: 1 << 30})
	ctx, cancel := context.WithCancel(bg)
	done := make(chan struct{})
	go func() { e.d.WatchGrowth(ctx, 20*time.Millisecond); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	waitFor(t, "two refresh attempts", func() bool { return r.count() >= 2 })
	if n := fs.growCount(); n != 0 {
		t.Fatalf("%d grows after failed refreshes", n)
	}
	r.mu.Lock()
	r.err = nil
	if r.calls[0] != image("v") {
		t.Errorf("refreshed %v, want the volume's image %v", r.calls[0], image("v"))
	}
	r.mu.Unlock()
	waitFor(t, "a grow once the refresh works", func() bool { return fs.growCount() == 1 })
}
