package rbd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/driver/undo"
)

// OptFromVolume makes a new volume a point-in-time copy of another volume (-o from-volume=NAME).
const OptFromVolume = driver.OptFromVolume

// metaFromVolume is the volume a copy was made from (its name), kept for Get and for an
// idempotent Create to compare.
const metaFromVolume = metaPrefix + OptFromVolume

// copySnapPrefix begins the name of the snapshot a copy takes of its source: it says what the
// snapshot is to whoever lists the source's snapshots, and lets the plugin find its own.
const copySnapPrefix = "docker-plugin-copy-"

// copySnapName is the snapshot of its source that copy name is made from, taken at t.
func copySnapName(name string, t time.Time) string {
	return copySnapPrefix + name + "-" + t.UTC().Format("20060102T150405.000Z")
}

// removeRetry is the pause between attempts to remove a copy still open by an aborting flatten.
const removeRetry = 200 * time.Millisecond

// createCopy makes spec a point-in-time copy of volume src (-o from-volume): a snapshot of the
// source's image, a clone of it, a flatten of the clone within ctx's deadline so that the copy
// no longer depends on the source, then the snapshot's removal, so that the source can be
// removed. The source may be in use: the copy holds what was written to the image when the
// snapshot was taken (crash-consistent, like a power cut). It returns the options the copy is
// created with (CopyOf: the source's stored options for those not given).
//
// On error everything made is removed (the copy first, then the snapshot); on success the copy's
// removal is pushed on tx, for the steps that follow.
func (p *Provisioner) createCopy(ctx context.Context, tx *undo.Stack, spec Spec, src string, co *CreateOptions, opts driver.Options) (_ driver.Options, err error) {
	if err := driver.ValidateName(src); err != nil {
		return opts, fmt.Errorf("from-volume: %w", err)
	}
	srcSpec, d, err := p.describe(ctx, src)
	if err != nil {
		return opts, fmt.Errorf("from-volume %s: %w", src, err)
	}
	if opts, err = opts.CopyOf(volumeOf(src, srcSpec, d)); err != nil {
		return opts, err
	}
	co.Size = opts.Size
	snap := srcSpec
	snap.Snap = copySnapName(spec.Image, time.Now())
	log := p.log().WithFields(logrus.Fields{"volume": spec.Image, "source": src, "snapshot": snap.String()})

	// The snapshot goes whatever happens, after the copy when the copy goes too: a protected
	// snapshot (clone format 1) cannot be unprotected while it has a clone.
	var snapTx, copyTx undo.Stack
	defer func() {
		uerr := copyTx.Rollback(ctx)
		if uerr == nil {
			uerr = snapTx.Rollback(ctx)
		}
		switch {
		case uerr == nil:
		case err != nil:
			err = errors.Join(err, uerr)
		default:
			// The copy is made and flattened: it does not need the snapshot, but the source
			// cannot be deleted while the snapshot stays.
			log.WithError(uerr).Warn("the copy is made, but its snapshot of the source stays; remove it: rbd snap unprotect " +
				snap.String() + "; rbd snap rm " + snap.String())
		}
	}()
	if err := p.c.CreateSnap(ctx, snap); err != nil {
		return opts, fmt.Errorf("from-volume %s: snapshot: %w", src, err)
	}
	snapTx.Push("remove snapshot "+snap.String(), func(ctx context.Context) error { return p.c.RemoveSnap(ctx, snap) })
	// Protected for clone format 1 (a cluster whose clients may be older than mimic); format 2
	// does not need it and accepts it.
	if err := p.c.ProtectSnap(ctx, snap); err != nil {
		return opts, fmt.Errorf("from-volume %s: protect snapshot: %w", src, err)
	}
	snapTx.Push("unprotect snapshot "+snap.String(), func(ctx context.Context) error { return p.c.UnprotectSnap(ctx, snap) })
	if err := p.c.Clone(ctx, snap, spec, *co); err != nil {
		return opts, fmt.Errorf("from-volume %s: clone: %w", src, err)
	}
	copyTx.Push("remove copy "+spec.String(), func(ctx context.Context) error { return p.removeBusy(ctx, spec) })
	start := time.Now()
	if err := p.c.Flatten(ctx, spec); err != nil {
		if errors.Is(err, driver.ErrTimeout) {
			return opts, fmt.Errorf("from-volume %s: copying its data did not end within the call's deadline (stopped after %s); nothing is kept: "+
				"raise CALL_TIMEOUT for copies of that size, or copy it by hand (rbd snap create, rbd clone, rbd flatten): %w",
				src, time.Since(start).Round(100*time.Millisecond), err)
		}
		return opts, fmt.Errorf("from-volume %s: flatten: %w", src, err)
	}
	log.WithField("duration", time.Since(start).Round(time.Millisecond)).Info("copy flattened")
	copyTx.Release()
	tx.Push("remove copy "+spec.String(), func(ctx context.Context) error { return p.c.Remove(ctx, spec) })
	if info, err := p.c.Info(ctx, spec); err != nil {
		return opts, err
	} else if opts.Size > info.Size {
		if err := p.c.Resize(ctx, spec, opts.Size); err != nil {
			return opts, fmt.Errorf("from-volume %s: grow the copy to %s: %w", src, driver.FormatSize(opts.Size), err)
		}
	}
	return opts, nil
}

