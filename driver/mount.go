package driver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
)

// Mount makes the volume available on this host for caller id and returns its mount point. The
// first Mount on the host attaches, maps, formats a blank device and mounts; later Mounts, with
// other IDs or again with the same one (dockerd's nested uses: `docker cp`), only count a use.
func (d *Driver) Mount(ctx context.Context, name, id string) (string, error) {
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
		if err := d.ensureUp(ctx, &st, false); err != nil {
			return "", fmt.Errorf("mount volume %s: %w", name, err)
		}
		uses := st.AddUse(id)
		st.Updated = time.Now()
		if err := d.state.Save(st); err != nil {
			return "", err
		}
		log.WithFields(logrus.Fields{"uses": uses, "refs": len(st.IDs)}).Info("volume mounted (another use)")
		return st.Path, nil
	}
	path, err := d.mountFirst(ctx, name, id)
	if err != nil {
		return "", err
	}
	log.WithField("path", path).Info("volume mounted")
	return path, nil
}

// mountFirst is the cold path: attach, map, format if blank, mount; undone in reverse on error.
func (d *Driver) mountFirst(ctx context.Context, name, id string) (_ string, err error) {
	// steps times each step for the debug log: where a slow Mount spends its time.
	steps := logrus.Fields{"volume": name, "caller": id}
	t0 := time.Now()
	lap := func(step string) {
		steps[step] = time.Since(t0).Round(100 * time.Microsecond).String()
		t0 = time.Now()
	}
	defer func() {
		if err == nil {
			d.log.WithFields(steps).Debug("first mount: time per step")
		}
	}()
	// The state is recorded before anything happens, with the mount's ID: a crash or a failure
	// from here on is undone by it (the image is known once attached).
	st := State{Name: name, Op: "mount", OpID: id, Path: d.mountPath(name), Attach: Attachment{MountID: id}, Updated: time.Now()}
	if err := d.state.Save(st); err != nil {
		return "", err
	}
	lap("save")
	var tx transaction
	defer func() {
		if err == nil {
			return
		}
		cctx, cancel := context.WithTimeout(context.Background(), d.cfg.CleanupTimeout)
		defer cancel()
		if uerr := tx.rollback(cctx); uerr != nil {
			// Keep the state (Op=mount) so that the next call or a restart finishes the cleanup;
			// with the device, if it got as far as mapping, for `docker volume inspect`.
			if st.Device != "" {
				_ = d.state.Save(st)
			}
			d.log.WithFields(logrus.Fields{"volume": name}).WithError(uerr).Error("undoing a failed mount")
			err = fmt.Errorf("%w; undoing it also failed (the plugin retries in the background and on the next call): %v", err, uerr)
			return
		}
		if derr := d.state.Delete(name); derr != nil {
			err = errors.Join(err, derr)
		}
	}()

	att, err := d.prov.Attach(ctx, name, AttachRequest{Host: d.cfg.Node, MountID: id, TakeOver: d.cfg.LockBreak})
	if err != nil {
		if !refused(err) {
			// No answer (a deadline, a lost connection): the backend may still have made the
			// claim, or make it later. Release whatever it holds for this mount.
			tx.add("detach", func(ctx context.Context) error { return d.prov.Detach(ctx, name, Attachment{MountID: id}) })
		}
		return "", fmt.Errorf("mount volume %s: %w", name, err)
	}
	lap("attach")
	if att.MountID == "" {
		att.MountID = id
	}
	vol := att.Volume
	att.Volume = nil // not persisted
	tx.add("detach", func(ctx context.Context) error { return d.prov.Detach(ctx, name, att) })
	if vol == nil { // the backend did not read it while attaching
		v, err := d.prov.Get(ctx, name)
		if err != nil {
			return "", fmt.Errorf("mount volume %s: %w", name, err)
		}
		v.Unwritten = false // only a read made after the claim counts
		vol = &v
		lap("get")
	}
	fstype := vol.FSType
	if fstype == "" {
		fstype = d.cfg.Defaults.FSType
	}
	if err := CheckStored(fstype, *vol); err != nil {
		return "", storedRefusal(name, err)
	}
	st.Image, st.FSType, st.Options = vol.Image, fstype, vol.MountOptions
	if len(att.Fenced) > 0 {
		d.log.WithFields(logrus.Fields{"volume": name, "fenced": att.Fenced}).Warn("took the volume over from a dead holder")
	}
	st.Attach = att
	if att.Map.Image != "" {
		st.Image = att.Map.ImageSpec // the backend's word on what to map (Cinder knows it only now)
	}
	if err := d.state.Save(st); err != nil {
		return "", err
	}
	d.fault("mount:attached")
	lap("save-attached")

	m, err := d.mapper.Map(ctx, att.Map)
	if err != nil {
		return "", fmt.Errorf("mount volume %s: map %s: %w", name, att.Map.ImageSpec, err)
	}
	tx.add("unmap", func(ctx context.Context) error { return d.mapper.Unmap(ctx, att.Map.ImageSpec) })
	lap("map")
	if err := d.recordClients(ctx, name, att, m); err != nil {
		return "", fmt.Errorf("mount volume %s: record this host's Ceph clients of %s (a host taking the volume over fences them): %w", name, att.Map.ImageSpec, err)
	}
	lap("record")
	// Not saved here: the state already names the image, and a repair finds its device (if it was
	// mapped) by asking the mapper; the device is recorded with the mount below. (One fsync less:
	// 6 ms of a first Mount in the krbd lab's guest.)
	st.Device = m.Device
	d.fault("mount:mapped")

	fs, made, err := d.mounter.FormatIfBlank(ctx, m.Device, fstype, vol.MkfsOptions, vol.Unwritten && !att.Map.ReadOnly)
	if err != nil {
		return "", fmt.Errorf("mount volume %s: %w", name, err)
	}
	if err := checkFound(name, fstype, fs, st.Options); err != nil {
		return "", err
	}
	if fs != fstype {
		d.log.WithFields(logrus.Fields{"volume": name, "found": fs, "expected": fstype}).Warn("the device has another supported filesystem than recorded; mounting what it has")
		st.FSType = fs
	}
	d.fault("mount:formatted")
	lap("format")

	mopts, err := MountOptionsFor(st.FSType, st.Options)
	if err != nil {
		return "", storedRefusal(name, err)
	}
	if err := d.beforeFirstMount(ctx, name, &st); err != nil {
		return "", err
	}
	if err := d.mounter.Mount(ctx, m.Device, st.Path, st.FSType, mopts); err != nil {
		return "", fmt.Errorf("mount volume %s: %w", name, err)
	}
	tx.add("unmount", func(ctx context.Context) error { return d.mounter.Unmount(ctx, st.Path) })
	if err := d.afterFirstMount(ctx, name, &st, vol.Root, made); err != nil {
		return "", fmt.Errorf("mount volume %s: %w", name, err)
	}
	d.fault("mount:mounted")
	lap("mount")

	st.IDs, st.Uses = []string{id}, map[string]int{id: 1}
	st.Op, st.OpID = "", ""
	st.Updated = time.Now()
	if err := d.state.Save(st); err != nil {
		return "", err
	}
	lap("save-done")
	return st.Path, nil
}

