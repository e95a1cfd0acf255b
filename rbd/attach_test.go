package rbd

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// decideAttach, branch by branch, from what Ceph could report: who holds the image, who watches
// it, which of those are this host's, and what LOCK_BREAK says.
func TestDecideAttach(t *testing.T) {
	mine := Locker{Client: "client.1", Cookie: HostCookie("node-1", idA), Addr: "10.0.0.1:0/100"}
	other := Locker{Client: "client.42", Cookie: HostCookie("node-2", idB), Addr: "10.0.0.2:0/7"}
	twin := Locker{Client: "client.43", Cookie: HostCookie("node-1", idB), Addr: "10.0.0.3:0/8"}
	legacyMine := Locker{Client: "client.1", Cookie: HostCookie("node-1", ""), Addr: "10.0.0.1:0/100"}
	remote := Watcher{Addr: "10.0.0.2:0/9"}
	local := Watcher{Addr: "10.0.0.1:0/555"}
	pol := attachPolicy{Name: "vol", Host: "node-1", HostID: idA}
	lockBreak := pol
	lockBreak.TakeOver = true
	claimedLegacy := pol
	claimedLegacy.Claimed = legacyMine.Cookie

	cases := []struct {
		what   string
		pol    attachPolicy
		f      attachFacts
		want   attachAction
		holder string   // in Holder (or the refusal)
		says   []string // in the refusal
		kind   error    // of the refusal
	}{
		{what: "nobody has it", pol: pol, f: attachFacts{}, want: actLock},
		{what: "this host's lock, unwatched", pol: pol, f: attachFacts{Lockers: []Locker{mine}}, want: actHeld},
		{what: "this host's lock under the old name-only cookie its state names", pol: claimedLegacy,
			f: attachFacts{Lockers: []Locker{legacyMine}}, want: actHeld},
		{what: "this host's lock, watched: which clients are this host's?", pol: pol,
			f: attachFacts{Lockers: []Locker{mine}, Watchers: []Watcher{remote}}, want: actLookLocal},
		{what: "this host's lock, watched by this host's krbd client", pol: pol,
			f: attachFacts{Lockers: []Locker{mine}, Watchers: []Watcher{{Addr: "v1:10.0.0.7:0/1"}}, LocalKnown: true,
				SelfAddr: mine.Addr, Local: []string{"10.0.0.7:0/1"}, LocalExact: true}, want: actHeld},
		{what: "this host's lock, watched by an rbd-fuse at this host's IP", pol: pol,
			f: attachFacts{Lockers: []Locker{mine}, Watchers: []Watcher{local}, LocalKnown: true, SelfAddr: mine.Addr}, want: actHeld},
		{what: "this host's lock, watched at this IP but krbd knows all its clients", pol: pol,
			f:    attachFacts{Lockers: []Locker{mine}, Watchers: []Watcher{local}, LocalKnown: true, SelfAddr: mine.Addr, LocalExact: true},
			want: actWaitForeign},
		{what: "this host's lock, watched by another machine", pol: pol,
			f: attachFacts{Lockers: []Locker{mine}, Watchers: []Watcher{remote}, LocalKnown: true, SelfAddr: mine.Addr}, want: actWaitForeign},
		{what: "this host's lock, the foreign watch lapsed", pol: pol,
			f: attachFacts{Phase: phaseWaitedForeign, Lockers: []Locker{mine}}, want: actHeld},
		{what: "this host's lock, another machine keeps it open", pol: pol,
			f:    attachFacts{Phase: phaseWaitedForeign, Lockers: []Locker{mine}, Live: []Watcher{remote}},
			want: actRefuse, kind: driver.ErrBusyElsewhere,
			says: []string{"volume vol", "held under this host's identity", "host node-1 (host ID " + idA[:12], remote.Addr, driver.HostIDFile}},
		{what: "another host's lock", pol: pol, f: attachFacts{Lockers: []Locker{other}, Watchers: []Watcher{remote}},
			want: actRefuse, kind: driver.ErrBusyElsewhere,
			says: []string{"volume vol is in use by host node-2 (host ID " + idB[:12] + ", client.42 at 10.0.0.2:0/7)", "LOCK_BREAK=on"}},
		{what: "another machine with this host's name", pol: pol, f: attachFacts{Lockers: []Locker{twin}},
			want: actRefuse, kind: driver.ErrBusyElsewhere, says: []string{"host node-1 (host ID " + idB[:12], "NODE_NAME", idA[:12]}},
		{what: "an old name-only lock under this name that this host's state does not name", pol: pol,
			f: attachFacts{Lockers: []Locker{legacyMine}}, want: actRefuse, kind: driver.ErrBusyElsewhere,
			says: []string{"host node-1 (client.1 at 10.0.0.1:0/100)", "older format"}},
		{what: "another host's lock, LOCK_BREAK=on: wait for its watch", pol: lockBreak,
			f: attachFacts{Lockers: []Locker{other}, Watchers: []Watcher{remote}}, want: actWaitWatchers, holder: "host node-2"},
		{what: "watched without a lock: wait for it to lapse, LOCK_BREAK or not", pol: pol,
			f: attachFacts{Watchers: []Watcher{remote}}, want: actWaitWatchers, holder: "client(s) 10.0.0.2:0/9 (mapped without this plugin"},
		{what: "after the wait, the holder is alive (LOCK_BREAK=on)", pol: lockBreak,
			f:    attachFacts{Phase: phaseWaited, Holder: "host node-2 (x)", Live: []Watcher{remote}},
			want: actRefuse, kind: driver.ErrBusyElsewhere,
			says: []string{"volume vol is in use by host node-2 (x)", "the holder is alive", "client " + remote.Addr, "only from a dead host"}},
		{what: "after the wait, a client kept watching", pol: pol,
			f:    attachFacts{Phase: phaseWaited, Holder: "client(s) 10.0.0.2:0/9", Live: []Watcher{remote}},
			want: actRefuse, kind: driver.ErrBusyElsewhere,
			says: []string{"volume vol is in use by client(s) 10.0.0.2:0/9", "kept watching", "unmap it there first"}},
		{what: "after the wait, nobody is left", pol: pol, f: attachFacts{Phase: phaseWaited, Holder: "h"}, want: actLock},
		{what: "after the wait, another host locked it meanwhile", pol: pol,
			f:    attachFacts{Phase: phaseWaited, Holder: "h", Lockers: []Locker{other}},
			want: actRefuse, kind: driver.ErrBusyElsewhere, says: []string{"volume vol was just attached by host node-2"}},
		{what: "after the wait, LOCK_BREAK=on fences the dead holder", pol: lockBreak,
			f: attachFacts{Phase: phaseWaited, Holder: "h", Lockers: []Locker{other}}, want: actFence, holder: "host node-2"},
	}
	for _, c := range cases {
		t.Run(c.what, func(t *testing.T) {
			d := decideAttach(c.pol, c.f)
			if d.Action != c.want {
				t.Fatalf("action = %v (err %v), want %v", d.Action, d.Err, c.want)
			}
			if !strings.Contains(d.Holder, c.holder) {
				t.Errorf("holder = %q, want it to name %q", d.Holder, c.holder)
			}
			if c.want != actRefuse {
				if d.Err != nil {
					t.Errorf("err = %v with action %v", d.Err, d.Action)
				}
				return
			}
			if !errors.Is(d.Err, c.kind) {
				t.Errorf("refusal %v is not %v", d.Err, c.kind)
			}
			for _, s := range c.says {
				if !strings.Contains(d.Err.Error(), s) {
					t.Errorf("refusal %q does not say %q", d.Err, s)
				}
			}
		})
	}
}

