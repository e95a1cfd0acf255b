package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cephdocker/ceph-docker-plugin/plugin/plugintest"
	"github.com/cephdocker/ceph-docker-plugin/rbd"
	"github.com/cephdocker/ceph-docker-plugin/rbd/fuse"
)

// listPool is a pool of the bench's own for the List phase, so that its thousand images never
// show in the lab's `volumes` pool that other tests list.
const listPool = "cdp-bench"

type bench struct {
	o      options
	env    labEnv
	res    *results
	admin  *rbd.Cluster
	raw    *raw
	main   *plugin
	prefix string // bench-<run id>
	down   sync.Once
}

type latRow struct {
	call, rawWhat string
	plugin, raw   sample
	noRatio       bool
}

type concRow struct {
	clients, cycles int
	wall            time.Duration
	perCycle        sample
	cpu             float64 // share of the machine's CPU time busy during the level (0..1)
	// Where the CPU time went, in CPU-ms over the level: the plugin process itself, the children it
	// waited for (mkfs, rbd-fuse until it daemonizes), and the Ceph daemons (OSD, monitor, manager).
	// The rest is rbd-fuse daemons, the kernel (loop, FUSE, ext4) and the bench's own client.
	pluginMS, childrenMS, cephMS float64
	settle                       time.Duration // waited for the machine to go quiet before the level
	settled                      bool          // false: it was still busy when the wait ended
}

type fioRow struct {
	test        string
	unit        string
	plugin, raw []float64
}

type footprint struct {
	volumes                int
	idleRSS, idleHWM       int64
	fullRSS, fullHWM       int64
	fuseCount              int
	fuseRSS                int64
	fusePSS                int64 // proportional set size: shared library pages divided among their users
	memAvailDrop           int64 // MemAvailable before creating the volumes minus after mounting them, KiB
	loops                  int
	mountTime              time.Duration
	firstAnswerIdle        time.Duration
	firstAnswer            time.Duration
	reconcile              time.Duration
	reconcileSeen          bool
	firstMountAfterRestart time.Duration
	afterRSS               int64
	fuseBefore, fuseAfter  int // rbd-fuse daemons alive just before the restart and after the reconcile
	repairErrors           int // volumes the reconcile could not repair (from the plugin's log)
	// With counting (the reconcile phase): the OSD requests the restarted plugin sent from its
	// start to the end of its reconcile, and the most it sent in any one second.
	counted         bool
	memFloorHit     bool // mounting stopped early: the machine's available memory fell under the floor
	diskFloorHit    bool // mounting stopped early: the pool's free space fell under the floor
	reconcileOps    clientCounter
	reconcilePeakOp float64
}

type phaseTime struct {
	name string
	d    time.Duration
}

type results struct {
	opts                 options
	machine              [][2]string
	start, end           time.Time
	loadStart, loadEnd   string
	busyStart, busyEnd   string
	lat                  []latRow
	list                 *latRow
	listCount            int
	conc                 []concRow
	fio                  []fioRow
	fp                   *footprint
	cinder               []latRow
	cinderAttach         sample
	probe                sample         // blkid -p of a mapped device, by hand
	crashes              map[string]int // Ceph clients (by process name) whose log shows a fatal signal
	failures             []string
	phaseTimes           []phaseTime
	mainIdleRSS, mainHWM int64
	cleanup              []string
}

func (b *bench) setup(ctx context.Context) error {
	b.prefix = plugintest.Uniq("bench")
	var err error
	b.admin, err = rbd.Connect(ctx, rbd.Config{ConfPath: b.env.conf, User: "admin", Keyring: b.env.adminKeyring, OpTimeout: 30 * time.Second})
	if err != nil {
		return fmt.Errorf("connect as client.admin: %w", err)
	}
	b.cleanHost()
	b.cleanImages(ctx)
	if err := os.RemoveAll(b.o.work); err != nil {
		return err
	}
	if err := b.clientLogs(); err != nil {
		return err
	}
	b.raw = &raw{conf: b.env.conf, user: b.env.user, keyring: b.env.keyring,
		root: filepath.Join(b.o.work, "raw", "fuse"), mnt: filepath.Join(b.o.work, "raw", "mnt")}
	b.main = newPlugin(b.o.bin, b.o.work, "bench-main", "BACKEND=rbd", "CEPH_CONF="+b.env.conf, "CEPH_USER="+b.env.user,
		"CEPH_KEYRING="+b.env.keyring, "RBD_POOL="+b.env.pool)
	if _, err := b.main.start(b.o.bin); err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)
	b.res.mainIdleRSS, b.res.mainHWM = rssKiB(b.main.pid())
	return nil
}

