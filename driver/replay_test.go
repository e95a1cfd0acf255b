package driver

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// hostProv is the fake backend as one host's plugin sees it: its Detach releases that host's
// claims, and it records every AttachRequest.
type hostProv struct {
	*fakeProvisioner
	host string

	mu   sync.Mutex
	reqs []AttachRequest
}

func (h *hostProv) Attach(ctx context.Context, name string, req AttachRequest) (Attachment, error) {
	h.mu.Lock()
	h.reqs = append(h.reqs, req)
	h.mu.Unlock()
	return h.fakeProvisioner.Attach(ctx, name, req)
}

func (h *hostProv) Detach(ctx context.Context, name string, att Attachment) error {
	return h.detachAs(ctx, name, att, h.host)
}

func (h *hostProv) requests() []AttachRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.reqs)
}

// replays counts the exclusive claims made to replay a journal.
func (h *hostProv) replays() int {
	n := 0
	for _, r := range h.requests() {
		if r.IgnoreAccess {
			n++
		}
	}
	return n
}

// testPace keeps the waits of the replay tests short.
var testPace = replayPace{total: 3 * time.Second, step: 2 * time.Millisecond}

// recordClaims makes e.d a plugin on a hostProv over e's fakes (same state and settings) and
// returns it.
func (e *testEnv) recordClaims(t *testing.T) *hostProv {
	t.Helper()
	hp := &hostProv{fakeProvisioner: e.prov, host: e.cfg.Node}
	e.d = New(e.cfg, hp, e.mapper, e.mounter, e.store)
	e.d.replayPace = testPace
	if err := e.d.Reconcile(bg); err != nil {
		t.Fatal(err)
	}
	return hp
}