// What decideAttach hands to the action: the cookie of this host's lock, the locks to break.
func TestDecideAttachCarriesWhatTheActionNeeds(t *testing.T) {
	mine := Locker{Cookie: HostCookie("node-1", idA)}
	other := Locker{Client: "client.42", Cookie: HostCookie("node-2", idB), Addr: "10.0.0.2:0/7"}
	pol := attachPolicy{Name: "vol", Host: "node-1", HostID: idA, TakeOver: true}
	if d := decideAttach(pol, attachFacts{Lockers: []Locker{other, mine}}); d.Action != actHeld || d.Cookie != mine.Cookie {
		t.Errorf("held: %+v", d)
	}
	d := decideAttach(pol, attachFacts{Phase: phaseWaited, Holder: "h", Lockers: []Locker{mine, other}})
	if d.Action != actFence || len(d.Others) != 1 || d.Others[0] != other {
		t.Errorf("fence: %+v, want only the other host's lock to break", d)
	}
	for a := actLock; a <= actFence; a++ {
		if a.String() == "" {
			t.Errorf("action %d has no name", a)
		}
	}
}

// The attach as a whole, against a fake cluster.

func attachFixture(t *testing.T) (*fakeCeph, *Provisioner, Spec) {
	t.Helper()
	f := newFake()
	p := newProvisioner(f, ProvisionerConfig{Pool: "volumes", Host: "node-1", HostID: idA})
	spec := Spec{Pool: "volumes", Image: "vol"}
	f.add(spec, 1<<30).meta[metaFSType] = "xfs"
	return f, p, spec
}

