package driver

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// repair finishes an operation a crash or an error interrupted: a Mount that never completed
// is undone unless other references keep the volume up; an Unmount is completed.
func (d *Driver) repair(ctx context.Context, st *State) error {
	log := d.log.WithFields(logrus.Fields{"volume": st.Name, "op": st.Op, "caller": st.OpID})
	if st.Op == OpUnmount {
		// The interrupted Unmount was of the last use.
		st.DropUse(st.OpID)
	}
	st.Op, st.OpID = "", ""
	if len(st.IDs) == 0 {
		log.Info("undoing an interrupted operation")
		return d.teardown(ctx, st)
	}
	log.Info("interrupted operation left the volume in use by others; keeping it up")
	if err := d.ensureUp(ctx, st, true); err != nil {
		return err
	}
	st.Updated = time.Now()
	return d.state.Save(*st)
}

// ensureUp makes sure a volume this host holds is mapped and mounted where the state says,
// mapping and mounting again what a restart lost (the fuse mapper's process, a propagated mount).
// With verifyClaim (after a restart) it first confirms with the backend that this host still
// holds the volume: another host may have fenced this one and taken it over meanwhile. It never
// takes a volume over itself.
func (d *Driver) ensureUp(ctx context.Context, st *State, verifyClaim bool) error {
	return d.ensureUpWith(ctx, st, verifyClaim, nil)
}

// ensureUpWith is ensureUp with the mapper's mappings already listed (nil: list them now). The
// reconcile lists them once for every volume: with the fuse mapper a listing reads every loop
// device and process (and asks the rbd-fuse daemons it cannot vouch for), and listing once per
// volume made a restart with 200 volumes take 200 x 200 questions (83 s on the lab, measured by
// cmd/cdp-bench).
func (d *Driver) ensureUpWith(ctx context.Context, st *State, verifyClaim bool, listed *[]Mapping) error {
	if verifyClaim {
		err := d.reclaim(ctx, st)
		if errors.Is(err, ErrBusyElsewhere) {
			return fmt.Errorf("this host no longer holds the volume (another host took it over, fencing this one): its containers get I/O errors; stop them: %w", err)
		}
		if err != nil {
			return err
		}
	}
	var maps []Mapping
	if listed != nil {
		maps = *listed
	} else {
		var err error
		if maps, err = d.mapper.List(ctx); err != nil {
			return err
		}
	}
	dev := ""
	for _, m := range maps {
		if m.ImageSpec == st.Image {
			dev = m.Device
			if verifyClaim {
				// A restarted plugin has a new Ceph client of its own: record it with the
				// mapping's, for a host that may have to fence this one.
				if err := d.recordClients(ctx, st.Name, st.Attach, m); err != nil {
					return fmt.Errorf("record this host's Ceph clients of %s: %w", st.Image, err)
				}
			}
			break
		}
	}
	if dev == "" {
		var err error
		if dev, err = d.mapAgain(ctx, st, verifyClaim); err != nil {
			return err
		}
	}
	if dev != st.Device {
		st.Device = dev
		if err := d.state.Save(*st); err != nil {
			return err
		}
	}
	if st.Raw {
		return nil // mapped is up: nothing is mounted
	}
	return d.mountAgain(ctx, st, dev)
}

// reclaim asks the backend for the claim this host holds (the attachment st records) and records
// its answer in st; it never takes the volume over.
func (d *Driver) reclaim(ctx context.Context, st *State) error {
	att, err := d.prov.Attach(ctx, st.Name, AttachRequest{Host: d.cfg.Node, MountID: st.IDs[0], Claimed: st.Attach.ID, ReadOnly: st.Attach.Map.ReadOnly})
	if err != nil {
		return err
	}
	if att.MountID == "" {
		att.MountID = st.IDs[0]
	}
	st.Attach = att
	return nil
}

