package fuse

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/sys/mountinfo"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/driver/execx"
)

// Which of this mapper's loop devices are live mappings.
//
// Asking a loop's rbd-fuse is a FUSE round trip twice over (LOOP_GET_STATUS64 reads the backing
// file's attributes, and the file's own stat), and rbd-fuse answers each getattr after listing
// the pool's images (rbd_list) and statting its image: about 12 OSD requests and 15-50 ms a loop
// on the lab, one loop at a time, so a 300-volume restart's List took 16 s (cmd/cdp-bench). Most
// loops need no question: one whose directory has exactly one mount, a FUSE one, that a running
// rbd-fuse process serves is backed by that daemon's file (a loop of an earlier mount that was
// detached shows "/<image>" as its backing file; one under a mount stacked over a dead one shares
// the path, hence "exactly one mount"). The rest (no visible daemon: typically one that died,
// whose mount answers ENOTCONN without a round trip) are asked askWorkers at a time, each within
// its own deadline.

const (
	// askWorkers bounds the questions in flight: each wakes a different rbd-fuse daemon (and
	// lists its pool).
	askWorkers = 16
	// askTimeoutDefault is how long one daemon may take to answer before it counts as hung.
	askTimeoutDefault = 2 * time.Second
)

// verdict is what a loop device's rbd-fuse said about it.
type verdict int

const (
	verdictUnknown verdict = iota // it answered something else (an error): cannot tell
	verdictLive                   // the loop is backed by the live file at its path
	verdictStale                  // the daemon is gone (ENOTCONN) or another file is there now
	verdictHung                   // no answer within the deadline
)

// hostView is what /proc and the mount table say about the rbd-fuse mounts under Root, read
// once per scan: the mount directories a running rbd-fuse serves, and those with exactly one
// mount, a FUSE one.
type hostView struct {
	served map[string]bool
	single map[string]bool
}

// live reports whether dir's rbd-fuse is known to run without asking it.
func (v hostView) live(dir string) bool { return v.served[dir] && v.single[dir] }

func newHostView(procs []fuseProc, mounts []*mountinfo.Info) hostView {
	v := hostView{served: map[string]bool{}, single: map[string]bool{}}
	for _, p := range procs {
		v.served[p.dir] = true
	}
	count := map[string]int{}
	for _, m := range mounts {
		count[m.Mountpoint]++
		v.single[m.Mountpoint] = count[m.Mountpoint] == 1 && strings.HasPrefix(m.FSType, "fuse")
	}
	return v
}

func (f *Fuse) mounts(filter mountinfo.FilterFunc) ([]*mountinfo.Info, error) {
	if f.mountTable != nil {
		return f.mountTable(filter)
	}
	return mountinfo.GetMounts(filter)
}

// viewAll reads the mount table under Root; procs are the rbd-fuse processes serving under it.
// A mount table that cannot be read makes every loop a question.
func (f *Fuse) viewAll(procs []fuseProc) hostView {
	mounts, err := f.mounts(mountinfo.PrefixFilter(filepath.Clean(f.Root)))
	if err != nil {
		f.log().WithError(err).Warn("fuse: cannot read the mount table; asking every rbd-fuse daemon instead")
		mounts = nil
	}
	return newHostView(procs, mounts)
}

// viewOf is viewAll for one mount directory, from its record: its daemon counts only if the
// recorded pid still serves it (no scan of every process for one image).
func (f *Fuse) viewOf(dir string) hostView {
	rec, ok, _ := f.recordOf(dir)
	if !ok || rec.pid <= 0 || !procServes(f.procDir(), rec.pid, dir) {
		return hostView{}
	}
	mounts, err := f.mounts(mountinfo.SingleEntryFilter(dir))
	if err != nil {
		return hostView{}
	}
	return newHostView([]fuseProc{{pid: rec.pid, dir: dir}}, mounts)
}

// scan splits this mapper's loop devices into live mappings and stale loops; with only set, it
// looks only at that image's loops. A loop whose rbd-fuse died and whose mount was detached
// shows its backing file as "/<image>" and answers LOOP_GET_STATUS with ENOTCONN: it is stale,
// known by its image name only.
func (f *Fuse) scan(ctx context.Context, only *driver.ImageSpec, view hostView) (live []driver.Mapping, stale []staleLoop, err error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	loops, err := listLoops(f.SysfsRoot)
	if err != nil {
		return nil, nil, fmt.Errorf("fuse list: %w", err)
	}
	return f.classify(ctx, loops, only, view)
}

// candidate is one of this mapper's loop devices being classified.
type candidate struct {
	loopDev
	dev      string
	spec     driver.ImageSpec // Pool is empty for a detached loop
	detached bool
	verdict  verdict
}