func TestAttachTakesTheHostLock(t *testing.T) {
	f, p, spec := attachFixture(t)
	f.unwritten = true
	att, err := p.Attach(context.Background(), "vol", driver.AttachRequest{Host: "node-1", MountID: "m1", ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if att.ID != HostCookie("node-1", idA) || len(f.image(spec).lockers) != 1 || f.image(spec).lockers[0].Cookie != att.ID {
		t.Fatalf("attachment %q, locks %+v", att.ID, f.image(spec).lockers)
	}
	if att.Map.ImageSpec != spec || !att.Map.ReadOnly || att.Map.User != "docker" || len(att.Map.Monitors) != 1 {
		t.Errorf("map request %+v", att.Map)
	}
	if att.Volume == nil || att.Volume.FSType != "xfs" || !att.Volume.Unwritten {
		t.Errorf("volume %+v", att.Volume)
	}
	// Again (a restart of this host's plugin): held already, no second lock.
	if _, err := p.Attach(context.Background(), "vol", driver.AttachRequest{Host: "node-1"}); err != nil {
		t.Fatal(err)
	}
	if n := len(f.called("LockHost")); n != 1 {
		t.Errorf("LockHost called %d times", n)
	}
}

func TestAttachRefusesAnotherHostWithoutTouchingTheLock(t *testing.T) {
	f, p, spec := attachFixture(t)
	f.image(spec).lockers = []Locker{{Client: "client.42", Cookie: HostCookie("node-2", idB), Addr: "10.0.0.2:0/7"}}
	_, err := p.Attach(context.Background(), "vol", driver.AttachRequest{Host: "node-1"})
	if !errors.Is(err, driver.ErrBusyElsewhere) || !strings.Contains(err.Error(), "node-2") {
		t.Fatalf("err = %v", err)
	}
	if len(f.called("LockHost"))+len(f.called("WaitUnwatched"))+len(f.called("BreakLock")) != 0 {
		t.Errorf("calls %v", f.calls)
	}
}

func TestAttachTakesOverADeadHolder(t *testing.T) {
	f, p, spec := attachFixture(t)
	dead := Locker{Client: "client.42", Cookie: HostCookie("node-2", idB), Addr: "10.0.0.2:0/7"}
	f.image(spec).lockers = []Locker{dead}
	f.image(spec).watchers = []Watcher{{Addr: "10.0.0.2:0/9"}}
	f.afterWait = func() { f.image(spec).watchers = nil } // its watch lapsed
	f.fenced = []string{"10.0.0.2:0/9"}
	att, err := p.Attach(context.Background(), "vol", driver.AttachRequest{Host: "node-1", TakeOver: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.called("BreakLock"); len(got) != 1 || got[0] != spec.String()+" "+idB {
		t.Errorf("BreakLock %v, want one naming the holder's identity", got)
	}
	// The lock's own client is fenced too, by BreakLock with the others: a blocklist of it
	// after BreakLock returned would come after BreakLock made sure the OSDs enforce the fence.
	if !slices.Equal(f.breakClients, []string{dead.Addr}) || len(att.Fenced) != 2 {
		t.Errorf("BreakLock fenced %v besides its own, fenced %v: the lock's own client is fenced with them", f.breakClients, att.Fenced)
	}
	if i, j := slices.Index(f.calls, "BreakLock "+spec.String()+" "+idB), slices.Index(f.calls, "BreakHostLock "+spec.String()); i < 0 || j < i {
		t.Errorf("calls %v: the host lock is broken only once BreakLock fenced its client", f.calls)
	}
	if len(f.called("BreakHostLock")) != 1 || att.ID != HostCookie("node-1", idA) {
		t.Errorf("calls %v, attachment %q", f.calls, att.ID)
	}
}

func TestAttachTakeOverFailures(t *testing.T) {
	for _, method := range []string{"BreakLock", "BreakHostLock"} {
		t.Run(method, func(t *testing.T) {
			f, p, spec := attachFixture(t)
			f.image(spec).lockers = []Locker{{Client: "client.42", Cookie: HostCookie("node-2", idB), Addr: "10.0.0.2:0/7"}}
			f.fail[method] = errors.New("mon says no")
			_, err := p.Attach(context.Background(), "vol", driver.AttachRequest{Host: "node-1", TakeOver: true})
			if err == nil || !strings.Contains(err.Error(), "take volume vol over from host node-2") || !strings.Contains(err.Error(), "mon says no") {
				t.Fatalf("err = %v", err)
			}
			if len(f.called("LockHost")) != 0 {
				t.Error("locked after a failed fence")
			}
		})
	}
}

func TestAttachWaitFailures(t *testing.T) {
	f, p, spec := attachFixture(t)
	f.image(spec).watchers = []Watcher{{Addr: "10.0.0.2:0/9"}}
	f.fail["WaitUnwatched"] = errors.New("osd timeout")
	_, err := p.Attach(context.Background(), "vol", driver.AttachRequest{Host: "node-1"})
	if err == nil || !strings.Contains(err.Error(), "volume vol, in use by client(s) 10.0.0.2:0/9") {
		t.Fatalf("err = %v", err)
	}

	f, p, spec = attachFixture(t)
	f.image(spec).lockers = []Locker{{Cookie: HostCookie("node-1", idA)}}
	f.image(spec).watchers = []Watcher{{Addr: "10.0.0.2:0/9"}}
	f.fail["WaitForeign"] = errors.New("osd timeout")
	if _, err = p.Attach(context.Background(), "vol", driver.AttachRequest{Host: "node-1"}); err == nil || !strings.Contains(err.Error(), "volume vol: ") {
		t.Fatalf("err = %v", err)
	}
	f.fail["WaitForeign"] = nil
	f.foreign = []Watcher{{Addr: "10.0.0.2:0/9"}}
	if _, err = p.Attach(context.Background(), "vol", driver.AttachRequest{Host: "node-1"}); !errors.Is(err, driver.ErrBusyElsewhere) {
		t.Fatalf("another machine under this identity: err = %v", err)
	}
	f.foreign = nil
	if _, err = p.Attach(context.Background(), "vol", driver.AttachRequest{Host: "node-1"}); err != nil {
		t.Fatalf("the foreign watch lapsed: err = %v", err)
	}
}

// Another host takes the lock between this host's look and its lock: the refusal names it.
func TestAttachLosesTheRace(t *testing.T) {
	f, p, spec := attachFixture(t)
	winner := Locker{Client: "client.42", Cookie: HostCookie("node-2", idB), Addr: "10.0.0.2:0/7"}
	p = newProvisioner(raceCeph{fakeCeph: f, winner: winner, spec: spec}, p.cfg)
	_, err := p.Attach(context.Background(), "vol", driver.AttachRequest{Host: "node-1"})
	if !errors.Is(err, driver.ErrBusyElsewhere) || !strings.Contains(err.Error(), "was just attached by host node-2") {
		t.Fatalf("err = %v", err)
	}
}

// raceCeph is fakeCeph where another host wins the host lock.
type raceCeph struct {
	*fakeCeph
	winner Locker
	spec   Spec
}

func (r raceCeph) LockHost(ctx context.Context, spec Spec, id, cookie, desc string) error {
	r.image(r.spec).lockers = []Locker{r.winner}
	return r.fakeCeph.LockHost(ctx, spec, id, cookie, desc)
}

func (r raceCeph) LockHostShared(ctx context.Context, spec Spec, id, cookie, desc string) error {
	r.image(r.spec).lockers = []Locker{r.winner}
	return r.fakeCeph.LockHostShared(ctx, spec, id, cookie, desc)
}

// A failure after the lock was taken gives it back; an undo that fails too is reported.
func TestAttachUndoesTheLock(t *testing.T) {
	f, p, spec := attachFixture(t)
	f.fail["Monitors"] = errors.New("mon dump failed")
	_, err := p.Attach(context.Background(), "vol", driver.AttachRequest{Host: "node-1"})
	if err == nil || !strings.Contains(err.Error(), "mon dump failed") {
		t.Fatalf("err = %v", err)
	}
	if len(f.image(spec).lockers) != 0 || len(f.called("ClearHolder")) != 1 {
		t.Fatalf("locks left %+v, calls %v", f.image(spec).lockers, f.calls)
	}
	f.fail["BreakHostLock"] = errors.New("osd down")
	_, err = p.Attach(context.Background(), "vol", driver.AttachRequest{Host: "node-1"})
	if err == nil || !strings.Contains(err.Error(), "undoing it also failed") || !strings.Contains(err.Error(), "osd down") {
		t.Fatalf("err = %v", err)
	}
}

func TestAttachDescribeFailures(t *testing.T) {
	_, p, _ := attachFixture(t)
	if _, err := p.Attach(context.Background(), "nope", driver.AttachRequest{}); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("missing volume: %v", err)
	}
	f, p, _ := attachFixture(t)
	f.fail["ClientAddr"] = errors.New("no addr")
	f.image(Spec{Pool: "volumes", Image: "vol"}).lockers = []Locker{{Cookie: HostCookie("node-1", idA)}}
	f.image(Spec{Pool: "volumes", Image: "vol"}).watchers = []Watcher{{Addr: "10.0.0.2:0/9"}}
	if _, err := p.Attach(context.Background(), "vol", driver.AttachRequest{}); err == nil || !strings.Contains(err.Error(), "no addr") {
		t.Errorf("err = %v", err)
	}
}

// decideAttach for read-only claims (shared host locks) beside read-write ones (the exclusive
// host lock), and this host's own lock in either mode.
func TestDecideAttachReadOnly(t *testing.T) {
	mine := Locker{Client: "client.1", Cookie: HostCookie("node-1", idA), Addr: "10.0.0.1:0/100"}
	mineShared := mine
	mineShared.Shared = true
	writer := Locker{Client: "client.42", Cookie: HostCookie("node-2", idB), Addr: "10.0.0.2:0/7"}
	readerB := Locker{Client: "client.42", Cookie: HostCookie("node-2", idB), Addr: "10.0.0.2:0/7", Shared: true}
	readerC := Locker{Client: "client.51", Cookie: HostCookie("node-3", idC), Addr: "10.0.0.3:0/8", Shared: true}
	fuseB := Watcher{Addr: "10.0.0.2:0/9"} // reader B's rbd-fuse
	rw := attachPolicy{Name: "vol", Host: "node-1", HostID: idA}
	rwBreak, ro := rw, rw
	rwBreak.TakeOver, ro.ReadOnly = true, true
	roBreak, roClaimed, rwClaimed := ro, ro, rw
	roBreak.TakeOver, roClaimed.Claimed, rwClaimed.Claimed = true, mine.Cookie, mine.Cookie
	readersSay := []string{"volume vol is held read-only by host node-2 (host ID " + idB[:12], "host node-3 (host ID " + idC[:12],
		"every reader releases it", "LOCK_BREAK never", "rados -p POOL lock break rbd_header.ID " + HostLockName}
	writerSays := []string{"volume vol is in use read-write by host node-2 (host ID " + idB[:12], "never takes a volume over",
		"LOCK_BREAK=on", "rbd image-meta remove POOL/IMAGE " + driver.MetaAccess}

	cases := []struct {
		what   string
		pol    attachPolicy
		f      attachFacts
		want   attachAction
		shared bool     // actHeld: the held lock is shared
		drop   []Locker // actDrop: the locks to release
		says   []string // in the refusal (ErrBusyElsewhere)
	}{
		{what: "read-only, nobody has it", pol: ro, want: actLock},
		{what: "read-only beside readers, whose rbd-fuse watches", pol: ro,
			f: attachFacts{Lockers: []Locker{readerB, readerC}, Watchers: []Watcher{fuseB}}, want: actLock},
		{what: "read-only beside a writer", pol: ro, f: attachFacts{Lockers: []Locker{writer}, Watchers: []Watcher{fuseB}},
			want: actRefuse, says: writerSays},
		{what: "read-only beside a writer with LOCK_BREAK=on: a reader never fences", pol: roBreak,
			f: attachFacts{Lockers: []Locker{writer}}, want: actRefuse, says: writerSays},
		{what: "read-only, watched without a lock: wait for it to lapse", pol: ro,
			f: attachFacts{Watchers: []Watcher{fuseB}}, want: actWaitWatchers},
		{what: "read-only, after the wait readers came", pol: ro,
			f: attachFacts{Phase: phaseWaited, Holder: "h", Lockers: []Locker{readerB}}, want: actLock},
		{what: "read-only, after the wait a writer came", pol: roBreak,
			f: attachFacts{Phase: phaseWaited, Holder: "h", Lockers: []Locker{writer}}, want: actRefuse, says: writerSays},
		{what: "read-only, this host's shared lock beside other readers' watchers", pol: ro,
			f: attachFacts{Lockers: []Locker{readerB, mineShared}, Watchers: []Watcher{fuseB}}, want: actHeld, shared: true},
		{what: "this host's shared lock after a restart, the access now readwrite", pol: rwClaimed,
			f: attachFacts{Lockers: []Locker{mineShared, readerB}}, want: actHeld, shared: true},
		{what: "this host's exclusive lock after a restart, the access now readonly", pol: roClaimed,
			f: attachFacts{Lockers: []Locker{mine}}, want: actHeld},
		{what: "read-only, a left-over exclusive lock of this host's", pol: ro,
			f: attachFacts{Lockers: []Locker{mine}}, want: actDrop, drop: []Locker{mine}},
		{what: "read-write, a left-over shared lock of this host's", pol: rw,
			f: attachFacts{Lockers: []Locker{readerB, mineShared}}, want: actDrop, drop: []Locker{mineShared}},
		{what: "read-write beside readers", pol: rw, f: attachFacts{Lockers: []Locker{readerB, readerC}},
			want: actRefuse, says: readersSay},
		{what: "read-write beside readers with LOCK_BREAK=on: readers are never fenced", pol: rwBreak,
			f: attachFacts{Lockers: []Locker{readerB, readerC}, Watchers: []Watcher{fuseB}}, want: actRefuse, says: readersSay},
		{what: "read-write, after the wait readers came", pol: rwBreak,
			f: attachFacts{Phase: phaseWaited, Holder: "h", Lockers: []Locker{readerB, readerC}}, want: actRefuse, says: readersSay},
	}
	for _, c := range cases {
		t.Run(c.what, func(t *testing.T) {
			d := decideAttach(c.pol, c.f)
			if d.Action != c.want {
				t.Fatalf("action = %v (err %v), want %v", d.Action, d.Err, c.want)
			}
			switch c.want {
			case actHeld:
				if d.Shared != c.shared || d.Cookie != mine.Cookie {
					t.Errorf("held %+v, want shared %v with this host's cookie", d, c.shared)
				}
			case actDrop:
				if !slices.Equal(d.Others, c.drop) {
					t.Errorf("drop %+v, want %+v", d.Others, c.drop)
				}
			case actRefuse:
				if !errors.Is(d.Err, driver.ErrBusyElsewhere) {
					t.Errorf("refusal %v is not ErrBusyElsewhere", d.Err)
				}
				for _, s := range c.says {
					if !strings.Contains(d.Err.Error(), s) {
						t.Errorf("refusal %q does not say %q", d.Err, s)
					}
				}
			}
			if c.want != actRefuse && d.Err != nil {
				t.Errorf("err = %v with action %v", d.Err, d.Action)
			}
		})
	}
}

// Hosts sharing a volume read-only on the fake cluster (cls_lock's rule): readers together,
// never beside a writer, both ways; the readers named; a restart recognises its shared claim.
func TestAttachReadOnlySharing(t *testing.T) {
	f, p1, spec := attachFixture(t)
	host := func(name, id string) *Provisioner {
		return newProvisioner(f, ProvisionerConfig{Pool: "volumes", Host: name, HostID: id})
	}
	p2, p3 := host("node-2", idB), host("node-3", idC)
	ctx := context.Background()
	f.image(spec).meta[driver.MetaAccess] = driver.AccessReadOnly
	att1, err := p1.Attach(ctx, "vol", driver.AttachRequest{Host: "node-1"})
	if err != nil || !att1.Map.ReadOnly {
		t.Fatalf("reader 1: %+v, %v", att1.Map, err)
	}
	f.image(spec).watchers = []Watcher{{Addr: "10.0.0.1:0/9"}} // reader 1's rbd-fuse
	if att2, err := p2.Attach(ctx, "vol", driver.AttachRequest{Host: "node-2"}); err != nil || !att2.Map.ReadOnly {
		t.Fatalf("reader 2: %+v, %v", att2.Map, err)
	}
	if ls := f.image(spec).lockers; len(ls) != 2 || !ls[0].Shared || !ls[1].Shared {
		t.Fatalf("locks %+v, want two shared", ls)
	}
	vol, err := p3.Get(ctx, "vol")
	if err != nil || !strings.HasPrefix(vol.Holder, "read-only by host node-1") || !strings.Contains(vol.Holder, ", host node-2") {
		t.Errorf("holder %q (%v), want both readers", vol.Holder, err)
	}

	if err := p3.Remove(ctx, "vol", driver.RemoveDelete); !errors.Is(err, driver.ErrInUse) || !strings.Contains(err.Error(), "node-2") || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("remove while hosts read it: %v", err)
	}

	// A writer (the access switched back) is refused naming both readers, LOCK_BREAK or not.
	delete(f.image(spec).meta, driver.MetaAccess)
	_, err = p3.Attach(ctx, "vol", driver.AttachRequest{Host: "node-3", TakeOver: true})
	if !errors.Is(err, driver.ErrBusyElsewhere) || !strings.Contains(err.Error(), "node-1") || !strings.Contains(err.Error(), "node-2") {
		t.Fatalf("writer beside readers: %v", err)
	}
	if n := len(f.called("BreakLock")) + len(f.called("BreakHostLock")) + len(f.called("LockHost")); n != 0 {
		t.Errorf("a refused writer touched the locks: %v", f.calls)
	}

	// Reader 1's plugin restarts: its state names its shared claim, kept read-only.
	again, err := host("node-1", idA).Attach(ctx, "vol", driver.AttachRequest{Host: "node-1", Claimed: att1.ID})
	if err != nil || !again.Map.ReadOnly || again.ID != att1.ID {
		t.Fatalf("reclaim: %+v %q, %v", again.Map, again.ID, err)
	}

	// Both let go: the writer gets it, and then a reader asking read-only is refused naming it.
	for _, p := range []*Provisioner{p1, p2} {
		if err := p.Detach(ctx, "vol", driver.Attachment{ID: p.cookie(), Map: driver.MapRequest{ImageSpec: spec}}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(f.called("ClearHolder")); n != 0 {
		t.Errorf("readers cleared a holder record %d times: they record none", n)
	}
	f.image(spec).watchers = nil // reader 1 unmapped
	att3, err := p3.Attach(ctx, "vol", driver.AttachRequest{Host: "node-3"})
	if err != nil || att3.Map.ReadOnly {
		t.Fatalf("writer: %+v, %v", att3.Map, err)
	}
	_, err = p1.Attach(ctx, "vol", driver.AttachRequest{Host: "node-1", ReadOnly: true})
	if !errors.Is(err, driver.ErrBusyElsewhere) || !strings.Contains(err.Error(), "in use read-write by host node-3") {
		t.Fatalf("reader beside a writer: %v", err)
	}
	if n := len(f.called("LockHostShared")); n != 2 {
		t.Errorf("LockHostShared called %d times, want 2", n)
	}
}

// A writer takes the lock between a reader's look and its shared lock: cls_lock refuses the
// reader, and the refusal names the writer.
func TestAttachReadOnlyLosesTheRace(t *testing.T) {
	f, p, spec := attachFixture(t)
	winner := Locker{Client: "client.42", Cookie: HostCookie("node-2", idB), Addr: "10.0.0.2:0/7"}
	p = newProvisioner(raceCeph{fakeCeph: f, winner: winner, spec: spec}, p.cfg)
	_, err := p.Attach(context.Background(), "vol", driver.AttachRequest{Host: "node-1", ReadOnly: true})
	if !errors.Is(err, driver.ErrBusyElsewhere) || !strings.Contains(err.Error(), "was just attached by host node-2") {
		t.Fatalf("err = %v", err)
	}
}

// A left-over lock of this host's in the other mode is released before the claim is made.
func TestAttachDropsALeftOverLockOfTheOtherMode(t *testing.T) {
	f, p, spec := attachFixture(t)
	f.image(spec).lockers = []Locker{{Client: "client.1", Cookie: HostCookie("node-1", idA), Addr: f.self}}
	att, err := p.Attach(context.Background(), "vol", driver.AttachRequest{Host: "node-1", ReadOnly: true})
	if err != nil || !att.Map.ReadOnly {
		t.Fatalf("%+v, %v", att.Map, err)
	}
	if ls := f.image(spec).lockers; len(ls) != 1 || !ls[0].Shared || len(f.called("BreakHostLock")) != 1 {
		t.Errorf("locks %+v, calls %v", ls, f.calls)
	}
	f.fail["BreakHostLock"] = errors.New("osd down")
	if _, err := p.Attach(context.Background(), "vol", driver.AttachRequest{Host: "node-1"}); err == nil || !strings.Contains(err.Error(), "left-over host lock: osd down") {
		t.Errorf("err = %v", err)
	}
}