// replayHost is another host's plugin on e's backend, mapper and mounter (their devices stand for
// the same image), with its own name, mount root and state.
func (e *testEnv) replayHost(t *testing.T, node string) (*Driver, *hostProv) {
	t.Helper()
	hp := &hostProv{fakeProvisioner: e.prov, host: node}
	cfg := e.cfg
	cfg.Node, cfg.MountRoot = node, t.TempDir()
	files, err := NewFileStore(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	d := New(cfg, hp, e.mapper, e.mounter, files)
	d.replayPace = testPace
	if err := d.Reconcile(bg); err != nil {
		t.Fatal(err)
	}
	return d, hp
}

// dirtyVolume adds volume v, with access, carrying an ext4 filesystem whose journal needs
// replaying (mapped at /dev/fake0 each time).
func (e *testEnv) dirtyVolume(access string) {
	e.mapper.reuse = true
	if access == AccessReadOnly {
		e.readOnlyVolume("v")
	} else {
		e.prov.add("v", 1<<30, "ext4")
		e.mounter.setFS("/dev/fake0", "ext4")
	}
	e.setDirty()
}

// setDirty marks v's filesystem (at /dev/fake0) as needing its journal replayed.
func (e *testEnv) setDirty() {
	e.mounter.mu.Lock()
	defer e.mounter.mu.Unlock()
	e.mounter.dirty["/dev/fake0"] = true
}

func (e *testEnv) isDirty() bool {
	e.mounter.mu.Lock()
	defer e.mounter.mu.Unlock()
	return e.mounter.dirty["/dev/fake0"]
}

func (e *testEnv) replayCount() int {
	e.mounter.mu.Lock()
	defer e.mounter.mu.Unlock()
	return e.mounter.replays
}

// exclusiveAtReplay fails t when a journal is replayed while the volume is not held by exactly
// one writer and no reader: a replay under a reader would change what it reads.
func (e *testEnv) exclusiveAtReplay(t *testing.T) {
	e.mounter.onReplay = func(string) {
		e.prov.mu.Lock()
		defer e.prov.mu.Unlock()
		if len(e.prov.readers["v"]) > 0 || e.prov.holders["v"] == "" {
			t.Errorf("journal replayed with readers %v and writer %q; want only a writer", e.prov.readers["v"], e.prov.holders["v"])
		}
	}
}

func hasRO(options string) bool { return slices.Contains(strings.Split(options, ","), "ro") }

// The first read-only use of a volume whose journal needs replaying replays it once: its
// read-only mount is refused (EROFS) and undone, an exclusive read-write claim (IgnoreAccess,
// never a takeover even with LOCK_BREAK=on) is mapped, mounted read-write and released, nothing
// formatted, and then the volume is claimed and mounted read-only as asked. Later uses do
// nothing of the sort. For a volume whose access is readonly (a Mount) and for a shared
// read-only use of a readwrite one (CSI's MULTI_NODE_READER_ONLY).
func TestReadOnlyUseReplaysTheJournal(t *testing.T) {
	for _, tc := range []struct {
		name   string
		access string
		use    Use
	}{
		{"access=readonly", AccessReadOnly, Use{}},
		{"shared read-only use", "", Use{ReadOnly: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestDriver(t, func(c *Config) { c.LockBreak = true })
			hp := e.recordClaims(t)
			e.dirtyVolume(tc.access)
			e.exclusiveAtReplay(t)
			m := e.rec.mark()
			if _, err := e.d.Use(bg, "v", "id1", tc.use); err != nil {
				t.Fatal(err)
			}
			assertOps(t, "first read-only use of a dirty volume", e.rec.ops(m),
				"prov.Attach v", "map.Map v", "mnt.Mount v", "map.Unmap v", "prov.Detach v", // refused: EROFS
				"prov.Attach v", "map.Map v", "mnt.Mount v", "mnt.Unmount v", "map.Unmap v", "prov.Detach v", // the replay
				"prov.Attach v", "map.Map v", "mnt.Mount v")
			reqs := hp.requests()
			if len(reqs) != 3 {
				t.Fatalf("claims %+v, want 3", reqs)
			}
			if r := reqs[1]; !r.IgnoreAccess || r.ReadOnly || r.TakeOver || r.MountID != replayID("v") {
				t.Errorf("the replay's claim %+v; want exclusive (IgnoreAccess, not ReadOnly), no takeover, under %s", r, replayID("v"))
			}
			for _, r := range []AttachRequest{reqs[0], reqs[2]} {
				if r.IgnoreAccess || r.ReadOnly != tc.use.ReadOnly || r.MountID != "id1" {
					t.Errorf("the use's claim %+v", r)
				}
			}
			if got := e.mounter.mountCalls(); len(got) != 2 || hasRO(got[0].options) || !hasRO(got[1].options) {
				t.Errorf("mounts %+v; want the replay's read-write, then the use's read-only", got)
			}
			if n := e.mounter.count("FormatIfBlank"); n != 0 || e.isDirty() || e.replayCount() != 1 {
				t.Errorf("formatted %d times, still dirty %v, %d replays; want 0, false, 1", n, e.isDirty(), e.replayCount())
			}
			if st, _ := e.state("v"); !st.Attach.Map.ReadOnly || !slices.Equal(st.IDs, []string{"id1"}) {
				t.Errorf("state %+v; want up read-only under id1", st)
			}
			if !logged(e, "journal replayed") {
				t.Error("the replay is not logged")
			}
			// Another use on this host: nothing claimed again.
			m = e.rec.mark()
			if _, err := e.d.Use(bg, "v", "id2", tc.use); err != nil {
				t.Fatal(err)
			}
			assertOps(t, "another use", e.rec.ops(m))
			e.mustUnmount("v", "id1")
			e.mustUnmount("v", "id2")
			e.assertGone("v")
		})
	}
}

// logged says whether the driver logged msg.
func logged(e *testEnv, msg string) bool {
	for _, en := range e.logs.AllEntries() {
		if en.Message == msg || strings.HasPrefix(en.Message, msg) {
			return true
		}
	}
	return false
}

// A CSI shared stage (MULTI_NODE_READER_ONLY) of a volume whose journal needs replaying replays
// it the same way: the stage goes through Driver.Use.
func TestNodeSharedStageReplaysTheJournal(t *testing.T) {
	e := newTestDriver(t)
	n := newTestNode(t, e)
	filledVolume(t, e)
	e.setDirty()
	if err := n.Stage(bg, "v", StageRequest{StagingPath: stg, Shared: true}); err != nil {
		t.Fatal(err)
	}
	e.assertSharedUp("csi:" + stg)
	if e.isDirty() || e.replayCount() != 1 {
		t.Errorf("after the stage: dirty %v, %d replays; want clean, 1", e.isDirty(), e.replayCount())
	}
	if err := n.Unstage(bg, "v", stg); err != nil {
		t.Fatal(err)
	}
	e.assertGone("v")
}

// The replay never happens beside another host's claim. Another host's read-only claim (a reader
// preparing the volume too) makes the exclusive claim fail: the use waits and claims read-only
// again, and once its wait is spent it fails naming the holder and saying to retry; nothing was
// replayed, and the reader's claim is untouched. Beside a writer (which may be a reader
// replaying the journal) the read-only claim itself is refused: the use waits and tries again,
// then fails naming the writer and saying it waited; no replay is tried.
func TestReplayNeverBesideAnotherHost(t *testing.T) {
	t.Run("reader", func(t *testing.T) {
		e := newTestDriver(t)
		hp := e.recordClaims(t)
		e.d.replayPace = replayPace{total: 150 * time.Millisecond, step: 5 * time.Millisecond}
		e.dirtyVolume(AccessReadOnly)
		e.exclusiveAtReplay(t)
		e.prov.mu.Lock()
		e.prov.readers["v"] = map[string]bool{"host-b": true}
		e.prov.mu.Unlock()
		start := time.Now()
		_, err := e.d.Mount(bg, "v", "id1")
		took := time.Since(start)
		if !errors.Is(err, ErrBusyElsewhere) {
			t.Fatalf("Mount: %v; want ErrBusyElsewhere", err)
		}
		for _, s := range []string{"volume v", "journal needs replaying", "host-b", "being prepared", "retry"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%q does not say %q", err, s)
			}
		}
		if n := hp.replays(); n < 2 {
			t.Errorf("%d exclusive claims tried; want it to wait and try again", n)
		}
		if e.replayCount() != 0 || !e.isDirty() {
			t.Errorf("replayed %d times beside a reader", e.replayCount())
		}
		if took > 2*time.Second {
			t.Errorf("the wait took %s; its bound is 150ms", took)
		}
		e.prov.mu.Lock()
		if !e.prov.readers["v"]["host-b"] {
			t.Error("host-b's read-only claim was dropped")
		}
		e.prov.mu.Unlock()
		e.assertGone("v")
	})
	t.Run("writer", func(t *testing.T) {
		e := newTestDriver(t)
		hp := e.recordClaims(t)
		e.d.replayPace = replayPace{total: 150 * time.Millisecond, step: 5 * time.Millisecond}
		e.dirtyVolume(AccessReadOnly)
		e.prov.setHolder("v", "host-b")
		_, err := e.d.Mount(bg, "v", "id1")
		if !errors.Is(err, ErrBusyElsewhere) || !strings.Contains(err.Error(), "in use read-write by host-b") || !strings.Contains(err.Error(), "waited") {
			t.Fatalf("Mount beside a writer: %v", err)
		}
		got := hp.requests()
		if len(got) < 2 || hp.replays() != 0 || e.replayCount() != 0 {
			t.Errorf("claims %+v, %d replays; want read-only claims, refused, and no replay", got, e.replayCount())
		}
		if e.prov.holder("v") != "host-b" {
			t.Error("the writer's claim was dropped")
		}
	})
	// A shared read-only use (CSI's readers' stage) of a readwrite volume a writer holds is
	// refused at once, naming the writer: swarm retries the stage, and the writer may hold it
	// for hours.
	t.Run("writer of a readwrite volume", func(t *testing.T) {
		e := newTestDriver(t)
		hp := e.recordClaims(t)
		e.d.replayPace = replayPace{total: 10 * time.Second, step: time.Second}
		e.dirtyVolume("")
		e.prov.setHolder("v", "host-b")
		start := time.Now()
		_, err := e.d.Use(bg, "v", "id1", Use{ReadOnly: true})
		if !errors.Is(err, ErrBusyElsewhere) || !strings.Contains(err.Error(), "host-b") || strings.Contains(err.Error(), "waited") {
			t.Fatalf("shared read-only use beside a writer: %v; want refused at once naming host-b", err)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("refused after %s; want at once (no wait for a replay)", took)
		}
		if got := hp.requests(); len(got) != 1 || !got[0].ReadOnly {
			t.Errorf("claims %+v; want the one read-only claim", got)
		}
		if e.prov.holder("v") != "host-b" {
			t.Error("the writer's claim was dropped")
		}
	})
}

