package driver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cephdocker/ceph-docker-plugin/driver/undo"
)

// Mount makes the volume available on this host for caller id and returns its mount point. The
// first Mount on the host attaches, maps, formats a blank device and mounts; later Mounts, with
// other IDs or again with the same one (dockerd's nested uses: `docker cp`), only count a use.
// A volume whose access is readonly is mapped and mounted read-only.
func (d *Driver) Mount(ctx context.Context, name, id string) (string, error) {
	return d.Use(ctx, name, id, Use{})
}

// Use is Mount with what the use asks of the volume (u): with u.Raw the volume is mapped without
// a filesystem and its device is returned instead of a mount point; u.ReadOnly takes a shared
// read-only claim; u.Writable refuses a volume the backend maps read-only.
func (d *Driver) Use(ctx context.Context, name, id string, u Use) (string, error) {
	ctx = d.withCleanup(ctx)
	if id == "" {
		return "", fmt.Errorf("mount volume %s: %w: no caller ID", name, ErrInvalid)
	}
	unlock, err := d.begin(ctx, name)
	if err != nil {
		return "", err
	}
	defer unlock()
	log := d.log.WithFields(logrus.Fields{"volume": name, "caller": id})

	st, ok, err := d.state.Load(name)
	if err != nil {
		return "", err
	}
	if ok && st.Op != "" {
		op := st.Op
		if err := d.repair(ctx, &st); err != nil {
			return "", fmt.Errorf("mount volume %s: finishing an interrupted %s first: %w", name, op, err)
		}
		st, ok, err = d.state.Load(name)
		if err != nil {
			return "", err
		}
	}
	if ok && len(st.IDs) > 0 {
		// Warm: the volume is up here. Make sure it still is (a restarted daemon may have lost
		// the propagated mount), then add the reference.
		if err := sameUse(&st, u); err != nil {
			return "", err
		}
		if err := d.ensureUp(ctx, &st, false); err != nil {
			return "", fmt.Errorf("mount volume %s: %w", name, err)
		}
		uses := st.AddUse(id)
		st.Updated = time.Now()
		if err := d.state.Save(st); err != nil {
			return "", err
		}
		log.WithFields(logrus.Fields{"uses": uses, "refs": len(st.IDs)}).Info("volume mounted (another use)")
		if u.Raw {
			return st.Device, nil
		}
		return st.Path, nil
	}
	path, err := d.mountFirst(ctx, name, id, u)
	if errors.Is(err, errNeedsReplay) || (errors.Is(err, ErrBusyElsewhere) && d.mayBeReplaying(ctx, name)) {
		// A read-only mount of a filesystem whose journal needs replaying, or a read-only claim
		// refused while another host may be replaying it: replay.go.
		path, err = d.mountAfterReplay(ctx, name, id, u, err)
	}
	if err != nil {
		return "", err
	}
	log.WithField("path", path).Info("volume mounted")
	return path, nil
}

func usedAs(raw bool) string {
	if raw {
		return "as a raw device (block)"
	}
	return "as a filesystem"
}

