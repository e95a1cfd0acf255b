package rbd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ceph/go-ceph/rados"
	"github.com/ceph/go-ceph/rbd"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// Exclusive locks. With the exclusive-lock feature, the client that writes to an image (a kernel
// mapping, an open librbd handle) owns its exclusive lock; ownership moves cooperatively between
// live clients. These calls let the plugin see the owner, hold the lock itself, and take it from a
// dead owner after fencing it.

// LockOwners returns the clients that own the image's exclusive lock (as "client.<id>"
// strings as librbd reports them); empty when nobody holds it.
func (c *Cluster) LockOwners(ctx context.Context, spec Spec) ([]string, error) {
	owners, err := imageCall(ctx, c, "lock owners", spec, func(img *rbd.Image) ([]string, error) {
		os, err := img.LockGetOwners()
		out := make([]string, 0, len(os))
		for _, o := range os {
			out = append(out, o.Owner)
		}
		return out, err
	})
	if errors.Is(err, driver.ErrNotFound) {
		// librbd answers ENOENT both for a missing image and for "no owner".
		if _, ierr := c.Info(ctx, spec); ierr == nil {
			return nil, nil
		}
	}
	return owners, err
}

// HeldLock is an image held open with its exclusive lock acquired by this connection.
type HeldLock struct {
	c    *Cluster
	spec Spec
	img  *rbd.Image
}

// AcquireLock opens the image and acquires its exclusive lock. While another live client owns it,
// librbd asks that client to release it; ErrBusyElsewhere when it does not. Release gives it back.
func (c *Cluster) AcquireLock(ctx context.Context, spec Spec) (*HeldLock, error) {
	io, err := c.ioctx(ctx, spec.Pool, spec.Namespace)
	if err != nil {
		return nil, err
	}
	img, err := call(ctx, c, "lock acquire", spec.String(), func() (*rbd.Image, error) {
		img, err := rbd.OpenImage(io, spec.Image, "")
		if err != nil {
			return nil, err
		}
		if err = img.LockAcquire(rbd.LockModeExclusive); err != nil {
			img.Close()
			return nil, err
		}
		return img, nil
	}, func(img *rbd.Image, err error) {
		if err == nil { // acquired after the caller gave up
			c.reportLate("lock acquire", spec.String(), errors.Join(img.LockRelease(), img.Close()))
		}
	})
	if err != nil {
		var oe *OpError
		var ec errorCoder
		// librbd answers EROFS (or EBUSY) when another live client owns the lock and keeps it.
		if errors.As(err, &oe) && errors.As(err, &ec) &&
			(syscall.Errno(-ec.ErrorCode()) == syscall.EROFS || syscall.Errno(-ec.ErrorCode()) == syscall.EBUSY) {
			oe.Kind = driver.ErrBusyElsewhere
			oe.Err = fmt.Errorf("another client holds the exclusive lock: %w", oe.Err)
		}
		return nil, err
	}
	return &HeldLock{c: c, spec: spec, img: img}, nil
}

// Write writes p at off through the lock holder's handle (used to show that a fenced holder can no
// longer write).
func (l *HeldLock) Write(ctx context.Context, p []byte, off int64) error {
	return l.c.do(ctx, "write", l.spec.String(), func() error {
		_, err := l.img.WriteAt(p, off)
		if err == nil {
			err = l.img.Flush()
		}
		return err
	}, nil)
}

// Release releases the lock and closes the image.
func (l *HeldLock) Release(ctx context.Context) error {
	return l.c.do(ctx, "lock release", l.spec.String(), func() error {
		rerr := l.img.LockRelease()
		cerr := l.img.Close()
		return errors.Join(rerr, cerr)
	}, nil)
}