// Two hosts' first read-only uses at once, on a volume whose journal needs replaying: the
// exclusive claim lets one replay at a time, never beside a reader, and both end up reading.
// (The loser may find the journal replayed or claim after the winner released it: a second
// replay is then a read-write mount of a clean filesystem, still under an exclusive claim.)
func TestTwoReadersAtOnceReplayUnderOneClaim(t *testing.T) {
	e := newTestDriver(t)
	e.recordClaims(t)
	b, _ := e.replayHost(t, "host-b")
	e.dirtyVolume(AccessReadOnly)
	e.exclusiveAtReplay(t)
	waited, twice := 0, 0
	const rounds = 40
	for round := range rounds {
		before := e.replayCount()
		e.setDirty()
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, d := range []*Driver{e.d, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = d.Mount(bg, "v", fmt.Sprintf("r%d", round))
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			for _, en := range e.logs.AllEntries() {
				t.Logf("%s %v", en.Message, en.Data)
			}
			t.Fatalf("round %d: host-a: %v; host-b: %v", round, errs[0], errs[1])
		}
		switch n := e.replayCount() - before; n {
		case 1:
		case 2:
			twice++
		default:
			t.Fatalf("round %d: %d replays", round, n)
		}
		for _, d := range []*Driver{e.d, b} {
			if err := d.Unmount(bg, "v", fmt.Sprintf("r%d", round)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, en := range e.logs.AllEntries() {
		if strings.HasPrefix(en.Message, "another host holds the volume") {
			waited++
		}
	}
	t.Logf("%d rounds: %d waits for the other host, %d rounds replayed twice (one after the other)", rounds, waited, twice)
	e.assertGone("v")
}

// The loser of the exclusive claim waits, claims read-only again while the winner replays (refused:
// the winner holds it read-write), and mounts read-only once the winner is done, without a
// replay of its own.
func TestReplayLoserWaitsForTheWinner(t *testing.T) {
	e := newTestDriver(t)
	hp := e.recordClaims(t)
	e.dirtyVolume(AccessReadOnly)
	g := e.mounter.block(t, "Mount", "v")
	done := make(chan error, 1)
	go func() { _, err := e.d.Mount(bg, "v", "id1"); done <- err }()
	<-g.entered // this host holds its read-only claim and is about to mount
	// host-b wins the exclusive claim (its replay under way) before this host asks for it.
	e.prov.setHolder("v", "host-b")
	g.open()
	waitFor(t, "a read-only claim after the refused exclusive one", func() bool {
		r := hp.requests()
		return len(r) >= 3 && r[1].IgnoreAccess && !r[2].IgnoreAccess
	})
	// host-b's replay ends: the journal is clean and host-b lets go (then reads, like this host).
	e.mounter.mu.Lock()
	delete(e.mounter.dirty, "/dev/fake0")
	e.mounter.mu.Unlock()
	e.prov.setHolder("v", "")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := hp.replays(); n != 1 || e.replayCount() != 0 {
		t.Errorf("%d exclusive claims, %d replays here; want the one refused and none", n, e.replayCount())
	}
	if st, _ := e.state("v"); !st.Attach.Map.ReadOnly {
		t.Errorf("state %+v; want up read-only", st)
	}
	if !logged(e, "another host holds the volume") {
		t.Error("the wait is not logged")
	}
	e.mustUnmount("v", "id1")
	e.assertGone("v")
}

// A replay that fails (the read-write mount is refused) is undone, leaves the journal as it
// was, and says how to replay it by hand.
func TestReplayFailureIsUndone(t *testing.T) {
	e := newTestDriver(t)
	e.recordClaims(t)
	e.dirtyVolume(AccessReadOnly)
	e.mounter.failNext("Mount", nil, errors.New("structure needs cleaning"))
	_, err := e.d.Mount(bg, "v", "id1")
	if err == nil {
		t.Fatal("Mount succeeded")
	}
	for _, s := range []string{"volume v", "replaying its filesystem's journal", "structure needs cleaning", MetaAccess} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("%q does not say %q", err, s)
		}
	}
	if !e.isDirty() {
		t.Error("the journal was replayed")
	}
	e.assertGone("v")
}

// A crash of the plugin while it replays (the volume mounted read-write under the replay's claim)
// is undone at the restart: the replay's ID is no use to keep. The next read-only use finds
// the journal replayed.
func TestReplayInterruptedByACrash(t *testing.T) {
	e := newTestDriver(t)
	e.recordClaims(t)
	e.dirtyVolume(AccessReadOnly)
	e.crashing(FaultMountMounted, func() { _, _ = e.d.Mount(bg, "v", "id1") })
	if st, ok := e.state("v"); !ok || st.Op != OpMount || st.OpID != replayID("v") {
		t.Fatalf("state after the crash: %+v; want the replay's mount in flight", st)
	}
	e.restart()
	if err := e.d.Reconcile(bg); err != nil {
		t.Fatal(err)
	}
	e.assertGone("v")
	e.d.replayPace = testPace
	e.mustMount("v", "id1")
	if st, _ := e.state("v"); !st.Attach.Map.ReadOnly || e.replayCount() != 1 {
		t.Errorf("state %+v, %d replays; want up read-only after the one replay", st, e.replayCount())
	}
	e.mustUnmount("v", "id1")
	e.assertGone("v")
}

// The waits of one use stay within their budget and their context's deadline, and grow.
func TestReplayPaceIsBounded(t *testing.T) {
	p := replayPace{total: 100 * time.Millisecond, step: 4 * time.Millisecond}
	var waited time.Duration
	tries := 0
	start := time.Now()
	for p.pause(bg, tries, &waited) {
		tries++
	}
	if took := time.Since(start); waited > p.total || took > time.Second || tries < 4 {
		t.Errorf("%d pauses, %s counted, %s taken; want at least 4 within %s", tries, waited, took, p.total)
	}
	ctx, cancel := context.WithTimeout(bg, 10*time.Millisecond)
	defer cancel()
	waited = 0
	if p := (replayPace{total: time.Minute, step: time.Second}); p.pause(ctx, 0, &waited) || waited != 0 {
		t.Errorf("a pause longer than the context's deadline was taken (%s)", waited)
	}
}