// mountFirst is the cold path: attach, map, format if blank, mount (with raw: attach and map
// only, returning the device); undone in reverse on error.
func (d *Driver) mountFirst(ctx context.Context, name, id string, u Use) (_ string, err error) {
	times := newStepTimes(name, id)
	lap := times.lap
	defer func() {
		if err == nil {
			d.log.WithFields(times.fields).Debug("first mount: time per step")
		}
	}()
	// The state is recorded before anything happens, with the mount's ID: a crash or a failure
	// from here on is undone by it (the image is known once attached).
	st := State{Name: name, Op: OpMount, OpID: id, Path: d.mountPath(name), Raw: u.Raw, Attach: Attachment{MountID: id}, Updated: time.Now()}
	if u.Raw {
		st.Path = ""
	}
	if err := d.state.Save(st); err != nil {
		return "", err
	}
	lap("save")
	var tx undo.Stack
	defer func() {
		if err != nil {
			err = d.undoMount(ctx, &tx, st, err)
		}
	}()

	if d.cfg.LockBreak {
		// Before a takeover could fence the other front end's holder.
		if err := d.refuseOther(ctx, name, "mount it"); err != nil {
			return "", err
		}
	}
	att, vol, err := d.claim(ctx, &tx, name, id, u, lap)
	if err != nil {
		return "", err
	}
	if u.Writable && att.Map.ReadOnly {
		return "", readOnlyRefusal(name)
	}
	fstype := vol.FSType
	if fstype == "" {
		fstype = d.cfg.Defaults.FSType
	}
	if err := CheckStored(fstype, *vol); err != nil {
		return "", storedRefusal(name, err)
	}
	if err := d.otherFrontEnd(*vol, "mount it"); err != nil {
		return "", err
	}
	st.Image, st.FSType, st.Options = vol.Image, fstype, vol.MountOptions
	st.Attach = att
	if att.Map.Image != "" {
		st.Image = att.Map.ImageSpec // the backend's word on what to map (Cinder knows it only now)
	}
	if err := d.state.Save(st); err != nil {
		return "", err
	}
	d.fault(FaultMountAttached)
	lap("save-attached")

	m, err := d.mapClaimed(ctx, &tx, name, att, lap)
	if err != nil {
		return "", err
	}
	// Not saved here: the state already names the image, and a repair finds its device (if it was
	// mapped) by asking the mapper; the device is recorded with the mount below. (One fsync less:
	// 6 ms of a first Mount in the krbd lab's guest.)
	st.Device = m.Device
	d.fault(FaultMountMapped)
	if u.Raw {
		return d.upDone(&st, lap, m.Device)
	}

	if err := d.formatAndMount(ctx, &tx, &st, *vol, att, fstype, u.replay, lap); err != nil {
		return "", err
	}
	if u.replay {
		// Mounting it read-write replayed the journal: the undo releases it all again.
		return "", errReplayed
	}
	return d.upDone(&st, lap, st.Path)
}

// formatAndMount is the second half of a first mount: format the mapped device if it is blank,
// mount it at st.Path and set the root of a filesystem it made. The unmount is pushed on tx.
// With replay (the read-write mount that replays a read-only volume's journal) nothing is
// formatted either.
func (d *Driver) formatAndMount(ctx context.Context, tx *undo.Stack, st *State, vol Volume, att Attachment, fstype string, replay bool, lap func(string)) error {
	name := st.Name
	ro := att.Map.ReadOnly
	var fs string
	var made bool
	var err error
	if ro || replay {
		// Nothing is written through a read-only mapping: a blank device stays blank.
		if fs, err = d.mounter.Probe(ctx, st.Device); err == nil && fs == "" {
			return noFilesystemReadOnly(name)
		}
	} else {
		fs, made, err = d.mounter.FormatIfBlank(ctx, st.Device, fstype, vol.MkfsOptions, vol.Unwritten)
	}
	if err != nil {
		return fmt.Errorf("mount volume %s: %w", name, err)
	}
	if err := checkFound(name, fstype, fs, st.Options); err != nil {
		return err
	}
	if fs != fstype {
		d.log.WithFields(logrus.Fields{"volume": name, "found": fs, "expected": fstype}).Warn("the device has another supported filesystem than recorded; mounting what it has")
		st.FSType = fs
	}
	d.fault(FaultMountFormatted)
	lap("format")

	mopts, err := MountOptionsFor(st.FSType, st.Options)
	if err != nil {
		return storedRefusal(name, err)
	}
	if err := d.beforeFirstMount(ctx, name, st); err != nil {
		return err
	}
	if ro {
		mopts = withReadOnly(mopts)
	}
	if err := d.mounter.Mount(ctx, st.Device, st.Path, st.FSType, mopts); err != nil {
		if ro {
			return readOnlyMountError(name, err)
		}
		return fmt.Errorf("mount volume %s: %w", name, err)
	}
	tx.Push("unmount", func(ctx context.Context) error { return d.mounter.Unmount(ctx, st.Path) })
	if err := d.afterFirstMount(ctx, name, st, vol.Root, made); err != nil {
		return fmt.Errorf("mount volume %s: %w", name, err)
	}
	d.fault(FaultMountMounted)
	lap("mount")
	return nil
}