func (b *bench) teardown() {
	b.down.Do(func() {
		if b.main != nil {
			b.main.stop()
		}
		b.cleanHost()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		b.cleanImages(ctx)
		b.cleanCinder(ctx)
		if b.admin != nil {
			b.admin.Close()
		}
	})
}

// cleanHost removes whatever the bench's plugins and raw steps left on the host under the work
// directory (after an interrupted run): rbd-fuse daemons, mounts, loop devices.
func (b *bench) cleanHost() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	root := filepath.Clean(b.o.work)
	for _, mp := range plugintest.CleanHost(ctx, root, fuseRootsUnder(root)...) {
		b.res.cleanup = append(b.res.cleanup, "unmounted "+mp)
	}
}

// fuseRootsUnder lists the directories that hold rbd-fuse mounts of the bench: each plugin's
// MOUNT_ROOT/.rbd-fuse and the raw steps' root.
func fuseRootsUnder(work string) []string {
	out := []string{filepath.Join(work, "raw", "fuse")}
	entries, _ := os.ReadDir(work)
	for _, e := range entries {
		if e.IsDir() && e.Name() != "raw" {
			out = append(out, filepath.Join(work, e.Name(), "mnt", ".rbd-fuse"))
		}
	}
	return out
}

// staleBenchImage is the age after which a bench-* image of another run counts as left over
// (by an interrupted run) and is removed: a concurrent run's images are younger, and removing
// them wiped that run's volumes.
const staleBenchImage = 6 * time.Hour

// cleanImages removes, in the lab pool and the bench's List pool, this run's images (named
// b.prefix-...) and bench-* images created more than staleBenchImage ago; other bench-* images
// belong to a run that may still be going and are left alone.
func (b *bench) cleanImages(ctx context.Context) {
	for _, pool := range []string{b.env.pool, listPool} {
		names, err := b.admin.List(ctx, pool, "")
		if err != nil {
			continue
		}
		var todo []string
		for _, n := range names {
			if strings.HasPrefix(n, b.prefix+"-") {
				todo = append(todo, n)
				continue
			}
			if !strings.HasPrefix(n, "bench-") {
				continue
			}
			created, err := b.admin.Created(ctx, rbd.Spec{Pool: pool, Image: n})
			if err == nil && time.Since(created) > staleBenchImage {
				todo = append(todo, n)
			}
		}
		if len(todo) == 0 {
			continue
		}
		errs := parallel(ctx, 16, len(todo), func(i int) error {
			return b.admin.Remove(ctx, rbd.Spec{Pool: pool, Image: todo[i]})
		})
		msg := fmt.Sprintf("removed %d bench images (this run's, or older than %v) from pool %s", len(todo)-len(errs), staleBenchImage, pool)
		if len(errs) > 0 {
			msg += fmt.Sprintf(" (%d could not be removed: %v)", len(errs), errs[0])
		}
		logf("%s", msg)
	}
}

// parallel runs fn(0..n-1) on workers goroutines and returns the errors.
func parallel(ctx context.Context, workers, n int, fn func(i int) error) []error {
	var mu sync.Mutex
	var errs []error
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return errs
}

func timed(s *sample, fn func() error) error {
	start := time.Now()
	err := fn()
	if err == nil {
		*s = append(*s, time.Since(start))
	}
	return err
}

