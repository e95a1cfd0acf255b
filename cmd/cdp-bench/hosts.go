package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Many hosts on one cluster: N plugin instances, each with its own NODE_NAME, socket, state and
// mount root (and so its own host identity and Ceph client), started together on the lab Ceph and
// driven together. No fencing is involved (each instance mounts only its own volume), so they share
// this machine's network namespace.
//
// For each N: all instances start at once; each creates its volume; then for a fixed window
// every instance answers Gets (of any instance's volume, as dockerd asks about volumes that exist
// anywhere) as fast as one client per instance sends them; then a shorter window of Lists; then
// every instance mounts its volume (first Mount: lock, map with rbd-fuse, mkfs, mount) at once,
// and unmounts it at once. Each window counts the OSD requests of every instance's Ceph client
// (their admin sockets) and the instances' CPU (/proc), divided by the calls answered in it.

type hostsRow struct {
	n                  int
	startP50, startMax time.Duration // process start to first answer
	rssAvg, rssMax     int64         // KiB, after the Get window
	calls              map[string]*callStats
	busy               map[string]float64 // machine CPU busy share during the window (0..1)
	cephMS             map[string]float64 // Ceph daemons' CPU per call (all users of the lab Ceph)
	listVolumes        int
	errors             []string
	idle               clientCounter // per instance and second, with no calls
}

type callStats struct {
	lat   sample
	wall  time.Duration
	per   clientCounter // per call, summed over the instances
	count int
}

func (b *bench) hosts(ctx context.Context) error {
	for _, n := range b.o.scale.hostsN {
		logf("hosts: N=%d", n)
		row, err := b.hostsOnce(ctx, n)
		if row != nil {
			scaleRes.hosts = append(scaleRes.hosts, row)
		}
		if err != nil {
			return fmt.Errorf("N=%d: %w", n, err)
		}
	}
	return nil
}