// upDone records the first use of a volume now up (mapped, and mounted unless raw), and
// returns got (the device or the mount point).
func (d *Driver) upDone(st *State, lap func(string), got string) (string, error) {
	id := st.OpID
	st.IDs, st.Uses = []string{id}, map[string]int{id: 1}
	st.Op, st.OpID = "", ""
	st.Updated = time.Now()
	if err := d.state.Save(*st); err != nil {
		return "", err
	}
	lap("save-done")
	return got, nil
}

// claim is the first step of a first mount: the backend's claim for this host and mount ID, and
// the volume as read after it (the backend's reply, or a read). Its undo is pushed on tx.
func (d *Driver) claim(ctx context.Context, tx *undo.Stack, name, id string, u Use, lap func(string)) (Attachment, *Volume, error) {
	// The replay's claim is exclusive, and refused (never a takeover) while anyone holds the volume.
	att, err := d.prov.Attach(ctx, name, AttachRequest{Host: d.cfg.Node, MountID: id, TakeOver: d.cfg.LockBreak && !u.replay, ReadOnly: u.ReadOnly && !u.replay, IgnoreAccess: u.replay})
	if err != nil {
		if !refused(err) {
			// No answer (a deadline, a lost connection): the backend may still have made the
			// claim, or make it later. Release whatever it holds for this mount.
			tx.Push("detach", func(ctx context.Context) error { return d.prov.Detach(ctx, name, Attachment{MountID: id}) })
		}
		return Attachment{}, nil, fmt.Errorf("mount volume %s: %w", name, err)
	}
	lap("attach")
	if len(att.Fenced) > 0 {
		d.log.WithFields(logrus.Fields{"volume": name, "fenced": att.Fenced}).Warn("took the volume over from a dead holder")
	}
	if att.MountID == "" {
		att.MountID = id
	}
	vol := att.Volume
	att.Volume = nil // not persisted
	tx.Push("detach", func(ctx context.Context) error { return d.prov.Detach(ctx, name, att) })
	if vol == nil { // the backend did not read it while attaching
		v, err := d.prov.Get(ctx, name)
		if err != nil {
			return Attachment{}, nil, fmt.Errorf("mount volume %s: %w", name, err)
		}
		v.Unwritten = false // only a read made after the claim counts
		vol = &v
		lap("get")
	}
	return att, vol, nil
}

// mapClaimed maps the image the backend's claim names and records this host's Ceph clients of it
// (a host taking the volume over fences them). The unmap is pushed on tx.
func (d *Driver) mapClaimed(ctx context.Context, tx *undo.Stack, name string, att Attachment, lap func(string)) (Mapping, error) {
	m, err := d.mapper.Map(ctx, att.Map)
	if err != nil {
		return Mapping{}, fmt.Errorf("mount volume %s: map %s: %w", name, att.Map.ImageSpec, err)
	}
	tx.Push("unmap", func(ctx context.Context) error { return d.mapper.Unmap(ctx, att.Map.ImageSpec) })
	lap("map")
	if err := d.recordClients(ctx, name, att, m); err != nil {
		return Mapping{}, fmt.Errorf("mount volume %s: record this host's Ceph clients of %s (a host taking the volume over fences them): %w", name, att.Map.ImageSpec, err)
	}
	lap("record")
	return m, nil
}

// stepTimes times each step of a first mount for the debug log: where a slow Mount spends its time.
type stepTimes struct {
	fields logrus.Fields
	t0     time.Time
}

func newStepTimes(name, id string) *stepTimes {
	return &stepTimes{fields: logrus.Fields{"volume": name, "caller": id}, t0: time.Now()}
}

func (s *stepTimes) lap(step string) {
	s.fields[step] = time.Since(s.t0).Round(100 * time.Microsecond).String()
	s.t0 = time.Now()
}