// latency: each call of the protocol, N times, and beside it the same work by hand.
func (b *bench) latency(ctx context.Context) error {
	p := b.main
	var create, mount1, mount2, get, unmount2, unmount1, remove sample
	var rCreate, rMount, rWarm, rGet, rUnmount, rRemove, rProbe sample
	for i := 0; i < b.o.n; i++ {
		name := fmt.Sprintf("%s-lat-%02d", b.prefix, i)
		id1, id2 := fmt.Sprintf("c1-%d", i), fmt.Sprintf("c2-%d", i)
		steps := []func() error{
			func() error {
				return timed(&create, func() error { return p.create(name, map[string]string{"size": "1G"}) })
			},
			func() error {
				return timed(&mount1, func() error { _, err := p.mount(name, id1); return err })
			},
			func() error {
				return timed(&mount2, func() error { _, err := p.mount(name, id2); return err })
			},
			func() error { return timed(&get, func() error { return p.get(name) }) },
			func() error { return timed(&unmount2, func() error { return p.unmount(name, id2) }) },
			func() error { return timed(&unmount1, func() error { return p.unmount(name, id1) }) },
			func() error { return timed(&remove, func() error { return p.remove(name) }) },
		}
		for _, s := range steps {
			if err := s(); err != nil {
				return fmt.Errorf("run %d: %w", i, err)
			}
		}
		img := fmt.Sprintf("%s-rawlat-%02d", b.prefix, i)
		spec := b.env.pool + "/" + img
		var m *rawMap
		rsteps := []func() error{
			func() error {
				return timed(&rCreate, func() error { _, err := b.raw.rbd(ctx, "create", "--size", "1G", spec); return err })
			},
			func() error {
				return timed(&rMount, func() error {
					var err error
					if m, err = b.raw.mapImage(ctx, b.env.pool, img); err != nil {
						return err
					}
					return b.raw.mkfsMount(ctx, m)
				})
			},
			func() error {
				// Not part of the raw first Mount: what the plugin's blank-device probe costs.
				// (blkid exits 2 on a device without a filesystem; it has one by now, so this
				// times the probe of a formatted device.)
				return timed(&rProbe, func() error { _, err := b.raw.run(ctx, "blkid", "-p", "-o", "export", m.dev); return err })
			},
			func() error {
				return timed(&rWarm, func() error { _, err := b.raw.run(ctx, "mountpoint", "-q", m.target); return err })
			},
			func() error {
				return timed(&rGet, func() error { _, err := b.raw.rbd(ctx, "info", spec); return err })
			},
			func() error { return timed(&rUnmount, func() error { return b.raw.unmapImage(ctx, m) }) },
			func() error {
				return timed(&rRemove, func() error { _, err := b.raw.rbd(ctx, "rm", "--no-progress", spec); return err })
			},
		}
		for _, s := range rsteps {
			if err := s(); err != nil {
				return fmt.Errorf("raw run %d: %w", i, err)
			}
		}
		if i%10 == 9 {
			logf("latency: %d/%d runs", i+1, b.o.n)
		}
	}
	b.res.lat = []latRow{
		{call: "Create (1 GiB)", rawWhat: "`rbd create --size 1G`", plugin: create, raw: rCreate},
		{call: "first Mount (lock + map + mkfs + mount)", rawWhat: "`rbd-fuse` + `losetup --find --show` + `mkfs.ext4` + `mount`", plugin: mount1, raw: rMount},
		{call: "warm Mount (another ID)", rawWhat: "`mountpoint -q` (nothing to do by hand)", plugin: mount2, raw: rWarm, noRatio: true},
		{call: "Get (while mounted)", rawWhat: "`rbd info`", plugin: get, raw: rGet},
		{call: "Unmount (not the last ID)", rawWhat: "(nothing to do by hand)", plugin: unmount2},
		{call: "Unmount (last: umount + unmap + unlock)", rawWhat: "`umount` + `losetup -d` + `umount` rbd-fuse (wait for it to exit)", plugin: unmount1, raw: rUnmount},
		{call: "Remove", rawWhat: "`rbd rm`", plugin: remove, raw: rRemove},
	}
	b.res.probe = rProbe
	return nil
}

