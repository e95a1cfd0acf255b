// Package fuse maps RBD images as block devices on kernels without the rbd driver: one rbd-fuse
// process per image exposes it as a file, and a loop device makes that file a block device.
//
// It is a development and fallback mapper: the data path runs through a userspace process, so if
// that process dies (for example with the plugin's container) the device returns I/O errors until
// the image is mapped again. Production hosts use krbd.
package fuse

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moby/sys/mountinfo"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/driver/execx"
	"github.com/cephdocker/ceph-docker-plugin/driver/undo"
)

// Fuse is the rbd-fuse + loop Mapper.
type Fuse struct {
	// Root holds one rbd-fuse mount per mapped image: Root/<pool>/<image>/<image>.
	Root     string
	ConfPath string // ceph.conf
	Cluster  string // cluster name; empty for "ceph"
	Keyring  string // keyring path; empty for the default search
	// Binary is the rbd-fuse executable ("rbd-fuse").
	Binary string
	// ClientOptions are Ceph client options given to every rbd-fuse (in CEPH_ARGS, so they win
	// over ceph.conf); New sets ClientOptionsDefault. Nil passes none.
	ClientOptions []string
	SysfsRoot     string // "/sys"
	DevRoot       string // "/dev"
	ProcRoot      string // "/proc" when empty
	// Log gets what a call cannot return: an undo after its caller gave up that failed (nil:
	// logrus' standard logger).
	Log logrus.FieldLogger

	// probing admits one question at a time per image name (see probe): rbd-fuse's image table
	// is not safe for concurrent requests (two getattrs at once can segfault it in
	// open_rbd_image, as its log showed under cmd/cdp-bench's parallel mounts).
	probeMu sync.Mutex
	probing map[string]*probeLock

	// Seams for tests (nil or zero: the real ones, see classify.go): how a loop's rbd-fuse is
	// asked about the loop, how long one daemon may take to answer, and the mount table.
	ask        func(dev, backing string, detached bool) verdict
	askTimeout time.Duration
	mountTable func(mountinfo.FilterFunc) ([]*mountinfo.Info, error)

	// recs holds a record per mount directory (see lookup); scanned is set once a full scan
	// filled it; anon holds the stale loops that scan could name only by image (detached).
	recsMu  sync.Mutex
	recs    map[string]*record
	scanned bool
	anon    map[string][]int
}

var _ driver.Mapper = (*Fuse)(nil)

// ClientOptionsDefault bound what each rbd-fuse daemon costs, since a host runs one per mapped
// image (one client per image, so that fencing one volume's holder fences nothing else):
//   - librbd's write-back cache at 8 MiB (6 MiB dirty) instead of 32 MiB (24 MiB dirty): the
//     cache grows to its limit under writes and keeps that memory, in every daemon;
//   - one messenger worker thread instead of three: a daemon talks to one image's objects.
//
// Measured on the lab (docs/BENCHMARKS.md, "rbd-fuse daemons"): 11.6 -> 9.2 MiB proportional
// memory per idle mounted volume and 35-44 -> 18-23 MiB after writes; writes through the loop
// device keep their write-back (turning the cache off cut 4 KiB random writes by 80%).
var ClientOptionsDefault = []string{
	"--rbd_cache_size=8388608", "--rbd_cache_max_dirty=6291456", "--rbd_cache_target_dirty=4194304",
	"--ms_async_op_threads=1",
}

// fuseMallocArenas caps glibc's malloc arenas in rbd-fuse (MALLOC_ARENA_MAX): by default every
// thread that allocates gets its own arena, each keeping freed memory, in every daemon.
const fuseMallocArenas = "2"

// New returns a Fuse mapper with the real /sys and /dev and ClientOptionsDefault.
func New(root, confPath, keyring string) *Fuse {
	return &Fuse{Root: root, ConfPath: confPath, Keyring: keyring, Binary: "rbd-fuse", SysfsRoot: "/sys", DevRoot: "/dev",
		ClientOptions: slices.Clone(ClientOptionsDefault)}
}