// undoMount undoes a failed first mount (the steps on tx, in reverse) and returns the mount's
// error, with the undo's if that failed too. Undone, the state is forgotten; otherwise it stays
// (Op=mount) so that the next call or a restart finishes the cleanup (rollback stops at the first
// failed step: the claim must outlive the mapping).
func (d *Driver) undoMount(ctx context.Context, tx *undo.Stack, st State, err error) error {
	uerr := tx.Rollback(ctx)
	if uerr == nil {
		if derr := d.state.Delete(st.Name); derr != nil {
			return errors.Join(err, derr)
		}
		return err
	}
	log := d.log.WithField("volume", st.Name)
	// With the device, if it got as far as mapping, for `docker volume inspect`.
	if st.Device != "" {
		if serr := d.state.Save(st); serr != nil {
			log.WithError(serr).Warn("recording the device of a mount whose undo failed")
		}
	}
	log.WithError(uerr).Error("undoing a failed mount")
	return fmt.Errorf("%w; undoing it also failed (the plugin retries in the background and on the next call): %v", err, uerr)
}

// Unmount drops one use of caller id; the last use of any ID unmounts, unmaps and detaches. An
// unknown ID succeeds (Docker calls Unmount after a failed Mount), and so does an Unmount beyond
// the uses counted for an ID.
func (d *Driver) Unmount(ctx context.Context, name, id string) error {
	ctx = d.withCleanup(ctx)
	unlock, err := d.begin(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	log := d.log.WithFields(logrus.Fields{"volume": name, "caller": id})
	st, ok, err := d.state.Load(name)
	if err != nil || !ok {
		return err
	}
	if st.Op != "" {
		op := st.Op
		if err := d.repair(ctx, &st); err != nil {
			return fmt.Errorf("unmount volume %s: finishing an interrupted %s first: %w", name, op, err)
		}
		if st, ok, err = d.state.Load(name); err != nil || !ok {
			return err
		}
	}
	if st.UsesOf(id) == 0 {
		// Also an Unmount beyond the uses counted for an ID.
		log.Debug("unmount of an unknown caller ID: nothing to do")
		return nil
	}
	if st.TotalUses() > 1 {
		left := st.DropUse(id)
		st.Updated = time.Now()
		if err := d.state.Save(st); err != nil {
			return err
		}
		log.WithFields(logrus.Fields{"uses": left, "refs": len(st.IDs)}).Info("volume use dropped; still mounted")
		return nil
	}
	st.Op, st.OpID = OpUnmount, id
	st.Updated = time.Now()
	if err := d.state.Save(st); err != nil {
		return err
	}
	if err := d.teardown(ctx, &st); err != nil {
		return fmt.Errorf("unmount volume %s: %w", name, err)
	}
	log.Info("volume unmounted and released")
	return nil
}

// teardown unmounts, unmaps and detaches, then forgets the state. Each step is idempotent, so a
// teardown interrupted by a crash or an error is finished by running it again.
func (d *Driver) teardown(ctx context.Context, st *State) error {
	if err := d.settle(ctx, st.Name); err != nil {
		return err
	}
	if st.Path != "" { // "" when raw: nothing mounted
		if err := d.mounter.Unmount(ctx, st.Path); err != nil {
			return err
		}
	}
	d.fault(FaultUnmountUnmounted)
	// Unmap and Detach run even when the state does not record them done: a crash may have hit
	// between the side effect and its record. Both are no-ops when there is nothing to undo.
	// (With Cinder the image is known only once attached: none, nothing was mapped.)
	if st.Image.Image != "" {
		if err := d.mapper.Unmap(ctx, st.Image); err != nil {
			return fmt.Errorf("unmap %s: %w", st.Image, err)
		}
	}
	d.fault(FaultUnmountUnmapped)
	if err := d.prov.Detach(ctx, st.Name, st.Attach); err != nil {
		return err
	}
	d.fault(FaultUnmountDetached)
	return d.state.Delete(st.Name)
}

// refused tells a backend's definite "no" (nothing was claimed) from a failure to hear back.
func refused(err error) bool {
	for _, e := range []error{ErrBusyElsewhere, ErrNotFound, ErrInvalid, ErrPermission, ErrExists} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
