package driver

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Growing volumes. An image made bigger (rbd resize, openstack volume extend) gets a bigger
// filesystem: at its next first Mount on a host, and while it is mounted here, within one
// GROW_INTERVAL (WatchGrowth). A smaller image is never "fixed": shrinking would lose data, so
// it is refused (a Mount fails before mounting, a mounted volume's status and log say so).

// Sizes of a mapped volume, in bytes.
type Sizes struct {
	Device uint64 // the block device, as the image's size reaches it
	FS     uint64 // the filesystem's size (blocks x block size, as its superblock says)
}

// DeviceRefresher makes the device of a mapped image show the image's current size. The fuse
// mapper needs it (its loop device keeps the size it was attached with); krbd's devices follow
// their image by themselves (the kernel client's watch on the image header).
type DeviceRefresher interface {
	Refresh(ctx context.Context, spec ImageSpec) error
}

// growSlack is how much bigger than its filesystem a device must be for a grow: resize2fs and
// xfs_growfs leave a tail smaller than a block group or allocation group unused.
const growSlack = 1 << 20

// growTimeout bounds one resize2fs or xfs_growfs run by the watcher.
const growTimeout = 5 * time.Minute

// growth is the driver's record of what it measured and did, per mounted volume, and of the
// checks and grows running now (busy), which a teardown waits for.
type growth struct {
	mu     sync.Mutex
	busy   map[string]chan struct{}
	status map[string]*growStatus
}

type growStatus struct {
	Sizes
	measured time.Time
	event    string // the last grow or refusal, for docker volume inspect
	tried    uint64 // device size of the last grow, so that a tail too small to use is not retried
	warned   uint64 // device size last reported as smaller than the filesystem
}

// record updates a volume's status under the growth lock.
func (g *growth) record(name string, f func(s *growStatus)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.status == nil {
		g.status = map[string]*growStatus{}
	}
	s := g.status[name]
	if s == nil {
		s = &growStatus{}
		g.status[name] = s
	}
	f(s)
}

func (g *growth) snapshot(name string) (growStatus, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if s := g.status[name]; s != nil {
		return *s, true
	}
	return growStatus{}, false
}

// claim marks name busy; false when a check or grow of it runs already.
func (g *growth) claim(name string) (done func(), ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.busy == nil {
		g.busy = map[string]chan struct{}{}
	}
	if _, running := g.busy[name]; running {
		return nil, false
	}
	ch := make(chan struct{})
	g.busy[name] = ch
	return func() {
		g.mu.Lock()
		delete(g.busy, name)
		g.mu.Unlock()
		close(ch)
	}, true
}

// settle waits for a check or grow of name to finish and forgets its status: called by a
// teardown, under the volume's lock, before it unmounts. A check can start only under that lock,
// so none starts until the teardown is over.
func (d *Driver) settle(ctx context.Context, name string) error {
	d.growth.mu.Lock()
	ch := d.growth.busy[name]
	d.growth.mu.Unlock()
	if ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%w: volume %s: its filesystem is being grown (resize2fs or xfs_growfs runs); try again in a minute", ErrTimeout, name)
		}
	}
	d.growth.mu.Lock()
	delete(d.growth.status, name)
	d.growth.mu.Unlock()
	return nil
}

// shrunkError is the refusal of a filesystem bigger than its device.
func shrunkError(name string, s Sizes) error {
	return fmt.Errorf("%w: volume %s: its image (%s) is smaller than its filesystem (%s): the image was shrunk, which cut off the end of the filesystem; "+
		"the plugin never shrinks a filesystem. Grow the image back to at least %s (rbd resize --size %s POOL/IMAGE, or openstack volume extend) and mount again",
		ErrInvalid, name, FormatSize(s.Device), FormatSize(s.FS), FormatSize(s.FS), FormatSize(s.FS))
}

