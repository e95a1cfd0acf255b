package rbd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/driver/undo"
	"github.com/sirupsen/logrus"
)

// Attach in three parts: gather what Ceph reports about the image (its host locks, its
// watchers, this host's own clients), decide (decideAttach, a pure function of those facts and
// of the request), act on the decision (wait, fence, lock), and decide again with what the
// action found, until the decision is to attach or to refuse.

// TakeOverReserve is the part of a call's deadline that a LOCK_BREAK takeover leaves, after
// waiting for the holder's watch to lapse, for the rest of the first Mount (fence, map, mount).
const TakeOverReserve = 10 * time.Second

// attachPhase says which facts an attach has gathered so far.
type attachPhase int

const (
	// phaseFirst: the image as first described (Lockers, Watchers).
	phaseFirst attachPhase = iota
	// phaseWaitedForeign: this host holds the image's lock, and a client that may not be this
	// host's watched it: Live are those still watching after a wait for them to lapse.
	phaseWaitedForeign
	// phaseWaited: another holder (Holder) had it: Live are the watchers left after a wait for
	// them to lapse; when none were, Lockers and Watchers were read again.
	phaseWaited
)

// attachFacts is what Ceph reported about an image this host attaches.
type attachFacts struct {
	Phase    attachPhase
	Lockers  []Locker  // its host locks
	Watchers []Watcher // the clients watching it, without this connection
	// LocalKnown says SelfAddr, Local and LocalExact were read (only this host's lock with
	// watchers needs them).
	LocalKnown bool
	SelfAddr   string   // this connection's address
	Local      []string // the clients of this host's mappings
	LocalExact bool     // Local are all of them (krbd); false: any client at SelfAddr's IP is this host's
	Holder     string   // phaseWaited: the holder named before the wait
	Live       []Watcher
}

// attachPolicy is what decides an attach besides the facts: the request and this host.
type attachPolicy struct {
	Name     string // the volume
	Host     string // NODE_NAME
	HostID   string // this host's identity ("" in tests of the older cookie format)
	Claimed  string // the cookie this host's state recorded for the volume
	TakeOver bool   // LOCK_BREAK=on
	// ReadOnly: a shared read-only claim (asked for, or the volume's access is readonly).
	ReadOnly bool
}

// attachAction is what an attach does next.
type attachAction int

const (
	actLock         attachAction = iota // nobody else holds the image: take the host lock
	actHeld                             // this host holds it, and nobody else has it open
	actRefuse                           // refuse with Err
	actLookLocal                        // this host holds it and it is watched: read which clients are this host's
	actWaitForeign                      // a client that is not this host's watches what it holds: wait for it to lapse
	actWaitWatchers                     // another holder, maybe dead: wait for its watches to lapse, then look again
	actFence                            // LOCK_BREAK: fence the others, break their locks, then take the host lock
	actDrop                             // a lock of this host's in the other mode, its state names none: release it, look again
)

func (a attachAction) String() string {
	return [...]string{"lock", "held", "refuse", "look-local", "wait-foreign", "wait-watchers", "fence", "drop"}[a]
}

// attachDecision is decideAttach's answer.
type attachDecision struct {
	Action attachAction
	Holder string   // who holds the volume besides this host, for people
	Cookie string   // actHeld: this host's lock's cookie
	Shared bool     // actHeld: this host's lock is a shared (read-only) one
	Others []Locker // actFence: the other hosts' locks; actDrop: this host's locks to release
	Err    error    // actRefuse
}