// mapAgain maps again a volume whose mapping was lost (a restart of the fuse mapper's process, a
// reboot), claiming it first unless claimed, and returns the new device.
func (d *Driver) mapAgain(ctx context.Context, st *State, claimed bool) (string, error) {
	d.log.WithFields(logrus.Fields{"volume": st.Name, "image": st.Image.String()}).Warn("mapping lost; mapping again")
	if cur, _ := d.mounter.MountedDevice(st.Path); cur != "" && !st.Raw {
		// A mount of the dead device: clear it before mounting the new one.
		if err := d.mounter.Unmount(ctx, st.Path); err != nil {
			return "", fmt.Errorf("clear the stale mount of lost mapping %s: %w", st.Device, err)
		}
	}
	if !claimed {
		if err := d.reclaim(ctx, st); err != nil {
			return "", err
		}
	}
	if err := d.state.Save(*st); err != nil {
		return "", err
	}
	m, err := d.mapper.Map(ctx, st.Attach.Map)
	if err != nil {
		return "", fmt.Errorf("map %s again: %w", st.Image, err)
	}
	if err := d.recordClients(ctx, st.Name, st.Attach, m); err != nil {
		return "", fmt.Errorf("record this host's Ceph clients of %s: %w", st.Image, err)
	}
	return m.Device, nil
}

// mountAgain mounts dev at the volume's path unless it is mounted there already (a restarted
// daemon may have lost the propagated mount); another device mounted there is an error.
func (d *Driver) mountAgain(ctx context.Context, st *State, dev string) error {
	cur, err := d.mounter.MountedDevice(st.Path)
	if err != nil {
		return err
	}
	if cur == dev {
		return nil
	}
	if cur != "" {
		return fmt.Errorf("%s has %s mounted, not the volume's device %s: unmount it", st.Path, cur, dev)
	}
	d.log.WithFields(logrus.Fields{"volume": st.Name, "device": dev}).Warn("mount lost; mounting again")
	mopts, err := MountOptionsFor(st.FSType, st.Options)
	if err != nil {
		return storedRefusal(st.Name, err)
	}
	if st.Attach.Map.ReadOnly {
		mopts = withReadOnly(mopts) // as the first mount did: a read-only device mounts only ro
	}
	return d.mounter.Mount(ctx, dev, st.Path, st.FSType, mopts)
}