// BreakLock takes the image away from its current holders: every other watcher, every
// exclusive-lock owner, every client that holder (a host identity, "" for none) recorded (see
// RecordClients) and the clients given (the host locks' own) are blocklisted (fenced, so that a
// holder that is only unreachable cannot write any more, a kernel mapping that let the lock go
// included), then the owners' locks are broken. It returns once the image's OSD enforces the
// blocklist (see fenceBarrier), with the fenced addresses. Use it only when the holder is known
// to be dead or must be stopped: this is the explicit LOCK_BREAK=on takeover.
func (c *Cluster) BreakLock(ctx context.Context, spec Spec, holder string, clients ...string) ([]string, error) {
	watchers, err := c.OtherWatchers(ctx, spec)
	if err != nil {
		return nil, err
	}
	owners, err := c.LockOwners(ctx, spec)
	if err != nil {
		return nil, err
	}
	var recorded []string
	if holder != "" {
		rec, ok, err := c.Holder(ctx, spec)
		if err != nil {
			return nil, err
		}
		recorded = recordedClients(rec, ok, holder)
	}
	self, err := c.ClientAddr()
	if err != nil {
		return nil, err
	}
	var fenced []string
	for _, addr := range fenceTargets(self, watchers, owners, slices.Concat(recorded, clients)) {
		if err := c.Blocklist(ctx, addr, 0); err != nil {
			return fenced, fmt.Errorf("fence %s before breaking the lock on %s: %w", addr, spec, err)
		}
		fenced = append(fenced, addr)
	}
	if len(fenced) > 0 {
		if err := c.fenceBarrier(ctx, spec); err != nil {
			return fenced, fmt.Errorf("fenced %s, but could not make sure that the OSDs enforce it on %s (mount again: the takeover fences again and breaks nothing before it can tell): %w", strings.Join(fenced, ", "), spec, err)
		}
	}
	for _, o := range owners {
		err := c.withImage(ctx, "lock break", spec, func(img *rbd.Image) error {
			return img.LockBreak(rbd.LockModeExclusive, o)
		})
		if err != nil && !errors.Is(err, driver.ErrNotFound) {
			return fenced, err
		}
	}
	return fenced, nil
}

// fenceBarrier makes the blocklist entries this connection has just added bind the image
// before anything that follows. The monitor answers a blocklist once the OSD map holding it is
// committed, but each OSD applies that map only when it receives it; until then it serves the
// fenced client, which could take the exclusive lock on the header back and write after the
// takeover returned. So this connection waits for the latest OSD map and then reads the header
// under it: an OSD serves an op only once it has the map the op was sent under, in order with
// the other ops on the object, so from then on the header's OSD refuses the fenced clients.
// (librbd's own lock break does the same between its blocklist and its break.)
func (c *Cluster) fenceBarrier(ctx context.Context, spec Spec) error {
	if err := c.do(ctx, "wait for the latest OSD map", spec.String(), c.conn.WaitForLatestOSDMap, nil); err != nil {
		return err
	}
	_, err := headerCall(ctx, c, "read the header under the latest OSD map", spec, "", func(io *rados.IOContext, oid string) (struct{}, error) {
		_, err := io.Stat(oid)
		return struct{}{}, err
	})
	return err
}

// fenceTargets are the addresses a takeover blocklists, in order, each once: the image's other
// watchers, its exclusive-lock owners and the other clients given (those its holder recorded,
// its host locks'), never this connection (self).
func fenceTargets(self string, watchers []Watcher, owners, others []string) []string {
	var out []string
	add := func(addr string) {
		if addr = normalizeAddr(addr); addr != self && !slices.Contains(out, addr) {
			out = append(out, addr)
		}
	}
	for _, w := range watchers {
		add(w.Addr)
	}
	for _, o := range owners {
		add(o)
	}
	for _, a := range others {
		add(a)
	}
	return out
}

// WatchLapse is how long the OSDs keep a watch whose client stopped answering
// (osd_client_watch_timeout, 30 s by default): a dead client watches an image no longer than that.
const WatchLapse = 30 * time.Second

// WaitUnwatched waits until no other client watches the image, and returns the watchers still
// there when it gave up (none: the image is unwatched). A live client (a host with the image
// mapped, even idle) keeps its watch; a dead or frozen one loses it within WatchLapse. So it waits
// at most WatchLapse plus a few seconds, and never past ctx's deadline less reserve (the time the
// caller needs afterwards).
func (c *Cluster) WaitUnwatched(ctx context.Context, spec Spec, reserve time.Duration) ([]Watcher, error) {
	return c.waitWatchers(ctx, spec, reserve, nil)
}

// waitWatchers is WaitUnwatched for the watchers that filter keeps (nil: all of them).
func (c *Cluster) waitWatchers(ctx context.Context, spec Spec, reserve time.Duration, filter func([]Watcher) []Watcher) ([]Watcher, error) {
	return pollWatchers(ctx, reserve, 2*time.Second, func(ctx context.Context) ([]Watcher, error) {
		ws, err := c.OtherWatchers(ctx, spec)
		if err == nil && filter != nil {
			ws = filter(ws)
		}
		return ws, err
	})
}