func (b *bench) hostsOnce(ctx context.Context, n int) (*hostsRow, error) {
	conf, err := countingConf(b.env.conf, b.o.work)
	if err != nil {
		return nil, err
	}
	row := &hostsRow{n: n, calls: map[string]*callStats{}, busy: map[string]float64{}, cephMS: map[string]float64{}}
	ps := make([]*plugin, n)
	socks := make([]string, n)
	starts := make(sample, n)
	for i := range ps {
		ps[i] = newPlugin(b.o.bin, b.o.work, fmt.Sprintf("bench-host%03d", i), "BACKEND=rbd", "CEPH_CONF="+conf,
			"CEPH_USER="+b.env.user, "CEPH_KEYRING="+b.env.keyring, "RBD_POOL="+b.env.pool, "LOG_LEVEL=warning")
	}
	defer func() {
		var wg sync.WaitGroup
		for _, p := range ps {
			wg.Add(1)
			go func() { defer wg.Done(); p.stop() }()
		}
		wg.Wait()
	}()
	if errs := parallel(ctx, n, n, func(i int) error {
		d, err := ps[i].start(b.o.bin)
		starts[i] = d
		if err != nil {
			return err
		}
		socks[i], err = clientAsok(conf, ps[i].pid())
		return err
	}); len(errs) > 0 {
		return row, fmt.Errorf("starting %d instances: %d failed: %w", n, len(errs), errs[0])
	}
	row.startP50, row.startMax = starts.p50(), starts.pct(100)
	vol := func(i int) string { return fmt.Sprintf("%s-host%03d", b.prefix, i) }
	if errs := parallel(ctx, min(n, 16), n, func(i int) error {
		return ps[i].create(vol(i), map[string]string{"size": "256M"})
	}); len(errs) > 0 {
		return row, fmt.Errorf("creating volumes: %d failed: %w", len(errs), errs[0])
	}
	defer parallel(context.Background(), min(n, 16), n, func(i int) error {
		_ = ps[i].unmount(vol(i), "hosts") // after a failed window (an unknown ID unmounts fine)
		return ps[i].remove(vol(i))
	})

	snapshot := func() ([]clientCounter, error) {
		out := make([]clientCounter, n)
		for i, p := range ps {
			c, err := readClientCounter(socks[i], p.pid())
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	}
	// window runs fn(i) from one client per instance until d has passed (d == 0: once each) and
	// records its calls under name.
	window := func(name string, d time.Duration, fn func(i int) error) error {
		st := &callStats{}
		row.calls[name] = st
		var mu sync.Mutex
		c0, err := snapshot()
		if err != nil {
			return err
		}
		cpu0, ceph0 := readCPU(), cephDaemonsCPU()
		start := time.Now()
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					t := time.Now()
					err := fn(i)
					lat := time.Since(t)
					if err != nil {
						errs[i] = err
						return
					}
					mu.Lock()
					st.lat = append(st.lat, lat)
					mu.Unlock()
					if d == 0 || time.Since(start) >= d {
						return
					}
				}
			}()
		}
		wg.Wait()
		st.wall = time.Since(start)
		row.busy[name] = readCPU().busySince(cpu0)
		c1, err := snapshot()
		if err != nil {
			return err
		}
		st.count = len(st.lat)
		var sum clientCounter
		for i := range c1 {
			d := c1[i].sub(c0[i])
			sum = clientCounter{ops: sum.ops + d.ops, reads: sum.reads + d.reads, writes: sum.writes + d.writes, cpuMS: sum.cpuMS + d.cpuMS}
		}
		if st.count > 0 {
			k := float64(st.count)
			st.per = clientCounter{ops: sum.ops / k, reads: sum.reads / k, writes: sum.writes / k, cpuMS: sum.cpuMS / k}
			row.cephMS[name] = (cephDaemonsCPU() - ceph0) / k
		}
		for _, err := range errs {
			if err != nil {
				row.errors = append(row.errors, fmt.Sprintf("%s: %v", name, err))
				return err
			}
		}
		logf("hosts N=%d %s: %d calls in %s, %.1f/s, p50 %s p99 %s, %.2f OSD requests and %.2f ms CPU per call",
			n, name, st.count, st.wall.Round(time.Millisecond), float64(st.count)/st.wall.Seconds(), ms(st.lat.p50()), ms(st.lat.pct(99)), st.per.ops, st.per.cpuMS)
		return nil
	}
	getWindow := b.o.scale.hostsWindow
	// Idle: what the instances cost with no calls (their Ceph clients' own traffic, timers).
	i0, err := snapshot()
	if err != nil {
		return row, err
	}
	idleStart := time.Now()
	time.Sleep(getWindow / 3)
	i1, err := snapshot()
	if err != nil {
		return row, err
	}
	secs := time.Since(idleStart).Seconds() * float64(n)
	for i := range i1 {
		d := i1[i].sub(i0[i])
		row.idle = clientCounter{ops: row.idle.ops + d.ops/secs, reads: row.idle.reads + d.reads/secs,
			writes: row.idle.writes + d.writes/secs, cpuMS: row.idle.cpuMS + d.cpuMS/secs}
	}
	// Mounts and unmounts go at most 4 at a time over all instances: the instances share this
	// machine's loop devices, which N real hosts would not (the fuse mapper serialises its own
	// process's loop allocations, but 16 processes at once exhausted its retries at N=100).
	mountSlots := make(chan struct{}, 4)
	slot := func(fn func() error) error {
		mountSlots <- struct{}{}
		defer func() { <-mountSlots }()
		return fn()
	}
	if err := window("Get", getWindow, func(i int) error { return ps[i].get(vol(rand.IntN(n))) }); err != nil {
		return row, err
	}
	var rss []int64
	for _, p := range ps {
		r, _ := rssKiB(p.pid())
		rss = append(rss, r)
	}
	sort.Slice(rss, func(i, j int) bool { return rss[i] < rss[j] })
	var total int64
	for _, r := range rss {
		total += r
	}
	row.rssAvg, row.rssMax = total/int64(n), rss[len(rss)-1]
	var listed sync.Map
	if err := window("List", getWindow/3, func(i int) error {
		c, err := ps[i].list()
		listed.Store(i, c)
		return err
	}); err != nil {
		return row, err
	}
	if v, ok := listed.Load(0); ok {
		row.listVolumes = v.(int)
	}
	if err := window("Mount (first: lock, map, mkfs, mount)", 0, func(i int) error {
		return slot(func() error { _, err := ps[i].mount(vol(i), "hosts"); return err })
	}); err != nil {
		return row, err
	}
	if err := window("Unmount (last: umount, unmap, unlock)", 0, func(i int) error {
		return slot(func() error { return ps[i].unmount(vol(i), "hosts") })
	}); err != nil {
		return row, err
	}
	return row, nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < 1 {
			return nil, fmt.Errorf("bad number %q in %q", f, s)
		}
		out = append(out, v)
	}
	return out, nil
}