// list: List with many volumes in the pool, against `rbd ls`.
func (b *bench) list(ctx context.Context) error {
	adm := &raw{conf: b.env.conf, user: "admin", keyring: b.env.adminKeyring}
	if _, err := adm.run(ctx, "ceph", "-c", b.env.conf, "--id", "admin", "--keyring", b.env.adminKeyring,
		"osd", "pool", "ls"); err != nil {
		return err
	}
	pools, _ := adm.run(ctx, "ceph", "-c", b.env.conf, "--id", "admin", "--keyring", b.env.adminKeyring, "osd", "pool", "ls")
	if !strings.Contains("\n"+pools+"\n", "\n"+listPool+"\n") {
		logf("creating pool %s", listPool)
		if _, err := adm.run(ctx, "ceph", "-c", b.env.conf, "--id", "admin", "--keyring", b.env.adminKeyring,
			"osd", "pool", "create", listPool, "8", "8"); err != nil {
			return err
		}
		if _, err := adm.rbd(ctx, "pool", "init", listPool); err != nil {
			return err
		}
	}
	start := time.Now()
	errs := parallel(ctx, 16, b.o.listN, func(i int) error {
		return b.admin.Create(ctx, rbd.Spec{Pool: listPool, Image: fmt.Sprintf("%s-list-%04d", b.prefix, i)},
			rbd.CreateOptions{Size: 1 << 30, Features: []string{"layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten"}})
	})
	if len(errs) > 0 {
		return fmt.Errorf("creating %d images: %d failed: %w", b.o.listN, len(errs), errs[0])
	}
	logf("list: created %d images in %s", b.o.listN, time.Since(start).Round(time.Millisecond))
	defer func() {
		start := time.Now()
		errs := parallel(context.Background(), 16, b.o.listN, func(i int) error {
			return b.admin.Remove(context.Background(), rbd.Spec{Pool: listPool, Image: fmt.Sprintf("%s-list-%04d", b.prefix, i)})
		})
		logf("list: removed the images in %s (%d errors)", time.Since(start).Round(time.Millisecond), len(errs))
	}()
	p := newPlugin(b.o.bin, b.o.work, "bench-list", "BACKEND=rbd", "CEPH_CONF="+b.env.conf, "CEPH_USER=admin",
		"CEPH_KEYRING="+b.env.adminKeyring, "RBD_POOL="+listPool)
	if _, err := p.start(b.o.bin); err != nil {
		return err
	}
	defer p.stop()
	var pl, rl sample
	for i := 0; i < b.o.n; i++ {
		var n int
		if err := timed(&pl, func() error { var err error; n, err = p.list(); return err }); err != nil {
			return err
		}
		if n < b.o.listN {
			return fmt.Errorf("List answered %d volumes, want >= %d", n, b.o.listN)
		}
		b.res.listCount = n
		var out string
		if err := timed(&rl, func() error { var err error; out, err = adm.rbd(ctx, "ls", listPool); return err }); err != nil {
			return err
		}
		if c := strings.Count(out, "\n") + 1; c < b.o.listN {
			return fmt.Errorf("rbd ls printed %d names, want >= %d", c, b.o.listN)
		}
	}
	b.res.list = &latRow{call: fmt.Sprintf("List (%d volumes in the pool)", b.res.listCount), rawWhat: "`rbd ls`", plugin: pl, raw: rl}
	return nil
}