// Reconcile compares the persisted state with the mapper, the mount table and the backend after
// a start and repairs what differs, a few volumes at a time. Calls are let through at once: a
// call on a recorded volume waits until that volume is repaired. It returns what it could not
// repair (those volumes stay recorded and are retried by their next call).
func (d *Driver) Reconcile(ctx context.Context) error {
	ctx = d.withCleanup(ctx)
	states, err := d.state.All()
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	// Hold the lock of every recorded volume, then let calls in: a call on a volume still being
	// repaired waits for its repair (as it waits for any call on that volume), and every other
	// call is answered at once. Waiting for the whole reconcile kept the socket silent for
	// seconds with a few hundred volumes (measured by cmd/cdp-bench), and dockerd disables a
	// plugin that does not answer within about 12 s.
	unlocks := make([]func(), len(states))
	for i, st := range states {
		unlock, err := d.locks.lock(ctx, st.Name)
		if err != nil {
			close(d.ready)
			for _, u := range unlocks[:i] {
				u()
			}
			return errors.Join(append(errs, err)...)
		}
		unlocks[i] = unlock
	}
	close(d.ready)

	known := map[ImageSpec]bool{}
	for _, st := range states {
		known[st.Image] = true
	}
	var listed *[]Mapping
	maps, mapErr := d.mapper.List(ctx)
	if mapErr == nil {
		listed = &maps
	}
	var mu sync.Mutex
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < min(reconcileWorkers, len(states)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := d.reconcileOne(ctx, states[i], listed); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("volume %s: %w", states[i].Name, err))
					mu.Unlock()
				}
				unlocks[i]()
			}
		}()
	}
	// Paced: the workers' Ceph requests (6-7 per volume) came within one or two seconds once the
	// mapper had listed its mappings, 898 of a 300-volume restart's 1,972 OSD requests in one
	// second (cmd/cdp-bench); every host restarting at once would send that together.
	pace := time.NewTicker(time.Second / reconcileRate)
	defer pace.Stop()
	for i := range states {
		if i >= reconcileWorkers {
			select {
			case <-pace.C:
			case <-ctx.Done():
			}
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if mapErr == nil {
		for _, m := range maps {
			if !known[m.ImageSpec] {
				d.log.WithFields(logrus.Fields{"image": m.ImageSpec.String(), "device": m.Device}).
					Warn("reconcile: a mapping this plugin has no record of; leaving it alone")
			}
		}
	} else {
		errs = append(errs, mapErr)
	}
	return errors.Join(errs...)
}

// reconcileWorkers is how many volumes Reconcile repairs at once, and reconcileRate how many it
// starts per second at most (about 330 OSD requests per second from one host's restart).
const (
	reconcileWorkers = 8
	reconcileRate    = 50
)

// bootStamped records the boot every state record is written in (State.Boot).
type bootStamped struct {
	StateStore
	boot string
}

func (s bootStamped) Save(st State) error {
	st.Boot = s.boot
	return s.StateStore.Save(st)
}

// reconcileOne repairs one recorded volume after a start; the caller holds its lock. listed is
// the mapper's mappings listed at the start of the reconcile (nil if that failed).
func (d *Driver) reconcileOne(ctx context.Context, st State, listed *[]Mapping) error {
	log := d.log.WithFields(logrus.Fields{"volume": st.Name, "refs": len(st.IDs), "op": st.Op})
	var err error
	if st.Boot != "" && d.cfg.BootID != "" && st.Boot != d.cfg.BootID {
		// The host rebooted: its containers died, and with them every reference. Mapping the
		// volumes again would keep them claimed by this host (dockerd may never call Unmount for
		// containers it does not restart), so release them; containers that restart Mount again.
		log.Info("recorded before the host rebooted: releasing the volume, whose containers ended with the reboot")
		// Recorded first as an unmount in progress: if the release fails (the backend is away),
		// the background repair and the next call finish it, and a Mount does not join the
		// dead references.
		st.IDs, st.Uses, st.Op, st.OpID = nil, nil, OpUnmount, ""
		if err = d.state.Save(st); err == nil {
			err = d.teardown(ctx, &st)
		}
	} else if st.Op != "" {
		err = d.repair(ctx, &st)
	} else if len(st.IDs) > 0 {
		err = d.ensureUpWith(ctx, &st, true, listed)
	} else {
		err = d.teardown(ctx, &st)
	}
	if err != nil {
		log.WithError(err).Error("reconcile: could not repair the volume")
		return err
	}
	log.Info("reconciled")
	return nil
}

// RepairPending finishes the operations that failed and could not be undone at the time (the
// backend was unreachable): what Mount, Unmount and the start-up reconcile left recorded. It
// skips volumes busy with a call (their call repairs them). Run it periodically, so that a
// claim is released once the backend is back even if Docker never calls about the volume again.
func (d *Driver) RepairPending(ctx context.Context) error {
	ctx = d.withCleanup(ctx)
	select {
	case <-d.ready:
	default:
		return nil
	}
	states, err := d.state.All()
	if err != nil {
		return err
	}
	var errs []error
	for _, st := range states {
		if st.Op == "" {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
		unlock, err := d.locks.lock(lctx, st.Name)
		cancel()
		if err != nil {
			continue // a call holds it
		}
		func() {
			defer unlock()
			cur, ok, err := d.state.Load(st.Name)
			if err != nil || !ok || cur.Op == "" {
				return
			}
			op := cur.Op
			if err := d.repair(ctx, &cur); err != nil {
				errs = append(errs, fmt.Errorf("volume %s: finishing an interrupted %s: %w", st.Name, op, err))
				return
			}
			d.log.WithFields(logrus.Fields{"volume": st.Name, "op": op}).Info("finished an interrupted operation in the background")
		}()
	}
	return errors.Join(errs...)
}