// decideAttach decides, from what Ceph reported (f), what an attach of pol.Name does next.
//
// A read-write claim is an exclusive host lock, a read-only claim a shared one (HostLockTag):
// cls_lock lets shared locks coexist and refuses an exclusive lock beside any other, so a reader
// and a writer racing cannot both win. decideAttach refuses before that: a reader when another
// host writes, a writer when other hosts read. A read-only claim is never fenced.
func decideAttach(pol attachPolicy, f attachFacts) attachDecision {
	owns := pol.owns
	switch f.Phase {
	case phaseWaitedForeign:
		if len(f.Live) == 0 {
			return attachDecision{Action: actHeld, Cookie: ownCookie(f.Lockers, owns)}
		}
		return refuse(pol.identityTaken(f.Live))
	case phaseWaited:
		return pol.afterWait(f)
	}
	if own, ok := ownLock(f.Lockers, owns); ok {
		return pol.held(own, f)
	}
	if dec, ok := pol.sharing(f.Lockers); ok {
		return dec
	}
	holder := holderOf(Description{Lockers: f.Lockers, Watchers: f.Watchers}, owns)
	if holder == "" {
		return attachDecision{Action: actLock}
	}
	if other, locked := otherLock(f.Lockers, owns); locked && !pol.TakeOver {
		return refuse(fmt.Errorf("%w: volume %s is in use by %s%s; stop it there, or if that host is dead, set LOCK_BREAK=on to fence it and take the volume over",
			driver.ErrBusyElsewhere, pol.Name, holder, pol.sameName(other)))
	}
	// A live holder (a host with the volume mapped, even idle) keeps its watch on the image; a
	// dead one loses it within WatchLapse. LOCK_BREAK takes a volume over only from a dead
	// holder, and a holder with no host lock is only watches, which a dead client leaves behind
	// (a plugin that crashed, or this host before a quick reboot): wait for them to lapse.
	return attachDecision{Action: actWaitWatchers, Holder: holder}
}

// held decides an attach of a volume this host holds already (own is its lock): the claim it
// made before a restart of its plugin, kept in the mode it was made in, or one left behind.
func (pol attachPolicy) held(own Locker, f attachFacts) attachDecision {
	if own.Shared != pol.ReadOnly && pol.Claimed == "" {
		// No state of this host names the claim (a first Mount): it is left over, and in the
		// other mode. Release it and claim again. A claim its state names is kept as made: its
		// mapping is up in that mode.
		return attachDecision{Action: actDrop, Others: slices.DeleteFunc(slices.Clone(f.Lockers), func(l Locker) bool { return !pol.owns(l) })}
	}
	if own.Shared {
		// Other hosts' readers may watch the image (rbd-fuse opens it); none of them writes.
		return attachDecision{Action: actHeld, Cookie: own.Cookie, Shared: true}
	}
	switch {
	case len(f.Watchers) == 0:
		return attachDecision{Action: actHeld, Cookie: own.Cookie}
	case !f.LocalKnown:
		return attachDecision{Action: actLookLocal}
	case len(foreignWatchers(f.Watchers, f.Local, f.LocalExact, addrIP(f.SelfAddr))) == 0:
		return attachDecision{Action: actHeld, Cookie: own.Cookie}
	}
	return attachDecision{Action: actWaitForeign}
}

// sharing decides between readers and writers, when other hosts hold host locks: a read-only
// claim beside readers is taken (their watchers are theirs), beside a writer refused; a
// read-write claim beside readers is refused. ok is false when the locks leave it undecided.
func (pol attachPolicy) sharing(lockers []Locker) (attachDecision, bool) {
	readers, writer, locked := otherLocks(lockers, pol.owns)
	switch {
	case pol.ReadOnly && locked:
		return refuse(pol.writerRefusal(writer)), true
	case pol.ReadOnly && len(readers) > 0:
		return attachDecision{Action: actLock}, true
	case !pol.ReadOnly && len(readers) > 0:
		return refuse(pol.readersRefusal(readers)), true
	}
	return attachDecision{}, false
}

// writerRefusal refuses a read-only claim while another host holds the volume read-write.
func (pol attachPolicy) writerRefusal(writer Locker) error {
	return fmt.Errorf("%w: volume %s is in use read-write by %s%s; it can be used read-only only once that host releases it: stop its containers there. "+
		"A read-only claim never takes a volume over (LOCK_BREAK does not apply): if that host is dead, take the volume over read-write once on one host with LOCK_BREAK=on "+
		"(set its access to readwrite first: rbd image-meta remove POOL/IMAGE %s), unmount it, and set it back to readonly",
		driver.ErrBusyElsewhere, pol.Name, describeLock(writer), pol.sameName(writer), driver.MetaAccess)
}