// concurrency: clients each running create -> mount -> write -> unmount -> remove on its own volume.
func (b *bench) concurrency(ctx context.Context) error {
	data := make([]byte, b.o.writeMiB<<20)
	_, _ = rand.Read(data)
	for _, lvl := range b.o.levels {
		clients, cycles := lvl[0], lvl[1]
		var mu sync.Mutex
		var durs sample
		// The phases before leave work behind (the OSD compacting after the List phase's thousand
		// images, rbd-fuse daemons exiting): a level that starts on a busy machine measures it too.
		settle, settled := waitQuiet(ctx, 0.25, 60*time.Second)
		cpu0 := readCPU()
		pself0, pchild0 := procCPU(b.main.pid())
		ceph0 := cephDaemonsCPU()
		start := time.Now()
		errs := parallel(ctx, clients, clients, func(c int) error {
			for k := 0; k < cycles; k++ {
				name := fmt.Sprintf("%s-c%d-%02d-%d", b.prefix, clients, c, k)
				t := time.Now()
				if err := b.cycle(name, data); err != nil {
					return err
				}
				mu.Lock()
				durs = append(durs, time.Since(t))
				mu.Unlock()
			}
			return nil
		})
		wall := time.Since(start)
		busy := readCPU().busySince(cpu0)
		pself1, pchild1 := procCPU(b.main.pid())
		ceph1 := cephDaemonsCPU()
		if len(errs) > 0 {
			return fmt.Errorf("%d clients: %d failed: %w", clients, len(errs), errs[0])
		}
		b.res.conc = append(b.res.conc, concRow{clients: clients, cycles: clients * cycles, wall: wall, perCycle: durs, cpu: busy,
			pluginMS: pself1 - pself0, childrenMS: pchild1 - pchild0, cephMS: ceph1 - ceph0, settle: settle, settled: settled})
		logf("concurrency: %d clients, %d cycles in %s", clients, clients*cycles, wall.Round(time.Millisecond))
	}
	return nil
}

func (b *bench) cycle(name string, data []byte) error {
	p := b.main
	if err := p.create(name, map[string]string{"size": b.o.concSize}); err != nil {
		return err
	}
	mp, err := p.mount(name, "cyc-"+name)
	if err != nil {
		return err
	}
	if err := writeSync(filepath.Join(mp, "data"), data); err != nil {
		return err
	}
	if err := p.unmount(name, "cyc-"+name); err != nil {
		return err
	}
	return p.remove(name)
}