func (b *bench) reportHosts(w *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	rows := scaleRes.hosts
	p("### Many hosts on one cluster\n\n")
	p("N plugin instances on this machine, each with its own `NODE_NAME`, socket, `STATE_DIR`, `MOUNT_ROOT` and\n")
	p("Ceph client (as N hosts would have), started together on the lab Ceph, `BACKEND=rbd`, `MAPPER=fuse`. No\n")
	p("fencing is involved (each instance mounts only its own volume), so they share the machine's network\n")
	p("namespace. For each N: every instance creates its volume; for %s one client per instance sends Gets\n", b.o.scale.hostsWindow)
	p("(of any instance's volume) back to back; for a third of that, Lists (of the lab pool `%s`, which\n", b.env.pool)
	p("other work on this machine also uses); then every instance mounts its volume at once (first Mount:\n")
	p("host lock, rbd-fuse, mkfs, mount), then unmounts it at once. OSD requests and CPU are counted as in the\n")
	p("Get table (summed over the instances, divided by the calls answered); Ceph CPU is the OSD, monitor and\n")
	p("manager processes' over the window divided by the calls: it includes whatever else used the lab Ceph\n")
	p("then, so it is an upper bound. \"Busy\" is the machine's CPU busy share during the window (`/proc/stat`).\n\n")
	p("| N | start to first answer p50 / max | RSS per instance avg / max | Gets/s (ratio to N=1) | Get p50 / p99 | OSD req. per Get | plugin CPU per Get | Ceph CPU per Get | busy |\n")
	p("|---|---|---|---|---|---|---|---|---|\n")
	var base float64
	for _, r := range rows {
		g := r.calls["Get"]
		if g == nil || g.count == 0 {
			continue
		}
		rate := float64(g.count) / g.wall.Seconds()
		if r.n == 1 || base == 0 {
			base = rate
		}
		p("| %d | %s / %s | %s / %s | %.0f (%.2f) | %s / %s | %.2f | %.2f ms | %.2f ms | %.0f%% |\n", r.n, ms(r.startP50), ms(r.startMax),
			mib(r.rssAvg), mib(r.rssMax), rate, rate/base, ms(g.lat.p50()), ms(g.lat.pct(99)), g.per.ops, g.per.cpuMS, r.cephMS["Get"], 100*r.busy["Get"])
	}
	p("\nIdle (no calls, a third of the window), per instance: ")
	var idle []string
	for _, r := range rows {
		idle = append(idle, fmt.Sprintf("N=%d %.2f OSD requests/s and %.1f ms CPU/s", r.n, r.idle.ops, r.idle.cpuMS))
	}
	p("%s.", strings.Join(idle, "; "))
	if last := rows[len(rows)-1]; last.calls["Get"] != nil && last.calls["Get"].count > 0 {
		g := last.calls["Get"]
		share := last.idle.cpuMS * float64(last.n) * g.wall.Seconds() / float64(g.count)
		p(" Spread over the Gets of the window, that idle cost is %.2f ms of the %.2f ms of plugin CPU per Get at\n", share, g.per.cpuMS)
		p("N=%d: the rest of the growth with N is the Gets' own work done by many processes taking turns on two cores\n", last.n)
		p("(more context switches and colder caches per call; not broken down further here), not more work per Get:\n")
		p("the OSD requests per Get do not change.")
	}
	p("\n")
	p("Mounts and unmounts go at most 4 at a time over all the instances (they share this machine's loop devices,\n")
	p("which N real hosts would not).\n")
	p("\n| N | call | calls | per second | p50 / p99 | OSD requests per call (reads / writes) | plugin CPU per call | busy |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		for _, name := range []string{"List", "Mount (first: lock, map, mkfs, mount)", "Unmount (last: umount, unmap, unlock)"} {
			c := r.calls[name]
			if c == nil || c.count == 0 {
				continue
			}
			what := name
			if name == "List" {
				what = fmt.Sprintf("List (%d volumes)", r.listVolumes)
			}
			p("| %d | %s | %d | %.1f | %s / %s | %.1f (%.1f / %.1f) | %.1f ms | %.0f%% |\n", r.n, what, c.count, float64(c.count)/c.wall.Seconds(),
				ms(c.lat.p50()), ms(c.lat.pct(99)), c.per.ops, c.per.reads, c.per.writes, c.per.cpuMS, 100*r.busy[name])
		}
		for _, e := range r.errors {
			p("| %d | error | %s | | | | | |\n", r.n, strings.ReplaceAll(e, "|", "/"))
		}
	}
	p("\n")
	// What bounds it: the machine's CPU time per Get, against what the plugin and Ceph use.
	cores := float64(runtime.NumCPU())
	p("**What bounds it here.** Every instance, the OSD and the bench's clients share %.0f cores. Machine CPU per\n", cores)
	p("Get is the busy share × %.0f cores × the window ÷ the Gets answered:\n\n", cores)
	for _, r := range rows {
		g := r.calls["Get"]
		if g == nil || g.count == 0 {
			continue
		}
		machine := r.busy["Get"] * cores * float64(g.wall.Milliseconds()) / float64(g.count)
		p("- N=%d: %.2f ms of machine CPU per Get, of which the plugins %.2f ms and the Ceph daemons at most %.2f ms; the\n", r.n, machine, g.per.cpuMS, r.cephMS["Get"])
		p("  rest is the bench's own clients (JSON over HTTP on a unix socket, like dockerd) and the other work on the machine.\n")
	}
	first, last := rows[0], rows[len(rows)-1]
	fg, lg := first.calls["Get"], last.calls["Get"]
	if fg == nil || lg == nil || fg.count == 0 || lg.count == 0 {
		return
	}
	if first.busy["Get"] >= 0.85 {
		p("\nThe machine is %.0f%% busy already at N=%d, so the aggregate rate cannot grow with N: more instances split\n", 100*first.busy["Get"], first.n)
		p("the same cores, and each Get waits longer (p50 %s at N=%d, %s at N=%d).", ms(fg.lat.p50()), first.n, ms(lg.lat.p50()), last.n)
	} else {
		p("\nAt N=%d the machine is %.0f%% busy; at N=%d %.0f%%.", first.n, 100*first.busy["Get"], last.n, 100*last.busy["Get"])
	}
	p(" What a real cluster of N hosts pays per Get is\n")
	p("the counted cost, on each host: %.2f OSD requests and %.2f ms of plugin CPU at N=%d (%.2f and %.2f ms at N=%d), with the OSD\n",
		lg.per.ops, lg.per.cpuMS, last.n, fg.per.ops, fg.per.cpuMS, first.n)
	p("work spread over the cluster's OSDs instead of one. RSS per instance: %s at N=%d, %s at N=%d.\n\n", mib(first.rssAvg), first.n, mib(last.rssAvg), last.n)
}