// readersRefusal refuses a read-write claim while other hosts hold the volume read-only.
func (pol attachPolicy) readersRefusal(readers []Locker) error {
	return fmt.Errorf("%w: volume %s is held read-only by %s; it can be used read-write only once every reader releases it: stop their containers there "+
		"(or use it read-only: set its access with rbd image-meta set POOL/IMAGE %s readonly). LOCK_BREAK never takes a volume from its readers. "+
		"A dead reader's claim stays (a read-only kernel mapping does not even watch the image): once that host is down for good, release its claim by hand "+
		"(rados -p POOL lock break rbd_header.ID %s CLIENT --lock-cookie COOKIE, from rados -p POOL lock info rbd_header.ID %s)",
		driver.ErrBusyElsewhere, pol.Name, describeLocks(readers), driver.MetaAccess, HostLockName, HostLockName)
}

// afterWait decides once the watchers of another holder (f.Holder) were waited for.
func (pol attachPolicy) afterWait(f attachFacts) attachDecision {
	switch {
	case len(f.Live) > 0 && pol.TakeOver:
		return refuse(fmt.Errorf("%w: volume %s is in use by %s; %w", driver.ErrBusyElsewhere, pol.Name, f.Holder, aliveError(f.Live)))
	case len(f.Live) > 0:
		return refuse(fmt.Errorf("%w: volume %s is in use by %s, which kept watching the image while this host waited for it to go (a dead client's watch lapses within %s): unmap it there first",
			driver.ErrBusyElsewhere, pol.Name, f.Holder, WatchLapse))
	}
	// The holder may have let go while this host waited: Lockers and Watchers were read again.
	if dec, ok := pol.sharing(f.Lockers); ok {
		return dec
	}
	holder := holderOf(Description{Lockers: f.Lockers, Watchers: f.Watchers}, pol.owns)
	switch {
	case holder == "":
		return attachDecision{Action: actLock}
	case !pol.TakeOver:
		return refuse(justAttached(pol.Name, holder))
	}
	return attachDecision{Action: actFence, Holder: holder, Others: slices.DeleteFunc(slices.Clone(f.Lockers), pol.owns)}
}

func refuse(err error) attachDecision { return attachDecision{Action: actRefuse, Err: err} }

// justAttached refuses a volume that another host took while this one looked.
func justAttached(name, holder string) error {
	return fmt.Errorf("%w: volume %s was just attached by %s", driver.ErrBusyElsewhere, name, holder)
}

// identityTaken refuses a volume held under this host's identity that clients of another
// machine keep open. Identities are not shared by accident: that machine uses a copy of this
// host's STATE_DIR (a cloned disk), or maps the image by hand.
func (pol attachPolicy) identityTaken(live []Watcher) error {
	return fmt.Errorf("%w: volume %s is held under this host's identity (%s), but Ceph client(s) %s, not this host's, keep it open: another machine uses this host's identity (a copy of its STATE_DIR, as on a cloned disk) or maps the image by hand. On that machine, stop the plugin, remove %s from its STATE_DIR and start it again (it then makes an identity of its own); this host leaves the volume alone meanwhile",
		driver.ErrBusyElsewhere, pol.Name, DescribeHolder(pol.Host, pol.HostID), watcherAddrs(live), driver.HostIDFile)
}

// ownCookie is the cookie of this host's lock among lockers, "" when it holds none (taken
// before a restart of this host's plugin, when it does).
func ownCookie(lockers []Locker, owns func(Locker) bool) string {
	l, _ := ownLock(lockers, owns)
	return l.Cookie
}