func writeSync(path string, data []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// footprint: RSS idle and with many volumes mounted; restart with them to reconcile.
func (b *bench) footprint(ctx context.Context) error {
	fp := &footprint{volumes: b.o.footprintN, counted: b.o.footprintCount}
	b.res.fp = fp
	conf := b.env.conf
	if fp.counted {
		var err error
		if conf, err = countingConf(b.env.conf, b.o.work); err != nil {
			return err
		}
	}
	p := newPlugin(b.o.bin, b.o.work, "bench-fp", "BACKEND=rbd", "CEPH_CONF="+conf, "CEPH_USER="+b.env.user,
		"CEPH_KEYRING="+b.env.keyring, "RBD_POOL="+b.env.pool)
	var err error
	if fp.firstAnswerIdle, err = p.start(b.o.bin); err != nil {
		return err
	}
	defer p.stop()
	time.Sleep(time.Second)
	fp.idleRSS, fp.idleHWM = rssKiB(p.pid())
	name := func(i int) string { return fmt.Sprintf("%s-fp-%03d", b.prefix, i) }
	var madeMu sync.Mutex
	made := make([]bool, b.o.footprintN) // created (perhaps mounted): what the teardown removes
	defer func() {
		// Unmount and remove them all, whatever happened.
		start := time.Now()
		errs := parallel(context.Background(), b.o.footprintWorkers, b.o.footprintN, func(i int) error {
			madeMu.Lock()
			m := made[i]
			madeMu.Unlock()
			if !m {
				return nil
			}
			if err := p.unmount(name(i), "fp"); err != nil {
				_ = p.remove(name(i))
				return err
			}
			return p.remove(name(i))
		})
		logf("footprint: unmounted and removed %d volumes in %s (%d errors)", fp.volumes, time.Since(start).Round(time.Millisecond), len(errs))
		if len(errs) > 0 {
			logf("footprint: first error: %v", errs[0])
		}
	}()
	memBefore := memAvailable()
	size := b.o.fpSize
	if b.o.footprintSize != "" {
		size = b.o.footprintSize
	}
	// Stop creating volumes when the machine's available memory falls under the floor: the
	// phase then measures the largest number that fits, and leaves room for the rest.
	mctx, stopMounting := context.WithCancel(ctx)
	defer stopMounting()
	var mounted atomic.Int64
	var floorHit atomic.Bool
	start := time.Now()
	var diskHit atomic.Bool
	errs := parallel(mctx, b.o.footprintWorkers, b.o.footprintN, func(i int) error {
		if memAvailable() < b.o.footprintMemFloorMiB*1024 {
			floorHit.Store(true)
			stopMounting()
			return nil
		}
		// And when the pool's free space falls under its floor (every volume's filesystem
		// writes its inode tables: on this lab's one 10 GiB OSD, shared with other work).
		if i%10 == 0 && b.admin != nil {
			if avail, err := b.admin.PoolAvail(mctx, b.env.pool); err == nil && avail < uint64(b.o.footprintDiskFloorMiB)<<20 {
				diskHit.Store(true)
				stopMounting()
				return nil
			}
		}
		madeMu.Lock()
		made[i] = true
		madeMu.Unlock()
		if err := p.create(name(i), map[string]string{"size": size}); err != nil {
			return err
		}
		_, err := p.mount(name(i), "fp")
		if err == nil {
			mounted.Add(1)
		}
		return err
	})
	fp.mountTime = time.Since(start)
	fp.volumes, fp.memFloorHit, fp.diskFloorHit = int(mounted.Load()), floorHit.Load(), diskHit.Load()
	if len(errs) > 0 {
		return fmt.Errorf("mounting %d volumes: %d failed: %w", b.o.footprintN, len(errs), errs[0])
	}
	if fp.memFloorHit || fp.diskFloorHit {
		logf("footprint: stopped at %d of %d volumes: MemAvailable under %d MiB: %v; pool's free space under %d MiB: %v",
			fp.volumes, b.o.footprintN, b.o.footprintMemFloorMiB, fp.memFloorHit, b.o.footprintDiskFloorMiB, fp.diskFloorHit)
	}
	logf("footprint: %d volumes created and mounted in %s", fp.volumes, fp.mountTime.Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	fp.fullRSS, fp.fullHWM = rssKiB(p.pid())
	pids := fuse.Daemons(p.fuseRoot())
	fp.fuseCount = len(pids)
	for _, pid := range pids {
		r, _ := rssKiB(pid)
		fp.fuseRSS += r
		fp.fusePSS += pssKiB(pid)
	}
	fp.memAvailDrop = memBefore - memAvailable()
	fm, _ := fuse.New(p.fuseRoot(), "", "").List(ctx)
	fp.loops = len(fm)

	// Restart: SIGTERM (mounts and mappings stay, as in a plugin upgrade), start again, time the
	// first answer and the reconcile of every volume.
	fp.fuseBefore = len(fuse.Daemons(p.fuseRoot()))
	p.stop()
	before := len(p.reconciles())
	if fp.firstAnswer, err = p.start(b.o.bin); err != nil {
		return err
	}
	// The restarted plugin's OSD requests, sampled every 100 ms from its start until its
	// reconcile is done (the Mount below included): the busiest second shows whether the
	// reconcile bursts.
	var sock string
	if fp.counted {
		if sock, err = clientAsok(conf, p.pid()); err != nil {
			return err
		}
	}
	stopSampling := make(chan struct{})
	sampled := make(chan float64, 1)
	go func() {
		var window []clientCounter // the samples of the last second
		peak := 0.0
		defer func() { sampled <- peak }()
		for sock != "" {
			if c, err := readClientCounter(sock, p.pid()); err == nil {
				window = append(window, c)
				if len(window) > 11 {
					window = window[1:]
				}
				peak = max(peak, c.ops-window[0].ops)
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	// A Mount of a volume that is not being reconciled, right after the restart.
	extra := b.prefix + "-fp-extra"
	t := time.Now()
	if err := p.create(extra, map[string]string{"size": size}); err == nil {
		if _, err := p.mount(extra, "x"); err == nil {
			fp.firstMountAfterRestart = time.Since(t)
			_ = p.unmount(extra, "x")
		}
		_ = p.remove(extra)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		if r := p.reconciles(); len(r) > before {
			fp.reconcile, fp.reconcileSeen = r[before], true
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stopSampling)
	fp.reconcilePeakOp = <-sampled
	if sock != "" {
		// The counters start at zero with the process: the count covers the whole restart.
		if c, err := readClientCounter(sock, p.pid()); err == nil {
			fp.reconcileOps = c
		}
	}
	fp.afterRSS, _ = rssKiB(p.pid())
	fp.fuseAfter = len(fuse.Daemons(p.fuseRoot()))
	if logb, err := os.ReadFile(p.logPath()); err == nil {
		fp.repairErrors = strings.Count(string(logb), "reconcile: could not repair the volume")
	}
	logf("footprint: restart answered after %s, reconciled in %s", fp.firstAnswer.Round(time.Millisecond), fp.reconcile.Round(time.Millisecond))
	return nil
}

// datapath: fio on a file in a volume the plugin mounted, against fio on a raw mapped device.
func (b *bench) datapath(ctx context.Context) error {
	p := b.main
	name := b.prefix + "-fio"
	if err := p.create(name, map[string]string{"size": "2G"}); err != nil {
		return err
	}
	defer func() { _ = p.remove(name) }()
	mp, err := p.mount(name, "fio")
	if err != nil {
		return err
	}
	defer func() { _ = p.unmount(name, "fio") }()
	img := b.prefix + "-rawfio"
	if _, err := b.raw.rbd(ctx, "create", "--size", "2G", b.env.pool+"/"+img); err != nil {
		return err
	}
	defer func() { _, _ = b.raw.rbd(context.Background(), "rm", "--no-progress", b.env.pool+"/"+img) }()
	m, err := b.raw.mapImage(ctx, b.env.pool, img)
	if err != nil {
		return err
	}
	defer func() { _ = b.raw.unmapImage(context.Background(), m) }()

	tests := []struct{ name, rw, bs, ioSize, unit string }{
		{"sequential write, 1 MiB", "write", "1M", "", "MiB/s"},
		{"sequential read, 1 MiB", "read", "1M", "", "MiB/s"},
		{"random write, 4 KiB", "randwrite", "4k", b.o.fioRandIO, "IOPS"},
		{"random read, 4 KiB", "randread", "4k", b.o.fioRandIO, "IOPS"},
	}
	rows := make([]fioRow, len(tests))
	for i, t := range tests {
		rows[i] = fioRow{test: t.name, unit: t.unit}
	}
	file := filepath.Join(mp, "fio.dat")
	// Untimed warm-up: write the whole region once on both, so that the file's blocks are
	// allocated (a device has nothing to allocate) and every read hits written data.
	for _, path := range []string{file, m.dev} {
		if _, err := fio(ctx, path, b.o.fioSize, "write", "1M", "", "MiB/s"); err != nil {
			return fmt.Errorf("fio warm-up on %s: %w", path, err)
		}
	}
	for round := 0; round < b.o.fioRounds; round++ {
		for i, t := range tests {
			targets := []string{"plugin", "raw"}
			if round%2 == 1 {
				targets = []string{"raw", "plugin"}
			}
			for _, tg := range targets {
				path := file
				if tg == "raw" {
					path = m.dev
				}
				dropCaches()
				v, err := fio(ctx, path, b.o.fioSize, t.rw, t.bs, t.ioSize, t.unit)
				if err != nil {
					return fmt.Errorf("fio %s on %s: %w", t.rw, tg, err)
				}
				if tg == "raw" {
					rows[i].raw = append(rows[i].raw, v)
				} else {
					rows[i].plugin = append(rows[i].plugin, v)
				}
			}
		}
		logf("datapath: round %d/%d", round+1, b.o.fioRounds)
	}
	b.res.fio = rows
	return nil
}

// dropCaches writes dirty pages and drops the clean page cache, so that reads reach the device.
func dropCaches() {
	unix.Sync()
	_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0o200)
}

var errNoCinder = errors.New("OS_AUTH_URL is not set: load the lab's openstack env (make bench does)")

type cpuTimes struct{ busy, total int64 }

// readCPU reads the machine's CPU time from /proc/stat (all CPUs, in jiffies).
func readCPU() cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	var t cpuTimes
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		t.total += n
		if i != 3 && i != 4 { // idle, iowait
			t.busy += n
		}
	}
	return t
}

// busySince is the share of CPU time busy since c0, over all CPUs (0..1).
func (c cpuTimes) busySince(c0 cpuTimes) float64 {
	if c.total <= c0.total {
		return 0
	}
	return float64(c.busy-c0.busy) / float64(c.total-c0.total)
}

// waitQuiet waits until the machine's CPU is less than busy (0..1) busy over half a second, or
// max has passed; it returns how long it waited and whether the machine went quiet.
func waitQuiet(ctx context.Context, busy float64, max time.Duration) (time.Duration, bool) {
	start := time.Now()
	for time.Since(start) < max && ctx.Err() == nil {
		c0 := readCPU()
		time.Sleep(500 * time.Millisecond)
		if readCPU().busySince(c0) < busy {
			return time.Since(start), true
		}
	}
	return time.Since(start), false
}

// userHZ is the unit of the times in /proc/PID/stat (USER_HZ, 100 on Linux).
const userHZ = 100

// procCPU returns a process's CPU time in ms: its own (user + system, all threads) and that of
// the children it has waited for. Zero for a process that is gone.
func procCPU(pid int) (self, children float64) {
	if pid <= 0 {
		return 0, 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	// The command name (field 2) is in parentheses and may hold spaces: count fields after it.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 15 { // f[0] is field 3 (state); utime, stime, cutime, cstime are fields 14-17
		return 0, 0
	}
	n := func(i int) float64 { v, _ := strconv.ParseFloat(f[i-3], 64); return v * 1000 / userHZ }
	return n(14) + n(15), n(16) + n(17)
}

// cephDaemonsCPU is the CPU time in ms of the Ceph daemons running on this machine.
func cephDaemonsCPU() float64 {
	procs, _ := plugintest.Procs()
	var total float64
	for _, p := range procs {
		switch p.Comm {
		case "ceph-osd", "ceph-mon", "ceph-mgr":
			self, _ := procCPU(p.PID)
			total += self
		}
	}
	return total
}

// clientLogs points the Ceph clients of the run (the plugins, their rbd-fuse daemons, the raw
// tools) at a copy of the lab's ceph.conf that logs to files under the work directory instead of
// /dev/null, so that a client that crashes leaves its backtrace ("Caught signal") to count.
func (b *bench) clientLogs() error {
	raw, err := os.ReadFile(b.env.conf)
	if err != nil {
		return err
	}
	dir := filepath.Join(b.o.work, "client-logs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var out []string
	section := ""
	for _, l := range strings.Split(string(raw), "\n") {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "[") {
			section = t
		}
		if section == "[client]" && strings.HasPrefix(strings.ReplaceAll(t, "_", " "), "log file") {
			continue
		}
		out = append(out, l)
		if t == "[client]" {
			out = append(out, "log file = "+filepath.Join(dir, "$name.$pid.log"))
		}
	}
	conf := filepath.Join(b.o.work, "ceph.conf")
	if err := os.WriteFile(conf, []byte(strings.Join(out, "\n")), 0o644); err != nil {
		return err
	}
	b.env.conf = conf
	return nil
}

// clientCrashes counts the Ceph clients whose log shows a fatal signal, by process name.
func (b *bench) clientCrashes() map[string]int {
	out := map[string]int{}
	files, _ := filepath.Glob(filepath.Join(b.o.work, "client-logs", "*.log"))
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil || !strings.Contains(string(raw), "*** Caught signal") {
			continue
		}
		name := "a Ceph client"
		if i := strings.Index(string(raw), "process "); i >= 0 {
			name = strings.Fields(string(raw[i+len("process "):]))[0]
			name = strings.TrimSuffix(name, ",")
		}
		out[name]++
	}
	return out
}