func validName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\x00")
}

func check(spec driver.ImageSpec) error {
	switch {
	case !validName(spec.Pool) || !validName(spec.Image):
		return fmt.Errorf("%w: fuse map %s: bad pool or image name", driver.ErrInvalid, spec)
	case spec.Namespace != "" || spec.Snap != "":
		return fmt.Errorf("%w: fuse map %s: rbd-fuse maps only image heads in the default namespace (use MAPPER=krbd)", driver.ErrInvalid, spec)
	}
	return nil
}

func (f *Fuse) mountDir(spec driver.ImageSpec) string {
	return filepath.Join(f.Root, spec.Pool, spec.Image)
}
func (f *Fuse) imageFile(spec driver.ImageSpec) string {
	return filepath.Join(f.mountDir(spec), spec.Image)
}

// Map starts rbd-fuse for the image (unless it runs already) and attaches a loop device to it.
func (f *Fuse) Map(ctx context.Context, req driver.MapRequest) (m driver.Mapping, err error) {
	spec := req.ImageSpec
	if err := check(spec); err != nil {
		return driver.Mapping{}, err
	}
	existing, stale, err := f.lookup(ctx, spec)
	if err != nil {
		return driver.Mapping{}, err
	}
	existing = slices.DeleteFunc(existing, func(m driver.Mapping) bool { return m.ImageSpec != spec })
	dir := f.mountDir(spec)
	kept := f.releaseStale(ctx, dir, existing, stale, spec)
	if len(existing) > 0 {
		if existing[0].ReadOnly != req.ReadOnly {
			return driver.Mapping{}, fmt.Errorf("%w: %s is already mapped at %s with read-only=%v; unmap it first",
				driver.ErrInUse, spec, existing[0].Device, existing[0].ReadOnly)
		}
		return existing[0], nil
	}
	// Undo what this call did if a later step fails: a failed Map leaves nothing behind.
	var tx undo.Stack
	defer tx.OnError(ctx, &err, nil)
	if err := f.ensureFuse(ctx, &tx, req, dir); err != nil {
		return driver.Mapping{}, err
	}
	type attached struct {
		dev string
		err error
	}
	ch := make(chan attached, 1)
	go func() {
		dev, err := attachLoop(f.DevRoot, f.imageFile(spec), "rbd-fuse:"+spec.String(), req.ReadOnly)
		ch <- attached{dev, err}
	}()
	var dev string
	select {
	case a := <-ch:
		dev, err = a.dev, a.err
	case <-ctx.Done():
		go func() { // attached after the caller gave up: take it back
			if a := <-ch; a.err == nil {
				if err := detachLoop(a.dev); err != nil {
					f.log().WithFields(logrus.Fields{"image": spec.String(), "device": a.dev}).WithError(err).
						Warn("fuse: a loop device attached after the caller gave up cannot be detached: detach it by hand (losetup -d)")
				}
			}
		}()
		err = fmt.Errorf("%w: %w", driver.ErrTimeout, ctx.Err())
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			err = fmt.Errorf("%w: rbd-fuse does not show the image (does %s exist?): %w", driver.ErrNotFound, spec, err)
		}
		return driver.Mapping{}, fmt.Errorf("fuse map %s: %w", spec, err)
	}
	rec, _, _ := f.recordOf(dir)
	rec.loops = append(kept, loopNumber(dev))
	f.setRecord(dir, &rec)
	return driver.Mapping{ImageSpec: spec, Device: dev, ReadOnly: req.ReadOnly}, nil
}