// Unmount drops one use of caller id; the last use of any ID unmounts, unmaps and detaches. An
// unknown ID succeeds (Docker calls Unmount after a failed Mount), and so does an Unmount beyond
// the uses counted for an ID.
func (d *Driver) Unmount(ctx context.Context, name, id string) error {
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
	st.Op, st.OpID = "unmount", id
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
	if err := d.mounter.Unmount(ctx, st.Path); err != nil {
		return err
	}
	d.fault("unmount:unmounted")
	// Unmap and Detach run even when the state does not record them done: a crash may have hit
	// between the side effect and its record. Both are no-ops when there is nothing to undo.
	// (With Cinder the image is known only once attached: none, nothing was mapped.)
	if st.Image.Image != "" {
		if err := d.mapper.Unmap(ctx, st.Image); err != nil {
			return fmt.Errorf("unmap %s: %w", st.Image, err)
		}
	}
	d.fault("unmount:unmapped")
	if err := d.prov.Detach(ctx, st.Name, st.Attach); err != nil {
		return err
	}
	d.fault("unmount:detached")
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

// transaction remembers undo steps and runs them in reverse.
type transaction struct {
	steps []undoStep
}

type undoStep struct {
	name string
	fn   func(context.Context) error
}

func (t *transaction) add(name string, fn func(context.Context) error) {
	t.steps = append(t.steps, undoStep{name, fn})
}

// rollback undoes the steps in reverse and stops at the first that fails: the steps before it
// must stay (releasing the claim on a volume that is still mapped here would let another host
// mount it too). What is left is recorded in the state and finished by the next call.
func (t *transaction) rollback(ctx context.Context) error {
	for i := len(t.steps) - 1; i >= 0; i-- {
		if err := t.steps[i].fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", t.steps[i].name, err)
		}
	}
	return nil
}
