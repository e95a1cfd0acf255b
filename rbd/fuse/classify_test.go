package fuse

import (
	"context"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// fakeMounts makes h's mount table hold the given FUSE mounts (one entry per mount point given,
// repeated for a stacked mount).
func (h *fakeHost) fakeMounts(dirs ...string) {
	var infos []*mountinfo.Info
	for _, d := range dirs {
		infos = append(infos, &mountinfo.Info{Mountpoint: d, FSType: "fuse.rbd-fuse", Source: "rbd-fuse"})
	}
	h.f.mountTable = func(filter mountinfo.FilterFunc) ([]*mountinfo.Info, error) {
		var out []*mountinfo.Info
		for _, i := range infos {
			skip, stop := false, false
			if filter != nil {
				skip, stop = filter(i)
			}
			if !skip {
				out = append(out, i)
			}
			if stop {
				break
			}
		}
		return out, nil
	}
}

// mapped makes image a mapping of h: loop n backed by its file, a single rbd-fuse mount and
// (with pid > 0) its daemon.
func (h *fakeHost) mapped(n, pid int, spec driver.ImageSpec) string {
	dir := h.f.mountDir(spec)
	h.loop(n, h.f.imageFile(spec))
	if pid > 0 {
		h.proc(pid, "rbd-fuse", "-c", "/etc/ceph/ceph.conf", "-p", spec.Pool, "-r", spec.Image, dir)
	}
	return dir
}

// asker is a scripted rbd-fuse: per loop device, the verdict it gives, or (hung) no answer until
// the test ends; it counts the questions and the most in flight at once.
type asker struct {
	mu       sync.Mutex
	verdicts map[string]verdict
	hung     map[string]bool
	asked    []string
	inFlight int
	most     int
	gate     chan struct{} // when set, each question waits for it (or for the release)
	release  chan struct{} // closed at the end of the test: the hung ones return then
}

func newAsker(t *testing.T, f *Fuse) *asker {
	a := &asker{verdicts: map[string]verdict{}, hung: map[string]bool{}, release: make(chan struct{})}
	t.Cleanup(func() { close(a.release) })
	f.ask = a.ask
	return a
}

func (a *asker) ask(dev, _ string, _ bool) verdict {
	a.mu.Lock()
	a.asked = append(a.asked, filepath.Base(dev))
	a.inFlight++
	a.most = max(a.most, a.inFlight)
	v, hung, gate := a.verdicts[dev], a.hung[dev], a.gate
	a.mu.Unlock()
	defer func() { a.mu.Lock(); a.inFlight--; a.mu.Unlock() }()
	if hung {
		<-a.release
		return verdictUnknown
	}
	if gate != nil {
		select {
		case <-gate:
		case <-a.release:
		}
	}
	return v
}

func (a *asker) questions() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.asked)
}

// A loop whose directory has one FUSE mount served by a running rbd-fuse is a live mapping
// without a question to its daemon (each question costs rbd-fuse a listing of its pool); only the
// loops without a visible daemon are asked.
func TestListAsksNoDaemonThatVisiblyRuns(t *testing.T) {
	h := newFakeHost(t)
	a := newAsker(t, h.f)
	var dirs []string
	for i := 0; i < 40; i++ {
		dirs = append(dirs, h.mapped(100+i, 1000+i, driver.ImageSpec{Pool: "rbd", Image: "vol" + strconv.Itoa(i)}))
	}
	dead := driver.ImageSpec{Pool: "rbd", Image: "dead"}
	dirs = append(dirs, h.mapped(7, 0, dead)) // its daemon died: the mount stays, answering ENOTCONN
	a.verdicts[filepath.Join(h.f.DevRoot, "loop7")] = verdictStale
	h.fakeMounts(dirs...)

	live, stale, err := h.f.fullScan(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(live) != 40 || slices.Contains(devices(live), "loop7") {
		t.Fatalf("live = %v, want the 40 loops with a running daemon", devices(live))
	}
	if len(stale) != 1 || stale[0].Spec != dead {
		t.Fatalf("stale = %+v, want loop7 of %s", stale, dead)
	}
	if got := a.questions(); !slices.Equal(got, []string{"loop7"}) {
		t.Fatalf("questions to daemons = %v, want only loop7 (no running daemon)", got)
	}
	// Map and Unmap of a mapped image verify its recorded daemon the same way.
	if live, _, err := h.f.lookup(context.Background(), driver.ImageSpec{Pool: "rbd", Image: "vol3"}); err != nil || !slices.Equal(devices(live), []string{"loop103"}) {
		t.Fatalf("lookup(vol3) = %v, %v; want loop103", devices(live), err)
	}
	if got := a.questions(); len(got) != 1 {
		t.Fatalf("questions after the lookup = %v, want no new one", got)
	}
}

// A running daemon does not vouch for a loop when its directory has two mounts (a new rbd-fuse
// mounted over a dead one whose loop shares the path): that loop's daemon is asked.
func TestListAsksUnderAStackedMount(t *testing.T) {
	h := newFakeHost(t)
	a := newAsker(t, h.f)
	spec := driver.ImageSpec{Pool: "rbd", Image: "vol"}
	dir := h.mapped(3, 300, spec)
	h.fakeMounts(dir, dir)
	a.verdicts[filepath.Join(h.f.DevRoot, "loop3")] = verdictStale
	live, stale, err := h.f.fullScan(context.Background(), nil)
	if err != nil || len(live) != 0 || len(stale) != 1 {
		t.Fatalf("scan = %v %v %v, want loop3 stale (asked)", devices(live), stale, err)
	}
	if got := a.questions(); !slices.Equal(got, []string{"loop3"}) {
		t.Fatalf("questions = %v, want loop3 asked", got)
	}
}

// The daemons without a visible process are asked askWorkers at a time, not one after another.
func TestListAsksDaemonsConcurrently(t *testing.T) {
	h := newFakeHost(t)
	a := newAsker(t, h.f)
	const n = 3 * askWorkers
	for i := 0; i < n; i++ {
		h.mapped(10+i, 0, driver.ImageSpec{Pool: "rbd", Image: "vol" + strconv.Itoa(i)})
	}
	h.fakeMounts()
	a.gate = make(chan struct{})
	go func() { // open the gate once askWorkers questions are in flight together
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			a.mu.Lock()
			full := a.inFlight == askWorkers
			a.mu.Unlock()
			if full {
				break
			}
		}
		close(a.gate)
	}()
	live, err := h.f.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(live) != n {
		t.Fatalf("%d live, want %d (an unknown answer counts as mapped)", len(live), n)
	}
	a.mu.Lock()
	most, asked := a.most, len(a.asked)
	a.mu.Unlock()
	if most != askWorkers || asked != n {
		t.Fatalf("at most %d questions at once (of %d asked), want exactly %d at once", most, asked, askWorkers)
	}
}