// ensureFuse makes sure a live rbd-fuse serves the image at dir: one left by an earlier Map is
// reused, a dead one is unmounted, a missing one is started (its undo pushed on tx).
func (f *Fuse) ensureFuse(ctx context.Context, tx *undo.Stack, req driver.MapRequest, dir string) error {
	spec := req.ImageSpec
	mounted, err := mountinfo.Mounted(dir)
	if errors.Is(err, unix.ENOTCONN) {
		// The mount of an rbd-fuse that died: its root answers nothing (once the kernel's
		// cached attributes of it expire), so it cannot even be looked up. Unmount it below.
		mounted, err = true, nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("fuse map %s: %w", spec, err)
	}
	if mounted {
		// Left by an earlier Map (e.g. a crash before the loop was attached): reuse it if alive.
		if err := execx.Bounded(ctx, func() error { _, err := os.Stat(f.imageFile(spec)); return err }); err == nil {
			return nil
		}
		cctx, cancel := undo.Context(ctx)
		err := f.unmountFuse(cctx, dir)
		cancel()
		if err != nil {
			f.log().WithFields(logrus.Fields{"image": spec.String(), "dir": dir}).WithError(err).
				Warn("fuse: cannot unmount the dead rbd-fuse mount left by an earlier map; starting a new one over it")
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("fuse map %s: %w", spec, err)
	}
	tx.Push("remove "+dir, func(context.Context) error { return removeMountDir(dir) })
	tx.Push("stop rbd-fuse at "+dir, func(ctx context.Context) error { return f.unmountFuse(ctx, dir) })
	return f.startFuse(ctx, req, dir)
}

// removeMountDir removes an image's mount directory and its pool's, unless another image's
// directory is still there.
func removeMountDir(dir string) error {
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	err := os.Remove(filepath.Dir(dir))
	if err == nil || errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

func (f *Fuse) log() logrus.FieldLogger {
	if f.Log != nil {
		return f.Log
	}
	return logrus.StandardLogger()
}

func (f *Fuse) startFuse(ctx context.Context, req driver.MapRequest, dir string) error {
	cephArgs := []string{}
	if req.User != "" {
		cephArgs = append(cephArgs, "--id", req.User)
	}
	if f.Keyring != "" {
		cephArgs = append(cephArgs, "--keyring", f.Keyring)
	}
	if f.Cluster != "" {
		cephArgs = append(cephArgs, "--cluster", f.Cluster)
	}
	cephArgs = append(cephArgs, f.ClientOptions...)
	args := []string{}
	if f.ConfPath != "" {
		args = append(args, "-c", f.ConfPath)
	}
	args = append(args, "-p", req.Pool, "-r", req.Image, dir)
	bin := f.Binary
	if bin == "" {
		bin = "rbd-fuse"
	}
	// rbd-fuse daemonizes once its FUSE mount is up; the foreground process returns then.
	lastPid := f.lastPid()
	_, err := execx.Run(ctx, execx.Cmd{Name: bin, Args: args, Env: []string{
		"CEPH_ARGS=" + strings.Join(cephArgs, " "), "MALLOC_ARENA_MAX=" + fuseMallocArenas}})
	if err != nil {
		f.killFuse(dir) // a daemon that got as far as forking
		if ctx.Err() != nil {
			return fmt.Errorf("fuse map %s: %w: %w", req.ImageSpec, driver.ErrTimeout, err)
		}
		return fmt.Errorf("fuse map %s: rbd-fuse failed: %w", req.ImageSpec, err)
	}
	// A FUSE daemon that is up shows the image file; rbd-fuse has opened the image before it
	// serves, so a file still missing after a few looks means the image does not exist.
	file := filepath.Join(dir, req.Image)
	err = execx.Bounded(ctx, func() error {
		misses := 0
		// Poll with a short, growing interval: the file is usually there within milliseconds,
		// and a fixed 50 ms sleep added up to 50 ms to every first Mount (an strace of one
		// showed 46 ms between rbd-fuse's exit and the loop attach).
		wait := time.Millisecond
		for {
			if ok, _ := mountinfo.Mounted(dir); ok {
				_, err := os.Stat(file)
				if err == nil {
					return nil
				}
				if !errors.Is(err, os.ErrNotExist) {
					return err
				}
				if misses++; misses >= 5 {
					return fmt.Errorf("%w: rbd-fuse does not show image %s: does it exist?", driver.ErrNotFound, req.ImageSpec)
				}
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			time.Sleep(wait)
			wait = min(2*wait, 50*time.Millisecond)
		}
	})
	if err != nil {
		return fmt.Errorf("fuse map %s: %w", req.ImageSpec, err)
	}
	rec, _, _ := f.recordOf(dir)
	rec.pid = f.newDaemonPid(dir, lastPid)
	f.setRecord(dir, &rec)
	return nil
}

// Unmap detaches the image's loop device(s) and stops its rbd-fuse. Not mapped is success;
// ErrInUse while the device is mounted or open.
func (f *Fuse) Unmap(ctx context.Context, spec driver.ImageSpec) error {
	if err := check(spec); err != nil {
		return err
	}
	live, stale, err := f.lookup(ctx, spec)
	if err != nil {
		return err
	}
	var found []driver.Mapping
	for _, m := range live {
		if m.ImageSpec == spec {
			found = append(found, m)
		}
	}
	dir := f.mountDir(spec)
	kept := f.releaseStale(ctx, dir, found, stale, spec)
	for _, m := range found {
		err := retryBusy(ctx, busyWaits, func() error { return execx.Bounded(ctx, func() error { return detachLoop(m.Device) }) })
		switch {
		case err == nil, errors.Is(err, os.ErrNotExist):
		case errors.Is(err, unix.EBUSY):
			return fmt.Errorf("fuse unmap %s: %w: %s is still open (mounted or used by a process)", spec, driver.ErrInUse, m.Device)
		default:
			return fmt.Errorf("fuse unmap %s: detach %s: %w", spec, m.Device, err)
		}
	}
	if err := f.unmountFuse(ctx, dir); err != nil {
		return fmt.Errorf("fuse unmap %s: %w", spec, err)
	}
	if len(kept) > 0 {
		f.setRecord(dir, &record{loops: kept})
	} else {
		f.setRecord(dir, nil)
	}
	_ = os.Remove(dir)
	_ = os.Remove(filepath.Dir(dir))
	return nil
}

// busyWaits are the pauses between tries of a loop detach refused with EBUSY right after the
// unmount: a mount namespace made at that moment (a container starting) may still hold a copy
// of the mount for a moment, as may a device probe. 1.55 s in all; a device that stays open is
// in use (ErrInUse).
var busyWaits = []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond}

// retryBusy calls fn until it returns anything but EBUSY, pausing waits[i] before try i+1, and
// returns its last error; the context's end stops the pauses.
func retryBusy(ctx context.Context, waits []time.Duration, fn func() error) error {
	err := fn()
	for _, w := range waits {
		if !errors.Is(err, unix.EBUSY) {
			return err
		}
		t := time.NewTimer(w)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		err = fn()
	}
	return err
}

// releaseStale detaches the image's stale loops (of an rbd-fuse that died) that nothing uses
// any more; one still mounted somewhere (a container that kept running) stays until its user
// goes, and a later Map or Unmap releases it. It records the image's live loops and the stale
// ones kept, and returns the kept ones.
func (f *Fuse) releaseStale(ctx context.Context, dir string, live []driver.Mapping, stale []staleLoop, spec driver.ImageSpec) []int {
	var kept []int
	for _, s := range f.staleOf(stale, spec) {
		err := execx.Bounded(ctx, func() error { return detachLoop(s.Device) })
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			// Still mounted somewhere: the kernel detaches it at its last close, so it outlives
			// neither its user nor this image's removal (nothing calls for the image again).
			if errors.Is(err, unix.EBUSY) {
				if lerr := execx.Bounded(ctx, func() error { return detachLoopLazy(s.Device) }); lerr != nil {
					f.log().WithError(lerr).WithFields(logrus.Fields{"image": spec.String(), "device": s.Device}).Warn("a stale loop device still in use could not be marked to detach at its last close")
				}
			}
			kept = append(kept, loopNumber(s.Device))
		}
	}
	rec, _, _ := f.recordOf(dir)
	rec.loops = slices.Clone(kept)
	for _, m := range live {
		rec.loops = append(rec.loops, loopNumber(m.Device))
	}
	f.setRecord(dir, &rec)
	return kept
}

// unmountFuse unmounts an rbd-fuse mount and waits for its daemon to exit.
func (f *Fuse) unmountFuse(ctx context.Context, dir string) error {
	daemons := f.daemonPids(dir) // the wait below watches these
	busyWait := time.Millisecond
	for {
		mounted, err := mountinfo.Mounted(dir)
		if errors.Is(err, os.ErrNotExist) || (err == nil && !mounted) {
			break
		}
		err = unix.Unmount(dir, 0)
		if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			continue
		}
		if errors.Is(err, unix.EBUSY) && ctx.Err() == nil && !fuseDead(dir) {
			// The loop device releases its file asynchronously after LOOP_CLR_FD (within a
			// few milliseconds, usually).
			time.Sleep(busyWait)
			busyWait = min(2*busyWait, 50*time.Millisecond)
			continue
		}
		if errors.Is(err, unix.EBUSY) {
			err = unix.ENOTCONN // dead, and held by a stale loop: detach it below
		}
		if errors.Is(err, unix.ENOTCONN) || ctx.Err() != nil {
			// A dead or stuck daemon: detach the mount so it cannot linger.
			if derr := unix.Unmount(dir, unix.MNT_DETACH); derr != nil {
				return fmt.Errorf("unmount %s: %w", dir, derr)
			}
			continue
		}
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	// rbd-fuse exits once unmounted; wait for it (bounded), then make sure.
	if !waitExit(ctx, daemons) {
		f.killFuse(dir)
	}
	return nil
}

// waitExit waits until every process in pids has exited, or ctx ends; it reports whether they
// all did. It sleeps in poll(2) on a pidfd per process (readable once the process exits) instead
// of rescanning /proc: a scan reads every process's command line, and repeated scans were 5% of
// the plugin's CPU in a create-mount-unmount-remove cycle.
func waitExit(ctx context.Context, pids []int) bool {
	for _, pid := range pids {
		fd, err := unix.PidfdOpen(pid, 0)
		if errors.Is(err, unix.ESRCH) {
			continue // gone already
		}
		if err != nil {
			return false // cannot tell (a kernel without pidfds): the caller makes sure
		}
		exited := false
		for !exited && ctx.Err() == nil {
			timeout := 100 // ms; short, so that ctx is looked at again soon
			if dl, ok := ctx.Deadline(); ok {
				timeout = max(1, min(timeout, int(time.Until(dl).Milliseconds())))
			}
			n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, timeout)
			exited = err == nil && n > 0
		}
		unix.Close(fd)
		if !exited {
			return false
		}
	}
	return true
}

