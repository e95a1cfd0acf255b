package fuse

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// record is what this mapper knows of one image's mapping: the loop devices backed by its file
// and the pid of its rbd-fuse daemon (0: not known). Map and Unmap verify only these entries, so
// their cost does not grow with the number of mappings on the host; a record that is missing or
// no longer true falls back to a scan of every loop device (or every process).
type record struct {
	loops []int
	pid   int
}

// procDir is the root of procfs (the ProcRoot seam, "/proc" by default).
func (f *Fuse) procDir() string {
	if f.ProcRoot != "" {
		return f.ProcRoot
	}
	return "/proc"
}

// remember replaces the records with what a full scan found (every loop of this mapper, live or
// stale, and every rbd-fuse under Root): from then on an image without a record is not mapped.
func (f *Fuse) remember(live []driver.Mapping, stale []staleLoop, procs []fuseProc) {
	recs := map[string]*record{}
	get := func(dir string) *record {
		r := recs[dir]
		if r == nil {
			r = &record{}
			recs[dir] = r
		}
		return r
	}
	for _, m := range live {
		r := get(f.mountDir(m.ImageSpec))
		r.loops = append(r.loops, loopNumber(m.Device))
	}
	anon := map[string][]int{}
	for _, s := range stale {
		if s.Spec.Pool == "" {
			// A detached loop names its image only: every image of that name looks at it.
			anon[s.Spec.Image] = append(anon[s.Spec.Image], loopNumber(s.Device))
			continue
		}
		r := get(f.mountDir(s.Spec))
		r.loops = append(r.loops, loopNumber(s.Device))
	}
	for _, p := range procs {
		get(p.dir).pid = p.pid
	}
	f.recsMu.Lock()
	defer f.recsMu.Unlock()
	f.recs = recs
	f.scanned, f.anon = true, anon
}

// setRecord records (or, with nil, forgets) the mapping at dir.
func (f *Fuse) setRecord(dir string, r *record) {
	f.recsMu.Lock()
	defer f.recsMu.Unlock()
	if f.recs == nil {
		f.recs = map[string]*record{}
	}
	if r == nil {
		delete(f.recs, dir)
		return
	}
	f.recs[dir] = r
}

// recordOf returns the record of dir and whether an image without one is known not to be mapped
// (a full scan ran in this process).
func (f *Fuse) recordOf(dir string) (r record, ok, complete bool) {
	f.recsMu.Lock()
	defer f.recsMu.Unlock()
	if p := f.recs[dir]; p != nil {
		return record{loops: slices.Clone(p.loops), pid: p.pid}, true, f.scanned
	}
	return record{}, false, f.scanned
}

// anonOf returns the detached stale loops the last full scan found with the image's name.
func (f *Fuse) anonOf(image string) []int {
	f.recsMu.Lock()
	defer f.recsMu.Unlock()
	return slices.Clone(f.anon[image])
}

// lookup finds the image's loops, live and stale, like fullScan(ctx, &spec), but from its record:
// each recorded loop device is verified (its sysfs backing file names this image's file), and
// only a record that is missing or wrong costs a scan of every loop device.
func (f *Fuse) lookup(ctx context.Context, spec driver.ImageSpec) (live []driver.Mapping, stale []staleLoop, err error) {
	dir := f.mountDir(spec)
	rec, ok, complete := f.recordOf(dir)
	anon := f.anonOf(spec.Image)
	if !ok && complete {
		// Not mapped, unless something else mapped it since the scan: a live mapping needs the
		// mount, which costs one look.
		if mounted, _ := mountinfo.Mounted(dir); !mounted {
			ok = true // only the detached loops of its name, if any, to look at
		}
	}
	if !complete || !ok {
		// Before the first full scan (the start-up List fills every record), or mounted and
		// unknown (mapped by someone else since): look at every loop device, asking only about
		// this image's. Never a full scan here: a Map must not wait for every daemon's answer.
		return f.fullScan(ctx, &spec)
	}
	var loops []loopDev
	for _, n := range rec.loops {
		l, err := readLoop(f.SysfsRoot, n)
		if err != nil || (l.Backing != f.imageFile(spec) && l.Backing != "/"+spec.Image) {
			return f.fullScan(ctx, &spec) // detached or reused since: the record is stale
		}
		loops = append(loops, l)
	}
	for _, n := range anon {
		if l, err := readLoop(f.SysfsRoot, n); err == nil && l.Backing == "/"+spec.Image && !slices.Contains(rec.loops, n) {
			loops = append(loops, l) // (one detached or reused since is not this image's any more)
		}
	}
	if len(loops) == 0 {
		return nil, nil, nil
	}
	return f.classify(ctx, loops, &spec, f.viewOf(dir))
}