// A daemon that does not answer holds up the List only for its own deadline (here 200 ms; the
// others are answered meanwhile), and is counted as mapped with a warning: mapping the image
// twice would be worse.
func TestListDoesNotWaitForAHungDaemon(t *testing.T) {
	h := newFakeHost(t)
	a := newAsker(t, h.f)
	logger, hook := logtest.NewNullLogger()
	h.f.Log = logger
	h.f.askTimeout = 200 * time.Millisecond
	for i := 0; i < 20; i++ {
		h.mapped(i, 0, driver.ImageSpec{Pool: "rbd", Image: "vol" + strconv.Itoa(i)})
		a.verdicts[filepath.Join(h.f.DevRoot, "loop"+strconv.Itoa(i))] = verdictStale
	}
	hung := driver.ImageSpec{Pool: "rbd", Image: "vol5"}
	a.hung[filepath.Join(h.f.DevRoot, "loop5")] = true
	h.fakeMounts()

	start := time.Now()
	live, stale, err := h.f.fullScan(context.Background(), nil)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if took > 2*time.Second {
		t.Fatalf("List took %s with one hung daemon, want about its 200 ms deadline", took)
	}
	if len(live) != 1 || live[0].ImageSpec != hung {
		t.Fatalf("live = %+v, want only the hung %s (counted as mapped)", live, hung)
	}
	if len(stale) != 19 {
		t.Fatalf("%d stale, want the 19 dead ones", len(stale))
	}
	warned := false
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel && e.Data["image"] == hung.String() {
			warned = true
		}
	}
	if !warned {
		t.Fatalf("no warning names the hung daemon's image %s: %v", hung, hook.AllEntries())
	}

	// The parent context still ends everything: a List whose caller gives up fails.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	h.f.askTimeout = time.Minute
	if _, err := h.f.List(ctx); err == nil {
		t.Fatal("List past its caller's deadline succeeded")
	}
}

// A Map (lookup) of an image right after a restart does not wait for the start-up List, which
// asks every daemon without a visible process: it asks only its own image's.
func TestLookupDoesNotWaitForTheStartupList(t *testing.T) {
	h := newFakeHost(t)
	a := newAsker(t, h.f)
	h.f.askTimeout = time.Minute
	for i := 0; i < 5; i++ {
		h.mapped(i, 0, driver.ImageSpec{Pool: "rbd", Image: "old" + strconv.Itoa(i)})
		a.hung[filepath.Join(h.f.DevRoot, "loop"+strconv.Itoa(i))] = true // slow to answer
	}
	spec := driver.ImageSpec{Pool: "rbd", Image: "new"}
	h.mapped(9, 0, spec)
	a.verdicts[filepath.Join(h.f.DevRoot, "loop9")] = verdictLive
	h.fakeMounts()

	listed := make(chan error, 1)
	go func() { _, err := h.f.List(context.Background()); listed <- err }()
	for deadline := time.Now().Add(5 * time.Second); len(a.questions()) < 5; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the List never asked the old daemons: %v", a.questions())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	live, _, err := h.f.lookup(ctx, spec)
	if err != nil || !slices.Equal(devices(live), []string{"loop9"}) {
		t.Fatalf("lookup(new) during the start-up List = %v, %v; want loop9 at once", devices(live), err)
	}
	select {
	case err := <-listed:
		t.Fatalf("the List ended (%v) before its hung daemons answered: the test proves nothing", err)
	default:
	}
	if got := a.questions(); !slices.Contains(got, "loop9") {
		t.Fatalf("questions = %v, want loop9 asked by the lookup (and the List)", got)
	}
}

// The per-daemon lock (probe) is waited for within the question's deadline too: a question stuck
// in a daemon does not make the next question of that daemon wait past its own deadline.
func TestQuestionWaitsForItsDaemonWithinTheDeadline(t *testing.T) {
	h := newFakeHost(t)
	h.f.askTimeout = 100 * time.Millisecond
	release, err := h.f.probe(context.Background(), "vol")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	var asked atomic.Bool
	h.f.ask = func(string, string, bool) verdict { asked.Store(true); return verdictLive }
	start := time.Now()
	v := h.f.askOne(context.Background(), &candidate{dev: "/dev/loop1", spec: driver.ImageSpec{Pool: "rbd", Image: "vol"}})
	if v != verdictHung || asked.Load() {
		t.Fatalf("verdict %v (asked %v) while another question holds the daemon, want hung and not asked", v, asked.Load())
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("waited %s for the daemon, want its 100 ms deadline", took)
	}
}