// ownLock is this host's lock among lockers (the last, should there be several), ok false
// when it holds none.
func ownLock(lockers []Locker, owns func(Locker) bool) (own Locker, ok bool) {
	for _, l := range lockers {
		if owns(l) {
			own, ok = l, true
		}
	}
	return own, ok
}

// Attach implements driver.Provisioner: it takes the image's host lock for this host, a shared
// one for a read-only claim (asked for, or the volume's access is readonly).
func (p *Provisioner) Attach(ctx context.Context, name string, req driver.AttachRequest) (att driver.Attachment, err error) {
	spec, d, err := p.describe(ctx, name)
	if err != nil {
		return att, err
	}
	pol := attachPolicy{Name: name, Host: p.cfg.Host, HostID: p.cfg.HostID, Claimed: req.Claimed, TakeOver: req.TakeOver,
		ReadOnly: req.ReadOnly || (!req.IgnoreAccess && volumeOf(name, spec, d).ReadOnly())}
	f := attachFacts{Lockers: d.Lockers, Watchers: d.Watchers}
	var tx undo.Stack
	defer tx.OnError(ctx, &err, p.reportUndo(name))
	held, readOnly, dropped := "", pol.ReadOnly, false
	for held == "" {
		dec := decideAttach(pol, f)
		switch dec.Action {
		case actRefuse:
			return att, dec.Err
		case actHeld:
			held, readOnly = dec.Cookie, dec.Shared
		case actDrop:
			if dropped {
				return att, fmt.Errorf("volume %s: this host's left-over host lock on %s is still there after it released it", name, spec)
			}
			if err := p.drop(ctx, name, spec, dec.Others); err != nil {
				return att, err
			}
			if spec, d, err = p.describe(ctx, name); err != nil {
				return att, err
			}
			f, dropped = attachFacts{Lockers: d.Lockers, Watchers: d.Watchers}, true
		case actLookLocal:
			if f.SelfAddr, err = p.c.ClientAddr(); err != nil {
				return att, err
			}
			f.Local, f.LocalExact = localAddrs(ctx, p.cfg.Local)
			f.LocalKnown = true
		case actWaitForeign:
			live, err := p.c.WaitForeign(ctx, spec, p.cfg.Local, TakeOverReserve)
			if err != nil {
				return att, fmt.Errorf("volume %s: %w", name, err)
			}
			f.Phase, f.Live = phaseWaitedForeign, live
		case actWaitWatchers:
			if f, err = p.waitWatchers(ctx, name, &spec, &d, dec.Holder); err != nil {
				return att, err
			}
		case actFence, actLock:
			if dec.Action == actFence {
				if att.Fenced, err = p.takeOver(ctx, spec, dec.Others); err != nil {
					return att, fmt.Errorf("take volume %s over from %s: %w", name, dec.Holder, err)
				}
			}
			if held, err = p.lock(ctx, name, spec, d.Info.ID, req, pol.ReadOnly); err != nil {
				return att, err
			}
			tx.Push("release the host lock on "+spec.String(), func(ctx context.Context) error {
				return p.Detach(ctx, name, driver.Attachment{ID: held, Map: driver.MapRequest{ImageSpec: spec}})
			})
		}
	}
	mons, err := p.monitors(ctx)
	if err != nil {
		return att, err
	}
	att.ID = held
	att.Map = driver.MapRequest{ImageSpec: spec, ReadOnly: readOnly, Monitors: mons, User: p.c.User()}
	vol := volumeOf(name, spec, d)
	// Asked only now that this host holds the volume: nobody else writes it from here on.
	vol.Unwritten = p.c.EndsUnwritten(ctx, d.Info, driver.SignatureWindow)
	att.Volume = &vol // the first Mount needs no Get of its own
	return att, nil
}