// beforeFirstMount runs at a first Mount on this host, before mounting: a filesystem bigger than
// its device is refused with what to do (the kernel would refuse it too, with "bad geometry"),
// and one that this process cannot grow once mounted (ext4 without CAP_SYS_RESOURCE) is grown
// now, offline.
func (d *Driver) beforeFirstMount(ctx context.Context, name string, st *State) error {
	if d.cfg.FS == nil {
		return nil
	}
	dev, fstype := st.Device, st.FSType
	s, err := d.cfg.FS.Sizes(ctx, dev, "", fstype)
	if err != nil {
		// Not a reason to keep the data from its user: the kernel's mount checks the geometry.
		d.log.WithFields(logrus.Fields{"volume": name, "device": dev}).WithError(err).Warn("could not read the sizes of the volume's device and filesystem before mounting it")
		return nil
	}
	if s.FS > s.Device {
		err := shrunkError(name, s)
		d.growth.record(name, func(g *growStatus) { g.Sizes, g.measured, g.event = s, time.Now(), "refused: "+err.Error() })
		return fmt.Errorf("mount volume %s: refused: %w", name, err)
	}
	if s.Device >= s.FS+growSlack && !readOnly(st) && d.cfg.FS.OnlineGrowError(fstype) != nil {
		d.grow(ctx, name, dev, "", fstype)
	}
	return nil
}

// afterFirstMount completes a first Mount on this host, under the volume's lock: the root
// options of a filesystem just made (made), and the growing of a filesystem whose image grew
// while it was not mounted here. A grow that fails is logged and shown by inspect, and the
// watcher tries again; the Mount succeeds (the data is all there).
func (d *Driver) afterFirstMount(ctx context.Context, name string, st *State, root RootOptions, made bool) error {
	if err := d.setUpRoot(ctx, name, st.Path, root, made); err != nil {
		return err
	}
	if d.cfg.FS != nil && !readOnly(st) {
		d.grow(ctx, name, st.Device, st.Path, st.FSType)
	}
	return nil
}

// readOnly says the volume is mapped or mounted read-only here: nothing to grow.
func readOnly(st *State) bool {
	return st.Attach.Map.ReadOnly || slices.Contains(strings.Split(st.Options, ","), "ro")
}

// grow measures the volume and grows its filesystem if its device is bigger, recording what it
// found: mounted at path, or offline (path ""). The caller makes sure no teardown runs meanwhile
// (the volume's lock, or a claim).
func (d *Driver) grow(ctx context.Context, name, dev, path, fstype string) {
	log := d.log.WithFields(logrus.Fields{"volume": name, "device": dev, "fstype": fstype})
	s, err := d.cfg.FS.Sizes(ctx, dev, path, fstype)
	if err != nil {
		log.WithError(err).Warn("could not read the sizes of the volume's device and filesystem")
		return
	}
	var g growStatus
	d.growth.record(name, func(st *growStatus) { st.Sizes, st.measured = s, time.Now(); g = *st })
	switch {
	case s.FS > s.Device:
		if g.warned != s.Device {
			err := shrunkError(name, s)
			log.WithError(err).Error("the volume's image is smaller than its filesystem; I/O past the end fails")
			d.growth.record(name, func(st *growStatus) { st.warned, st.event = s.Device, "refused: "+err.Error() })
		}
		return
	case s.Device < s.FS+growSlack || g.tried == s.Device:
		return
	}
	log = log.WithFields(logrus.Fields{"from": FormatSize(s.FS), "device-size": FormatSize(s.Device), "mounted": path != ""})
	if path != "" {
		if why := d.cfg.FS.OnlineGrowError(fstype); why != nil {
			err := fmt.Errorf("the device grew to %s, but the %s filesystem (%s) cannot grow while mounted: %w; it grows at the volume's next first Mount on a host (stop its containers and start them again)",
				FormatSize(s.Device), fstype, FormatSize(s.FS), why)
			log.WithError(err).Warn("cannot grow the mounted filesystem")
			d.growth.record(name, func(st *growStatus) { st.tried, st.event = s.Device, err.Error() })
			return
		}
	}
	start := time.Now()
	gerr := d.cfg.FS.Grow(ctx, dev, path, fstype)
	after, serr := d.cfg.FS.Sizes(ctx, dev, path, fstype)
	if serr != nil {
		after = s
	}
	how := "while mounted"
	if path == "" {
		how = "before mounting"
	}
	d.growth.record(name, func(st *growStatus) {
		st.tried, st.Sizes, st.measured = s.Device, after, time.Now()
		switch {
		case gerr != nil:
			st.event = fmt.Sprintf("grow from %s %s failed at %s: %v", FormatSize(s.FS), how, time.Now().UTC().Format(time.RFC3339), gerr)
		default:
			st.event = fmt.Sprintf("grown from %s to %s %s at %s", FormatSize(s.FS), FormatSize(after.FS), how, time.Now().UTC().Format(time.RFC3339))
		}
	})
	if gerr != nil {
		log.WithError(gerr).Error("growing the filesystem failed; the next check tries again once the device size changes, or remount the volume")
		return
	}
	log.WithFields(logrus.Fields{"to": FormatSize(after.FS), "duration": time.Since(start).Round(time.Millisecond)}).Info("filesystem grown to its device's size")
}