// fuseDead reports whether the FUSE mount at dir has lost its daemon.
func fuseDead(dir string) bool {
	var st unix.Statfs_t
	return errors.Is(unix.Statfs(dir, &st), unix.ENOTCONN)
}

// killFuse kills any rbd-fuse process still serving dir.
func (f *Fuse) killFuse(dir string) {
	for _, pid := range f.daemonPids(dir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// Daemons returns the pids of the rbd-fuse processes serving root or a mount point under it:
// for tools and tests that count or kill them (the mapper itself stops its own with Unmap).
func Daemons(root string) []int {
	root = filepath.Clean(root)
	var pids []int
	for _, p := range fuseProcsIn("/proc", root, 0) {
		if p.dir == root || strings.HasPrefix(p.dir, root+"/") {
			pids = append(pids, p.pid)
		}
	}
	return pids
}

type fuseProc struct {
	pid int
	dir string // its mount point: the last argument that is not an option
}

// fuseProcsIn lists the rbd-fuse processes under procRoot with a pid above after whose mount
// point starts with prefix.
func fuseProcsIn(procRoot, prefix string, after int) []fuseProc {
	entries, _ := os.ReadDir(procRoot)
	var out []fuseProc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= after {
			continue
		}
		if p, ok := readFuseProc(procRoot, pid); ok && strings.HasPrefix(p.dir, prefix) {
			out = append(out, p)
		}
	}
	return out
}

// readFuseProc reads process pid's command line: whether it is an rbd-fuse, and its mount point.
func readFuseProc(procRoot string, pid int) (fuseProc, bool) {
	raw, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "cmdline"))
	if err != nil || len(raw) == 0 {
		return fuseProc{}, false
	}
	args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	if !strings.HasSuffix(args[0], "rbd-fuse") {
		return fuseProc{}, false
	}
	// The mount point is the last absolute path (after "-c <conf>").
	dir := ""
	for _, a := range args[1:] {
		if strings.HasPrefix(a, "/") {
			dir = a
		}
	}
	return fuseProc{pid: pid, dir: dir}, dir != ""
}