// staleCopy is the age past which a copy's snapshot belongs to no copy in progress: a copy ends
// within its call's deadline and cleanup (CALL_TIMEOUT, two minutes at most), so an older one was
// left by a plugin killed in the middle of a copy.
const staleCopy = 15 * time.Minute

// dropStaleCopySnaps removes the snapshots of volume name's image (spec) that copies left behind
// (see staleCopy), so that the volume can be removed. It says whether it removed any. A snapshot
// whose clone still exists (the unfinished copy: clone format 1) stays.
func (p *Provisioner) dropStaleCopySnaps(ctx context.Context, name string, spec Spec) bool {
	snaps, err := p.c.ListSnaps(ctx, spec)
	if err != nil {
		return false
	}
	dropped := false
	for _, s := range snaps {
		i := strings.LastIndexByte(s, '-')
		at, err := time.Parse("20060102T150405.000Z", s[i+1:])
		if !strings.HasPrefix(s, copySnapPrefix) || err != nil || time.Since(at) < staleCopy {
			continue
		}
		snap := spec
		snap.Snap = s
		log := p.log().WithFields(logrus.Fields{"volume": name, "snapshot": snap.String()})
		if err := p.c.UnprotectSnap(ctx, snap); err != nil {
			log.WithError(err).Warn("a snapshot left by an unfinished copy cannot be unprotected (remove the unfinished copy first: rbd children " + snap.String() + ")")
			continue
		}
		if err := p.c.RemoveSnap(ctx, snap); err != nil {
			log.WithError(err).Warn("a snapshot left by an unfinished copy cannot be removed")
			continue
		}
		log.Info("removed a snapshot left by an unfinished copy")
		dropped = true
	}
	return dropped
}

// removeBusy removes an image, again while it is busy: a flatten aborted at the deadline keeps
// the image open until librbd has stopped it (its next object).
func (p *Provisioner) removeBusy(ctx context.Context, spec Spec) error {
	for {
		err := p.c.Remove(ctx, spec)
		if errors.Is(err, driver.ErrNotFound) {
			return nil
		}
		if !errors.Is(err, driver.ErrInUse) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(removeRetry):
		}
	}
}

// copyDifference compares -o from-volume=v of an idempotent Create with the volume: a copy
// records its source; an image left by a copy that did not finish still has its snapshot parent.
func copyDifference(v string, vol driver.Volume) string {
	recorded, _ := vol.Status[OptFromVolume].(string)
	parent, _ := vol.Status["parent"].(string)
	switch {
	case recorded == v:
		return ""
	case strings.Contains(parent, "@"+copySnapPrefix):
		return fmt.Sprintf("from-volume %s (it is a copy that did not finish, a clone of %s: remove it and create it again)", v, parent)
	case recorded != "":
		return fmt.Sprintf("from-volume %s (it is a copy of %s)", v, recorded)
	}
	return fmt.Sprintf("from-volume %s (it is not a copy of a volume)", v)
}
