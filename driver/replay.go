package driver

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/sirupsen/logrus"
)

// The journal replay of a read-only volume. A filesystem whose last writer did not unmount it
// (a copy or clone of a volume in use, a volume switched to readonly after its writer crashed)
// carries a journal (ext4) or log (xfs) that must be replayed before it can be mounted. The
// kernel replays it at a read-write mount; on a read-only device both refuse a read-only mount
// with EROFS ("write access unavailable, cannot proceed"). So the first read-only use of such a
// volume replays it once: it takes the volume read-write and exclusively (a claim the backend
// refuses while any other host holds it, reader or writer, and never takes over by fencing),
// mounts it read-write, which replays the journal, releases it all, and mounts it read-only as
// asked. The replay is the kernel's own, for ext4 and xfs alike (xfs_repair cannot replay a log,
// and e2fsck -p would fix more than the journal, without the filesystem's owner asking).
//
// Two hosts' first read-only uses at once both see EROFS; the backend's exclusive claim lets one
// of them replay, and the other, refused, waits a little and claims read-only again (replayPace).

// replayID is the caller ID of the replay's own claim on volume name: it never counts as a use
// (the claim is released before the use it serves goes on), and a state left with it after a
// crash is an interrupted mount, which the next call or the restart undoes.
func replayID(name string) string { return "replay:" + name }

// errNeedsReplay marks a read-only mount refused because the journal needs replaying.
var errNeedsReplay = errors.New("the journal needs replaying")

// errReplayed ends the replay's first mount once the read-write mount has replayed the journal:
// as any error does, it makes mountFirst undo everything it did (unmount, unmap, release).
var errReplayed = errors.New("its journal was replayed")

// replayPace bounds how long a first read-only use waits for another host that holds the volume
// while its journal needs replaying (another reader preparing it at the same moment).
type replayPace struct {
	total time.Duration // the waits of one use together
	step  time.Duration // the first wait; each next one doubles, up to 8 steps, with jitter
}

var defaultReplayPace = replayPace{total: 15 * time.Second, step: 250 * time.Millisecond}

// pause waits before try (0-based) of a use that has waited waited so far. false: the use must
// stop waiting (its budget or its context's deadline is spent).
func (p replayPace) pause(ctx context.Context, try int, waited *time.Duration) bool {
	d := p.step << min(try, 3)
	d = d/2 + rand.N(d) // jitter: two hosts that collided once do not collide again in step
	if *waited+d > p.total {
		return false
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		*waited += d
		return true
	}
}