// WatchGrowth checks every volume mounted on this host each interval until ctx ends, and grows a
// filesystem whose device grew. The bound on how soon a container sees a grown image is about
// one interval plus the grow itself.
func (d *Driver) WatchGrowth(ctx context.Context, interval time.Duration) {
	if d.cfg.FS == nil || interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		states, err := d.state.All()
		if err != nil {
			d.log.WithError(err).Warn("grow watcher: reading the volumes' state")
			continue
		}
		for _, st := range states {
			if len(st.IDs) == 0 || st.Op != "" || st.Device == "" || readOnly(&st) {
				continue
			}
			// A volume busy with a call is checked at the next tick: the others are not held up.
			done, ok := d.claimForCheck(ctx, st.Name, min(interval, time.Second))
			if !ok {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer done()
				d.checkGrowth(ctx, st.Name)
			}()
		}
	}
}

// claimForCheck decides, under the volume's lock, that the volume is mounted here and may be
// checked, and claims it: a teardown (which takes the lock) then waits for the check to end.
// The check's I/O runs after the lock is released.
func (d *Driver) claimForCheck(ctx context.Context, name string, wait time.Duration) (func(), bool) {
	lctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	unlock, err := d.locks.lock(lctx, name)
	if err != nil {
		return nil, false // busy with a call: checked next time
	}
	defer unlock()
	st, ok, err := d.state.Load(name)
	if err != nil || !ok || len(st.IDs) == 0 || st.Op != "" || st.Device == "" {
		return nil, false
	}
	return d.growth.claim(name)
}

// checkGrowth refreshes the volume's device size (fuse), then grows its filesystem if the device
// grew. Its caller holds the claim.
func (d *Driver) checkGrowth(ctx context.Context, name string) {
	st, ok, err := d.state.Load(name)
	if err != nil || !ok || st.Device == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, growTimeout)
	defer cancel()
	if d.cfg.Refresher != nil {
		if err := d.cfg.Refresher.Refresh(ctx, st.Image); err != nil {
			d.log.WithFields(logrus.Fields{"volume": name, "image": st.Image.String()}).WithError(err).Warn("grow watcher: refreshing the device's size")
			return
		}
	}
	d.grow(ctx, name, st.Device, st.Path, st.FSType)
}

// growInfo adds what the plugin measured of a volume mounted here to its inspect status.
func (d *Driver) growInfo(name string, status map[string]any) {
	g, ok := d.growth.snapshot(name)
	if !ok {
		return
	}
	if g.Device > 0 {
		status["device-size"] = FormatSize(g.Device)
		status["filesystem-size"] = FormatSize(g.FS)
		status["sizes-measured"] = g.measured.UTC().Format(time.RFC3339)
	}
	if g.event != "" {
		status["resize"] = g.event
	}
}