// fullScan scans every loop device (asking only about only's, if set) and records what it
// found: without only, every record.
func (f *Fuse) fullScan(ctx context.Context, only *driver.ImageSpec) ([]driver.Mapping, []staleLoop, error) {
	if only == nil {
		procs := fuseProcsIn(f.procDir(), filepath.Clean(f.Root)+"/", 0)
		live, stale, err := f.scan(ctx, nil, f.viewAll(procs))
		if err != nil {
			return nil, nil, err
		}
		f.remember(live, stale, procs)
		return live, stale, nil
	}
	dir := f.mountDir(*only)
	live, stale, err := f.scan(ctx, only, f.viewOf(dir))
	if err != nil {
		return nil, nil, err
	}
	var loops []int
	for _, m := range live {
		loops = append(loops, loopNumber(m.Device))
	}
	for _, s := range stale {
		if s.Spec == *only {
			loops = append(loops, loopNumber(s.Device))
		}
	}
	rec, _, _ := f.recordOf(dir)
	rec.loops = loops
	f.setRecord(dir, &rec)
	return live, stale, nil
}

// daemonPids returns the pids of the rbd-fuse processes serving dir: the recorded one if its
// command line still says so, otherwise what a scan of every process finds.
func (f *Fuse) daemonPids(dir string) []int {
	if rec, ok, _ := f.recordOf(dir); ok && rec.pid > 0 && procServes(f.procDir(), rec.pid, dir) {
		return []int{rec.pid}
	}
	var pids []int
	for _, p := range fuseProcsIn(f.procDir(), dir, 0) {
		if p.dir == dir {
			pids = append(pids, p.pid)
		}
	}
	return pids
}

// newDaemonPid finds the rbd-fuse serving dir among the processes started after lastPid (the
// kernel's last allocated pid before rbd-fuse was started): pids are allocated in increasing
// order, so only the few processes started since are read. 0 if none is found (pids wrapped).
func (f *Fuse) newDaemonPid(dir string, lastPid int) int {
	for _, p := range fuseProcsIn(f.procDir(), dir, lastPid) {
		if p.dir == dir {
			return p.pid
		}
	}
	return 0
}

// lastPid reads the last pid the kernel allocated in this pid namespace (0 if unknown).
func (f *Fuse) lastPid() int {
	b, err := os.ReadFile(filepath.Join(f.procDir(), "sys", "kernel", "ns_last_pid"))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// procServes reports whether process pid is an rbd-fuse serving dir.
func procServes(procRoot string, pid int, dir string) bool {
	p, ok := readFuseProc(procRoot, pid)
	return ok && p.dir == dir
}

// readLoop reads one loop device's backing file from sysfs.
func readLoop(sysfsRoot string, n int) (loopDev, error) {
	b, err := os.ReadFile(filepath.Join(sysfsRoot, "block", "loop"+strconv.Itoa(n), "loop", "backing_file"))
	if err != nil {
		return loopDev{}, err
	}
	return loopDev{N: n, Backing: strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")}, nil
}

// loopNumber is N of a /dev/.../loopN path (-1 if it is not one).
func loopNumber(dev string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(dev), "loop"))
	if err != nil {
		return -1
	}
	return n
}