// mountAfterReplay goes on with a first read-only use (u) whose mount was refused because the
// journal needs replaying, or whose read-only claim another host refused (first): it replays the
// journal under an exclusive claim when it needs it, then mounts read-only as asked. While
// another host holds the volume it waits (replayPace) and claims read-only again: that host may
// be a reader replaying it, or one that has done so. Called under the volume's lock, with no
// state of the volume on this host.
func (d *Driver) mountAfterReplay(ctx context.Context, name, id string, u Use, first error) (string, error) {
	log := d.log.WithFields(logrus.Fields{"volume": name, "caller": id})
	var waited time.Duration
	needs := errors.Is(first, errNeedsReplay)
	seen, replayed, lastErr := needs, false, first
	// busy waits for the holder named by err; false: the use gives up with the error to return.
	try := 0
	busy := func(err error) (bool, error) {
		log.WithError(err).WithField("try", try+1).Info("another host holds the volume while it may need its journal replayed; waiting for it")
		ok := d.replayPace.pause(ctx, try, &waited)
		try++
		if ok {
			return true, nil
		}
		if seen {
			return false, replayBusyError(name, err)
		}
		return false, fmt.Errorf("%w; this host waited %s for it in case it was preparing the volume for read-only use (replaying its journal)", err, waited.Round(time.Second))
	}
	if !needs {
		if ok, err := busy(first); !ok {
			return "", err
		}
	}
	for {
		if _, left, err := d.state.Load(name); err != nil {
			return "", err
		} else if left {
			// The undo of the refused mount did not finish: the next call finishes it first.
			return "", lastErr
		}
		if needs {
			needs = false
			log.Info("the journal needs replaying before a read-only mount: replaying it under an exclusive claim")
			start := time.Now()
			err := d.replay(ctx, name)
			switch {
			case err == nil:
				replayed = true
				log.WithField("duration", time.Since(start).Round(time.Millisecond).String()).Info("journal replayed; mounting read-only")
			case errors.Is(err, ErrBusyElsewhere):
				lastErr = err
				if ok, err := busy(err); !ok {
					return "", err
				}
				continue
			default:
				return "", replayError(name, err)
			}
		}
		path, err := d.mountFirst(ctx, name, id, u)
		switch {
		case err == nil:
			return path, nil
		case errors.Is(err, errNeedsReplay) && !replayed:
			// Still (or again) dirty: another host's replay did not happen, or this host lost
			// the race for the exclusive claim before anyone replayed.
			lastErr, needs, seen = err, true, true
		case errors.Is(err, ErrBusyElsewhere):
			// Another host holds it read-write: a reader replaying it, most likely (also after
			// this host's replay: a reader that saw the journal dirty before it).
			lastErr = err
			if ok, err := busy(err); !ok {
				return "", err
			}
		default:
			return "", err
		}
	}
}

// mayBeReplaying says whether another host's exclusive claim, which refused this use's read-only
// claim, may be a replay: only when the volume's access is readonly (read again: only a refused
// claim asks), where no writer is admitted and an exclusive holder is a reader replaying the
// journal. A read-only use of a readwrite volume (a CSI readers' stage) is refused at once,
// naming the writer: the caller retries (swarm retries NodeStage), and a docker run waits for
// no writer that may hold the volume for hours.
func (d *Driver) mayBeReplaying(ctx context.Context, name string) bool {
	vol, err := d.prov.Get(ctx, name)
	return err == nil && vol.ReadOnly()
}

// replay replays the journal of volume name on this host: an exclusive read-write claim
// (AttachRequest.IgnoreAccess, never a takeover), a map, a read-write mount (which replays it),
// then all of it undone in reverse. Nothing is formatted. An error from the claim is the
// backend's refusal, naming the holder.
func (d *Driver) replay(ctx context.Context, name string) error {
	_, err := d.mountFirst(ctx, name, replayID(name), Use{replay: true})
	if !errors.Is(err, errReplayed) {
		return err
	}
	if _, left, lerr := d.state.Load(name); lerr != nil || left {
		// Replayed, but not all released: the state stays (Op=mount) and the next call or the
		// restart finishes the release.
		return errors.Join(err, lerr)
	}
	return nil
}

// replayBusyError is the refusal of a first read-only use whose journal needs replaying while
// another host keeps holding the volume (err, the backend's refusal, names it).
func replayBusyError(name string, err error) error {
	return fmt.Errorf("mount volume %s read-only: its filesystem's journal needs replaying (its last writer did not unmount it cleanly), "+
		"which the first host to use it read-only does by holding it read-write for a moment, and another host keeps holding it: %w. "+
		"If other hosts are starting to read it too, it is being prepared: retry in a few seconds; otherwise release it there (stop its containers) and retry",
		name, err)
}

// replayError is the failure of the replay itself (not a refusal).
func replayError(name string, err error) error {
	return fmt.Errorf("mount volume %s read-only: replaying its filesystem's journal (its last writer did not unmount it cleanly) failed: %w; "+
		"to replay it by hand, set its access to readwrite (rbd image-meta remove POOL/IMAGE %s; openstack volume unset --property %s VOLUME), "+
		"mount it once on one host, stop it, and set it back to readonly", name, err, MetaAccess, MetaAccess)
}