// pollWatchers looks (look) every interval until no watcher is left, for at most WatchLapse
// plus a few seconds and never past ctx's deadline less reserve, and returns the watchers of
// the last look. A look takes up to a second: it is made only if it fits before the end.
func pollWatchers(ctx context.Context, reserve, interval time.Duration, look func(context.Context) ([]Watcher, error)) ([]Watcher, error) {
	until := time.Now().Add(WatchLapse + 5*time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Add(-reserve).Before(until) {
		until = dl.Add(-reserve)
	}
	for {
		ws, err := look(ctx)
		if err != nil || len(ws) == 0 {
			return ws, err
		}
		wait := min(interval, time.Until(until)-time.Second)
		if wait <= 0 {
			return ws, nil
		}
		select {
		case <-ctx.Done():
			return ws, nil
		case <-time.After(wait):
		}
	}
}

// LiveWatchers is WaitUnwatched reserving TakeOverReserve, with the addresses of the clients
// still watching (cinder.Watchers).
func (c *Cluster) LiveWatchers(ctx context.Context, spec Spec) ([]string, error) {
	ws, err := c.WaitUnwatched(ctx, spec, TakeOverReserve)
	return addrsOf(ws), err
}

// FenceDeadHolder is BreakLock for a holder (a host identity, "" when not known) that is dead: it
// waits (WaitUnwatched) for the image's watchers to lapse, and refuses with ErrBusyElsewhere while
// a client still watches it.
func (c *Cluster) FenceDeadHolder(ctx context.Context, spec Spec, reserve time.Duration, holder string) ([]string, error) {
	live, err := c.WaitUnwatched(ctx, spec, reserve)
	if err != nil {
		return nil, err
	}
	if len(live) > 0 {
		return nil, &OpError{Op: "fence", What: spec.String(), Kind: driver.ErrBusyElsewhere, Err: aliveError(live)}
	}
	return c.BreakLock(ctx, spec, holder)
}

// aliveError says that a holder is alive, for a LOCK_BREAK takeover that must not happen.
func aliveError(live []Watcher) error {
	addrs := make([]string, 0, len(live))
	for _, w := range live {
		addrs = append(addrs, "client "+w.Addr)
	}
	return fmt.Errorf("the holder is alive: the image is still watched by %s. LOCK_BREAK=on takes a volume over only from a dead host (a dead client's watch lapses within %s); stop its containers there",
		strings.Join(addrs, ", "), WatchLapse)
}

// Host locks. A host that attaches a volume takes an exclusive RADOS object lock, named
// HostLockName, on the image's header object. It is not librbd's lock: librbd's exclusive-lock
// feature and `rbd lock add` share the header's "rbd_lock", and a foreign holder there makes
// every writer (krbd, rbd-fuse) wait forever. This one only records which host holds the volume:
// taking it is atomic (a second host gets busy), it survives the holder's crash (the restarted
// plugin recognises its cookie), and breaking it is explicit.

// HostLockName is the name of the object lock on the image header.
const HostLockName = "ceph-docker-plugin"

// HostLockTag is the tag of the shared host locks (read-only claims).
const HostLockTag = "docker-plugin-readonly"

// Locker is a holder of a host lock.
type Locker struct {
	Client string // client.<id>
	Cookie string
	Addr   string // ip:port/nonce
	Shared bool   // a shared (read-only) lock; false: the exclusive one
}

// headerCall runs fn with the image's pool context and header object name. id is the image's ID
// when the caller knows it already (an open of the image to learn it is several round trips).
func headerCall[T any](ctx context.Context, c *Cluster, op string, spec Spec, id string, fn func(io *rados.IOContext, oid string) (T, error)) (T, error) {
	return headerCallLate(ctx, c, op, spec, id, fn, nil)
}

// headerCallLate is headerCall with call's late: it gets fn's result, with the pool context and
// the header object, when the caller gave up before fn returned.
func headerCallLate[T any](ctx context.Context, c *Cluster, op string, spec Spec, id string, fn func(io *rados.IOContext, oid string) (T, error), late func(io *rados.IOContext, oid string, v T, err error)) (T, error) {
	var zero T
	io, err := c.ioctx(ctx, spec.Pool, spec.Namespace)
	if err != nil {
		return zero, err
	}
	if id == "" {
		if id, err = c.ImageID(ctx, spec); err != nil {
			return zero, err
		}
	}
	oid := "rbd_header." + id
	var l func(T, error)
	if late != nil {
		l = func(v T, err error) { late(io, oid, v, err) }
	}
	return call(ctx, c, op, spec.String(), func() (T, error) { return fn(io, oid) }, l)
}

// Lockers lists the image's host locks.
func (c *Cluster) Lockers(ctx context.Context, spec Spec) ([]Locker, error) {
	return headerCall(ctx, c, "list host locks", spec, "", listLockers)
}

// LockHost takes the image's host lock with cookie (no expiry), exclusive. ErrBusyElsewhere when
// another client holds it (exclusive or shared); taking it again with the same client and cookie
// succeeds. imageID is the image's ID if the caller has just read it (Describe), else empty.
func (c *Cluster) LockHost(ctx context.Context, spec Spec, imageID, cookie, desc string) error {
	return c.lockHost(ctx, spec, imageID, cookie, desc, false)
}

// LockHostShared is LockHost for a read-only claim: a shared lock, which other hosts' shared
// locks do not refuse; ErrBusyElsewhere when another client holds the exclusive one.
func (c *Cluster) LockHostShared(ctx context.Context, spec Spec, imageID, cookie, desc string) error {
	return c.lockHost(ctx, spec, imageID, cookie, desc, true)
}

func (c *Cluster) lockHost(ctx context.Context, spec Spec, imageID, cookie, desc string, shared bool) error {
	// taken says the lock was taken by this call (not held already): a lock that lands after the
	// caller gave up is given back then, or this host would hold a volume it never mounted.
	_, err := headerCallLate(ctx, c, "host lock", spec, imageID, func(io *rados.IOContext, oid string) (bool, error) {
		var ret int
		var err error
		if shared {
			ret, err = io.LockShared(oid, HostLockName, cookie, HostLockTag, desc, 0, nil)
		} else {
			ret, err = io.LockExclusive(oid, HostLockName, cookie, desc, 0, nil)
		}
		if err != nil {
			return false, err
		}
		if ret == -int(syscall.EBUSY) {
			return false, fmt.Errorf("%w: another client holds the host lock", driver.ErrBusyElsewhere)
		}
		return ret == 0, nil // 0, or -EEXIST: we hold it already
	}, func(io *rados.IOContext, oid string, taken bool, err error) {
		if err == nil && taken {
			c.reportLate("host lock", spec.String(), unlockHeader(io, oid, cookie))
		}
	})
	if err != nil || imageID == "" {
		return err
	}
	// Taking a lock creates its object when it is missing: had the image been removed (or renamed)
	// since its ID was read, the lock went to a header that is not the name's any more, or made an
	// empty one. Make sure the name still leads to that ID; if not, take the lock back.
	cur, err := c.ImageID(ctx, spec)
	switch {
	case err == nil && cur == imageID:
		return nil
	case err != nil && !errors.Is(err, driver.ErrNotFound):
		return err // cannot tell: the caller releases what it may hold
	}
	if uerr := c.unlockStale(ctx, spec, imageID, cookie); uerr != nil {
		return uerr
	}
	return &OpError{Op: "host lock", What: spec.String(), Kind: driver.ErrNotFound,
		Err: errors.New("the image was removed or renamed while this host was taking it")}
}

// unlockStale releases this client's lock on the header of image ID id, and removes the header
// object if the lock made it (no data, no omap: a real header always has omap keys; a renamed
// image's header is left alone).
func (c *Cluster) unlockStale(ctx context.Context, spec Spec, id, cookie string) error {
	_, err := headerCall(ctx, c, "release host lock", spec, id, func(io *rados.IOContext, oid string) (struct{}, error) {
		return struct{}{}, unlockHeader(io, oid, cookie)
	})
	return err
}

// unlockHeader releases this client's host lock with cookie on header object oid, and removes
// the object if the lock made it (no data, no omap: a real header always has omap keys).
func unlockHeader(io *rados.IOContext, oid, cookie string) error {
	if _, err := io.Unlock(oid, HostLockName, cookie); err != nil {
		return err
	}
	st, err := io.Stat(oid)
	if errors.Is(err, rados.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	omap, err := io.GetOmapValues(oid, "", "", 1)
	if err != nil {
		return err
	}
	if st.Size == 0 && len(omap) == 0 {
		return io.Delete(oid)
	}
	return nil
}

// BreakHostLock removes a host lock whoever holds it (no fencing: see BreakLock). A lock that is
// gone already is success.
func (c *Cluster) BreakHostLock(ctx context.Context, spec Spec, l Locker) error {
	_, err := headerCall(ctx, c, "break host lock", spec, "", func(io *rados.IOContext, oid string) (struct{}, error) {
		_, err := io.BreakLock(oid, HostLockName, l.Client, l.Cookie)
		return struct{}{}, err
	})
	return err
}