// Leftovers describes what this mapper has on the host under Root besides complete mappings:
// rbd-fuse mounts without a loop device and rbd-fuse processes without a mount. Everything
// listed is released by Unmap of the image it belongs to.
func (f *Fuse) Leftovers(ctx context.Context) ([]string, error) {
	maps, stale, err := f.fullScan(ctx, nil)
	if err != nil {
		return nil, err
	}
	mapped := map[string]bool{}
	for _, m := range maps {
		mapped[f.mountDir(m.ImageSpec)] = true
	}
	var out []string
	for _, m := range stale {
		// (A loop whose dead mount was detached names its image only: it cannot be told apart
		// from another mapper's, so it is not listed here; Map and Unmap of the image release it.)
		if m.Spec.Pool != "" {
			out = append(out, fmt.Sprintf("stale %s of %s (its rbd-fuse is gone)", m.Device, m.Spec))
		}
	}
	root := filepath.Clean(f.Root) + "/"
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(filepath.Clean(f.Root)))
	if err != nil {
		return nil, err
	}
	for _, m := range mounts {
		if !mapped[m.Mountpoint] && strings.HasPrefix(m.Mountpoint, root) {
			out = append(out, "mount "+m.Mountpoint+" ("+m.FSType+")")
		}
	}
	for _, p := range fuseProcsIn(f.procDir(), root, 0) {
		if !mapped[p.dir] {
			out = append(out, fmt.Sprintf("rbd-fuse pid %d serving %s", p.pid, p.dir))
		}
	}
	return out, nil
}

// List returns the images mapped by this mapper: loop devices backed by the image file of a live
// rbd-fuse mount under Root. A loop whose rbd-fuse died (with the plugin's container, say) is
// stale: it is not listed, so that the image is mapped again; Unmap and Leftovers see it.
func (f *Fuse) List(ctx context.Context) ([]driver.Mapping, error) {
	live, _, err := f.fullScan(ctx, nil)
	return live, err
}

// staleLoop is a loop device whose rbd-fuse is gone.
type staleLoop struct {
	Device string
	Spec   driver.ImageSpec // Pool is empty when only the image name is known
}

// staleOf selects the stale loops of spec.
func (f *Fuse) staleOf(stale []staleLoop, spec driver.ImageSpec) []staleLoop {
	var out []staleLoop
	for _, s := range stale {
		if s.Spec == spec || (s.Spec.Pool == "" && s.Spec.Image == spec.Image) {
			out = append(out, s)
		}
	}
	return out
}