// classify splits loops into this mapper's live mappings and stale loops (of only, if set):
// what view shows to run is live without a question; every other loop's rbd-fuse is asked.
func (f *Fuse) classify(ctx context.Context, loops []loopDev, only *driver.ImageSpec, view hostView) (live []driver.Mapping, stale []staleLoop, err error) {
	root := filepath.Clean(f.Root) + "/"
	var cands []*candidate
	var questions []*candidate
	for _, l := range loops {
		c := &candidate{loopDev: l, dev: filepath.Join(f.DevRoot, "loop"+strconv.Itoa(l.N))}
		rel, under := strings.CutPrefix(l.Backing, root)
		c.detached = !under && !strings.Contains(strings.TrimPrefix(l.Backing, "/"), "/") && l.Backing != "/"
		if !under && !c.detached {
			continue // not this mapper's: never touch (or even ask) other loops
		}
		if c.detached {
			c.spec = driver.ImageSpec{Image: strings.TrimPrefix(l.Backing, "/")}
			if only != nil && c.spec.Image != only.Image {
				continue
			}
		} else {
			parts := strings.Split(rel, "/")
			if len(parts) != 3 || parts[1] != parts[2] {
				continue
			}
			c.spec = driver.ImageSpec{Pool: parts[0], Image: parts[1]}
			if only != nil && c.spec != *only {
				continue // another image's: Map and Unmap ask only about their own
			}
		}
		cands = append(cands, c)
		if !c.detached && view.live(f.mountDir(c.spec)) {
			c.verdict = verdictLive
		} else {
			questions = append(questions, c)
		}
	}
	if err := f.askAll(ctx, questions); err != nil {
		return nil, nil, err
	}
	for _, c := range cands {
		switch {
		case c.verdict == verdictStale:
			stale = append(stale, staleLoop{Device: c.dev, Spec: c.spec})
		case c.detached:
			// Alive or silent, a detached mount's loop is no mapping: only its death matters.
		default:
			if c.verdict == verdictHung {
				// Mapping the image twice would be worse than waiting: it stays listed.
				f.log().WithFields(logrus.Fields{"image": c.spec.String(), "device": c.dev, "waited": f.deadline().String()}).
					Warn("fuse: the image's rbd-fuse does not answer; counted as mapped: if it stays hung, its volume's I/O hangs too (see the daemon's state; killing it makes the next Mount map the image again)")
			}
			live = append(live, driver.Mapping{ImageSpec: c.spec, Device: c.dev, ReadOnly: loopReadOnly(f.SysfsRoot, c.N)})
		}
	}
	return live, stale, nil
}

func (f *Fuse) deadline() time.Duration {
	if f.askTimeout > 0 {
		return f.askTimeout
	}
	return askTimeoutDefault
}

// askAll asks each candidate's rbd-fuse about its loop, askWorkers at a time, and records the
// verdicts. It fails only when ctx ends; a daemon that does not answer is verdictHung.
func (f *Fuse) askAll(ctx context.Context, cands []*candidate) error {
	slots := make(chan struct{}, askWorkers)
	var wg sync.WaitGroup
	for _, c := range cands {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			c.verdict = f.askOne(ctx, c)
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fuse list: %w: %w", driver.ErrTimeout, err)
	}
	return nil
}

// askOne asks one loop's rbd-fuse within the per-daemon deadline, waiting for the daemon's other
// questions first (see probe) within the same deadline.
func (f *Fuse) askOne(ctx context.Context, c *candidate) verdict {
	actx, cancel := context.WithTimeout(ctx, f.deadline())
	defer cancel()
	release, err := f.probe(actx, c.spec.Image)
	if err != nil {
		return verdictHung // its earlier question did not end in time either
	}
	defer release()
	ask := f.ask
	if ask == nil {
		ask = askLoop
	}
	answer := make(chan verdict, 1)
	if err := execx.Bounded(actx, func() error { answer <- ask(c.dev, c.Backing, c.detached); return nil }); err != nil {
		return verdictHung
	}
	return <-answer
}

// askLoop asks the rbd-fuse behind loop device dev about it: LOOP_GET_STATUS64 reads the backing
// file's device and inode (ENOTCONN: its daemon is gone), and the file at backing must be that
// very file (a dead daemon's path answers ENOTCONN, a path without a mount ENOENT, a new mount
// another inode). A detached loop's path cannot be looked up: only its status tells.
func askLoop(dev, backing string, detached bool) verdict {
	_, device, inode, err := loopStatus(dev)
	switch {
	case errors.Is(err, unix.ENOTCONN):
		return verdictStale
	case err != nil, detached:
		return verdictUnknown
	}
	var st unix.Stat_t
	if err := unix.Stat(backing, &st); err != nil {
		return verdictStale
	}
	if st.Dev == device && st.Ino == inode {
		return verdictLive
	}
	return verdictStale
}

type probeLock struct {
	ch    chan struct{}
	users int
}

// probe waits until no other question is asked of the rbd-fuse serving an image of this name
// (keyed by name: a detached loop knows only that), and returns the release. rbd-fuse's image
// table is not safe for concurrent requests. One lock for all daemons made every Map, Unmap and
// capacity refresh wait for every other's question: with 1,000 volumes the periodic refreshes
// alone queued 600 deep and unmounts stalled behind them.
func (f *Fuse) probe(ctx context.Context, image string) (func(), error) {
	f.probeMu.Lock()
	if f.probing == nil {
		f.probing = map[string]*probeLock{}
	}
	l := f.probing[image]
	if l == nil {
		l = &probeLock{ch: make(chan struct{}, 1)}
		f.probing[image] = l
	}
	l.users++
	f.probeMu.Unlock()
	done := func() {
		f.probeMu.Lock()
		if l.users--; l.users == 0 {
			delete(f.probing, image)
		}
		f.probeMu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; done() }, nil
	case <-ctx.Done():
		done()
		return nil, fmt.Errorf("fuse list: %w: %w", driver.ErrTimeout, ctx.Err())
	}
}