// drop releases this host's left-over host locks (mine) on a volume, before claiming it in the
// other mode.
func (p *Provisioner) drop(ctx context.Context, name string, spec Spec, mine []Locker) error {
	for _, l := range mine {
		p.log().WithFields(logrus.Fields{"volume": name, "image": spec.String(), "shared": l.Shared}).
			Warn("releasing this host's left-over host lock, in the other mode than this claim's")
		if err := p.c.BreakHostLock(ctx, spec, l); err != nil && !errors.Is(err, driver.ErrNotFound) {
			return fmt.Errorf("volume %s: release this host's left-over host lock: %w", name, err)
		}
	}
	return nil
}

// waitWatchers waits for the watchers of a volume that holder has to lapse, and when none is
// left, describes the image again (into spec and d): the facts for the next decision.
func (p *Provisioner) waitWatchers(ctx context.Context, name string, spec *Spec, d *Description, holder string) (attachFacts, error) {
	live, err := p.c.WaitUnwatched(ctx, *spec, TakeOverReserve)
	if err != nil {
		return attachFacts{}, fmt.Errorf("volume %s, in use by %s: %w", name, holder, err)
	}
	f := attachFacts{Phase: phaseWaited, Holder: holder, Live: live}
	if len(live) == 0 {
		if *spec, *d, err = p.describe(ctx, name); err != nil {
			return f, err
		}
		f.Lockers, f.Watchers = d.Lockers, d.Watchers
	}
	return f, nil
}

// lock takes the image's host lock for this host, shared for a read-only claim, and returns its
// cookie.
func (p *Provisioner) lock(ctx context.Context, name string, spec Spec, imageID string, req driver.AttachRequest, shared bool) (string, error) {
	cookie := p.cookie()
	desc := fmt.Sprintf("host %s, host ID %s, mount %s, since %s", req.Host, p.cfg.HostID, req.MountID, time.Now().UTC().Format(time.RFC3339))
	lock := p.c.LockHost
	if shared {
		desc = "read-only, " + desc
		lock = p.c.LockHostShared
	}
	err := lock(ctx, spec, imageID, cookie, desc)
	if errors.Is(err, driver.ErrBusyElsewhere) {
		holder, _ := p.holder(ctx, spec, func(l Locker) bool { return p.owns(l, req.Claimed) })
		return "", justAttached(name, holder)
	}
	return cookie, err
}

// watcherAddrs lists watchers' addresses for a message.
func watcherAddrs(ws []Watcher) string { return strings.Join(addrsOf(ws), ", ") }

// addrsOf are the watchers' addresses.
func addrsOf(ws []Watcher) []string {
	out := make([]string, 0, len(ws))
	for _, w := range ws {
		out = append(out, w.Addr)
	}
	return out
}

// takeOver fences every client of the image's other holders (blocklist: the watchers, the
// exclusive-lock owners, the clients the holder recorded, the host locks' own clients) and breaks
// their host locks. The host locks' clients are fenced by BreakLock with the others, so that the
// OSDs enforce every entry before a lock is broken (see Cluster.BreakLock).
func (p *Provisioner) takeOver(ctx context.Context, spec Spec, others []Locker) ([]string, error) {
	holder := ""
	clients := make([]string, 0, len(others))
	for _, l := range others {
		if _, id, ok := ParseCookie(l.Cookie); ok && id != "" {
			holder = id
		}
		clients = append(clients, l.Addr)
	}
	fenced, err := p.c.BreakLock(ctx, spec, holder, clients...)
	if err != nil {
		return fenced, err
	}
	for _, l := range others {
		if err := p.c.BreakHostLock(ctx, spec, l); err != nil && !errors.Is(err, driver.ErrNotFound) {
			return fenced, err
		}
	}
	return fenced, nil
}

// holder names who holds the image besides this host (owns says which host locks are this
// host's).
func (p *Provisioner) holder(ctx context.Context, spec Spec, owns func(Locker) bool) (string, error) {
	d, err := p.c.Describe(ctx, spec)
	if err != nil {
		return "", err
	}
	return holderOf(d, owns), nil
}

// holderOf names who holds an image already described, besides this host: another host's lock
// (owns says which locks are this host's; nil: none), the readers when only shared locks are
// there, or a client that has it open or mapped without the plugin. "" when nobody does.
func holderOf(d Description, owns func(Locker) bool) string {
	readers, writer, locked := otherLocks(d.Lockers, owns)
	switch {
	case locked:
		return describeLock(writer)
	case len(readers) > 0:
		return describeLocks(readers) + ", read-only"
	}
	for _, l := range d.Lockers {
		if owns != nil && owns(l) {
			// This host holds it: the watchers are its own mapping (see checkIdentity).
			return ""
		}
	}
	var others []string
	for _, w := range d.Watchers {
		others = append(others, w.Addr)
	}
	if len(others) > 0 {
		return fmt.Sprintf("client(s) %s (mapped without this plugin, or by a plugin that crashed)", strings.Join(others, ", "))
	}
	return ""
}

// describeLock names the holder of a host lock for people.
func describeLock(l Locker) string {
	name, id, _ := ParseCookie(l.Cookie)
	if id == "" {
		return fmt.Sprintf("host %s (%s at %s)", name, l.Client, l.Addr)
	}
	return fmt.Sprintf("host %s (host ID %s, %s at %s)", name, driver.ShortHostID(id), l.Client, l.Addr)
}

// describeLocks names the holders of host locks for people.
func describeLocks(ls []Locker) string {
	out := make([]string, 0, len(ls))
	for _, l := range ls {
		out = append(out, describeLock(l))
	}
	return strings.Join(out, ", ")
}

// otherLock finds a plugin's host lock that is not this host's, an exclusive one first.
func otherLock(lockers []Locker, owns func(Locker) bool) (Locker, bool) {
	readers, writer, locked := otherLocks(lockers, owns)
	if !locked && len(readers) > 0 {
		return readers[0], true
	}
	return writer, locked
}

// otherLocks sorts the plugin's host locks that are not this host's (owns; nil: none is) into
// the shared ones (readers) and the exclusive one (writer; locked says there is one).
func otherLocks(lockers []Locker, owns func(Locker) bool) (readers []Locker, writer Locker, locked bool) {
	for _, l := range lockers {
		if _, _, ok := ParseCookie(l.Cookie); !ok || (owns != nil && owns(l)) {
			continue
		}
		if l.Shared {
			readers = append(readers, l)
		} else if !locked {
			writer, locked = l, true
		}
	}
	return readers, writer, locked
}

// owns says whether host lock l is this host's: taken under this host's identity, or taken under
// this host's name alone (the older name-only format), and named by this host's own state
// (claimed: the cookie its state recorded for the volume). A name is not enough: two machines
// can share one, and a host that lost its STATE_DIR cannot tell its old lock from another's.
func (p *Provisioner) owns(l Locker, claimed string) bool {
	return attachPolicy{Host: p.cfg.Host, HostID: p.cfg.HostID, Claimed: claimed}.owns(l)
}

func (pol attachPolicy) owns(l Locker) bool {
	name, id, ok := ParseCookie(l.Cookie)
	switch {
	case !ok:
		return false
	case id != "":
		return pol.HostID != "" && id == pol.HostID
	case name != pol.Host:
		return false
	}
	return pol.HostID == "" || (pol.Claimed != "" && l.Cookie == pol.Claimed)
}

// sameName adds to a refusal naming another host's lock what to do when that host has this
// host's NODE_NAME.
func (pol attachPolicy) sameName(l Locker) string {
	name, id, _ := ParseCookie(l.Cookie)
	if name != pol.Host {
		return ""
	}
	if id == "" {
		return fmt.Sprintf(" (a lock in the older format, naming only the host %s, that this host's state does not name: another machine named %s, or this host before it lost its STATE_DIR)", name, name)
	}
	return fmt.Sprintf(" (it has this host's NODE_NAME, not its identity %s: another machine named %s, or this host before it lost its STATE_DIR/%s)", driver.ShortHostID(pol.HostID), name, driver.HostIDFile)
}
