package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The scale phases (issue 18): what one Get costs (counted), List of a very large pool, many
// plugin instances on one Ceph. They write their own section of the report, between scaleBegin
// and scaleEnd: a run of only these phases (make bench-scale) replaces that section and keeps the
// rest of the file; a full run keeps the section a scale run wrote.

const (
	scaleBegin = "<!-- scale section: written by cdp-bench's scale phases (make bench-scale); begin -->"
	scaleEnd   = "<!-- scale section: end -->"
)

// scaleOptions are the scale phases' flags.
type scaleOptions struct {
	binBefore, beforeRef string // an earlier build of the plugin, and what it was built from
	costN                int    // calls counted per scenario
	bigN                 int    // images in the pool for biglist
	hostsN               []int  // instance counts for hosts
	hostsWindow          time.Duration
	reconcileN           int // volumes mounted before the restart in reconcile
	cinderCostN          int // calls counted per scenario in cindercost
}

func scaleFlags(o *scaleOptions) {
	flag.StringVar(&o.binBefore, "plugin-before", "", "an earlier build of the plugin, measured beside this one by getcost")
	flag.StringVar(&o.beforeRef, "before-ref", "", "the git revision -plugin-before was built from (for the report)")
	flag.IntVar(&o.costN, "cost-n", 300, "calls counted per scenario in getcost")
	o.hostsN = []int{1, 10, 50, 100}
	flag.Func("hosts-n", "instance counts for the hosts phase (default 1,10,50,100)", func(v string) error {
		var err error
		o.hostsN, err = parseInts(v)
		return err
	})
	flag.DurationVar(&o.hostsWindow, "hosts-window", 15*time.Second, "how long the hosts phase sends Gets at each N (Lists: a third of it)")
	flag.IntVar(&o.reconcileN, "reconcile-n", 300, "volumes mounted (rbd-fuse) before the restart in the reconcile phase")
	flag.IntVar(&o.cinderCostN, "cinder-cost-n", 50, "calls counted per scenario in cindercost")
	flag.IntVar(&o.bigN, "big-n", 100000, "images in the pool for biglist (directory entries written by the bench)")
}

// scaleResults are the scale phases' figures.
type scaleResults struct {
	cost        []costRow
	big         *bigListResult
	hosts       []*hostsRow
	rec         *footprint
	cinderCost  []cinderCostRow
	memAvailKiB int64 // MemAvailable before the reconcile phase
}

// scaleRes holds the figures of this run's scale phases (one bench per process).
var scaleRes scaleResults

var scalePhaseNames = []string{"getcost", "cindercost", "biglist", "hosts", "reconcile"}

func (b *bench) scalePhases() []struct {
	name string
	fn   func(context.Context) error
} {
	return []struct {
		name string
		fn   func(context.Context) error
	}{{"getcost", b.getCost}, {"cindercost", b.cinderCost}, {"biglist", b.bigList}, {"hosts", b.hosts}, {"reconcile", b.reconcile}}
}

// writeReport writes the report: the whole file when a standard phase ran, else only the scale
// section of the file there.
func (b *bench) writeReport() error {
	old, _ := os.ReadFile(b.o.out)
	section := b.scaleSection()
	if section == "" {
		section = between(string(old))
	}
	var out string
	switch {
	case b.standardPhases():
		out = b.report()
		if section != "" {
			out += "\n" + section
		}
	case len(old) == 0:
		out = "# Benchmarks\n\n" + section
	default:
		out = splice(string(old), section)
	}
	return os.WriteFile(b.o.out, []byte(out), 0o644)
}

// standardPhases says whether this run has phases other than the scale ones.
func (b *bench) standardPhases() bool {
	return slices.ContainsFunc(b.o.phases, func(p string) bool { return !slices.Contains(scalePhaseNames, p) })
}

// between returns the scale section of a report, markers included ("" when it has none).
func between(doc string) string {
	i := strings.Index(doc, scaleBegin)
	j := strings.Index(doc, scaleEnd)
	if i < 0 || j < i {
		return ""
	}
	return doc[i:j+len(scaleEnd)] + "\n"
}

// splice puts section in place of doc's scale section, or at its end.
func splice(doc, section string) string {
	i := strings.Index(doc, scaleBegin)
	j := strings.Index(doc, scaleEnd)
	if i < 0 || j < i {
		return strings.TrimRight(doc, "\n") + "\n\n" + section
	}
	rest := strings.TrimLeft(doc[j+len(scaleEnd):], "\n")
	return doc[:i] + section + rest
}

// scaleSection renders the scale phases' figures ("" when none ran).
func (b *bench) scaleSection() string {
	r := scaleRes
	if len(r.cost) == 0 && r.big == nil && len(r.hosts) == 0 && r.rec == nil && len(r.cinderCost) == 0 {
		return ""
	}
	var w strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&w, format, args...) }
	p("%s\n", scaleBegin)
	p("## Scale: the cost of one call\n\n")
	command := b.o.makeTarget
	if command == "make bench" && !b.standardPhases() {
		command = "make bench-scale"
	}
	p("Written by `%s` on %s, load average %s at the start and %s at the end (the machine's 2 cores are\n",
		command, b.res.start.UTC().Format("2006-01-02 15:04 MST"), b.res.loadStart, loadavg())
	p("shared with other work: %s at the start).\n\n", b.res.busyStart)
	if len(r.cost) > 0 {
		b.reportCost(&w)
	}
	if len(r.cinderCost) > 0 {
		b.reportCinderCost(&w)
	}
	if r.big != nil {
		b.reportBigList(&w)
	}
	if len(r.hosts) > 0 {
		b.reportHosts(&w)
	}
	if r.rec != nil {
		b.reportReconcile(&w)
	}
	p("%s\n", scaleEnd)
	return w.String()
}

func (b *bench) reportCost(w *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("### Get, counted\n\n")
	p("One plugin (`BACKEND=rbd`, `MAPPER=fuse`) per build, driven over its socket; each scenario is warmed with\n")
	p("3 calls, then %d calls are counted. **OSD requests** are the plugin's own Ceph client's: the `op`,\n", b.o.scale.costN)
	p("`op_r` and `op_w` counters of the objecter section of its admin socket's `perf dump`, read before and\n")
	p("after (a compound request of several steps counts once; the other users of this Ceph do not move\n")
	p("these counters). **CPU** is the plugin process's utime + stime from `/proc/PID/stat` over the same\n")
	p("calls, divided by their number (10 ms ticks over hundreds of calls). Times are wall clock on the\n")
	p("shared machine, for orientation only.\n\n")
	p("| build | call | OSD requests per call (reads / writes) | plugin CPU per call | p50 / p99 |\n|---|---|---|---|---|\n")
	for _, c := range scaleRes.cost {
		p("| %s | %s | %.2f (%.2f / %.2f) | %.3f ms | %s |\n", c.build, c.call, c.per.ops, c.per.reads, c.per.writes, c.per.cpuMS, costTime(c))
	}
	p("\n")
}

func (b *bench) reportBigList(w *strings.Builder) {
	r := scaleRes.big
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("### List of a very large pool\n\n")
	p("A pool of its own (`%s`) whose `rbd_directory` holds %d images. **The images are not real**: the\n", bigPool, r.images)
	p("bench writes the directory's entries itself (`name_<image>` and `id_<id>`, as `rbd create` writes them;\n")
	p("%s for all of them), because List reads only the directory (`rbd.listDirectory`: the `name_` keys\n", ms(r.fill))
	p("in pages of 8,192) and creating %d real images takes hours on this machine. The plugin runs as\n", r.images)
	p("client.admin with `RBD_POOL=%s`; one List warms it, then 10 are timed and counted as in the Get table.\n\n", bigPool)
	p("| measure | value |\n|---|---|\n")
	p("| volumes List answered | %d |\n", r.answered)
	p("| List p50 / p95 / max (10 runs, over the plugin's socket, JSON included) | %s / %s / %s |\n", ms(r.list.p50()), ms(r.list.p95()), ms(r.list.pct(100)))
	p("| OSD requests per List (reads / writes) | %.1f (%.1f / %.1f) |\n", r.per.ops, r.per.reads, r.per.writes)
	p("| plugin CPU per List | %.0f ms |\n", r.per.cpuMS)
	p("| `rbd ls` of the same pool (librbd, pages of 1,024), p50 of 3 | %s |\n\n", ms(r.rawLS.p50()))
}

// reconcile is the footprint phase (mount many volumes with rbd-fuse, restart the plugin, time
// its first answer and its reconcile) with -reconcile-n volumes.
func (b *bench) reconcile(ctx context.Context) error {
	scaleRes.memAvailKiB = memAvailable()
	saved, savedFP := b.o.footprintN, b.res.fp
	b.o.footprintN = b.o.scale.reconcileN
	defer func() { b.o.footprintN, b.res.fp = saved, savedFP }()
	err := b.footprint(ctx)
	scaleRes.rec = b.res.fp
	return err
}

// memAvailable reads MemAvailable from /proc/meminfo, in KiB.
func memAvailable() int64 {
	raw, _ := os.ReadFile("/proc/meminfo")
	for _, l := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemAvailable:" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}

func (b *bench) reportReconcile(w *strings.Builder) {
	fp := scaleRes.rec
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("### Reconcile after a restart with many mounted volumes\n\n")
	p("The footprint phase of section 4 with %d volumes (%s each): a fresh plugin (`MAPPER=fuse`) creates and\n", fp.volumes, b.o.fpSize)
	p("mounts them with %d parallel clients, is stopped with SIGTERM (mounts and rbd-fuse mappings stay) and\n", b.o.footprintWorkers)
	p("started again; the reconcile time is the plugin's own log line.\n\n")
	p("| measure | value |\n|---|---|\n")
	p("| volumes mounted before the restart | %d (rbd-fuse daemons: %d, together %s, %s each) |\n", fp.volumes, fp.fuseCount, mib(fp.fuseRSS), mib(fp.fuseRSS/int64(max(fp.fuseCount, 1))))
	p("| time to create + mount them all | %s |\n", fp.mountTime.Round(time.Millisecond))
	p("| plugin RSS with them mounted / after the restart | %s / %s |\n", mib(fp.fullRSS), mib(fp.afterRSS))
	p("| start to first answered request (no volumes / with them to reconcile) | %s / %s |\n", ms(fp.firstAnswerIdle), ms(fp.firstAnswer))
	p("| reconcile of all of them, to done (plugin log) | %s (seen: %s) |\n", fp.reconcile.Round(time.Millisecond), yes(fp.reconcileSeen))
	p("| create + first Mount of another volume sent right after the first answer | %s |\n", ms(fp.firstMountAfterRestart))
	p("| rbd-fuse daemons alive before the restart / after the reconcile | %d / %d |\n", fp.fuseBefore, fp.fuseAfter)
	p("| volumes the reconcile could not repair | %d |\n\n", fp.repairErrors)
	if fp.fuseCount > 0 && scaleRes.memAvailKiB > 0 {
		each := fp.fuseRSS / int64(fp.fuseCount)
		p("**How many fit here.** With `MAPPER=fuse` every mapped volume is an rbd-fuse daemon of about %s, so\n", mib(each))
		p("the machine's %s of available memory at the start of this phase (24 GiB in all, shared with other\n", mib(scaleRes.memAvailKiB))
		p("work) holds about %d mapped volumes; 1,000 would need about %s for the daemons alone, more than this\n", scaleRes.memAvailKiB/each, mib(1000*each))
		p("machine has, so this run mounts %d. With krbd (production hosts) a mapping is a kernel device and costs\n", fp.volumes)
		p("no process. The reconcile confirms with Ceph, volume by volume, that this host still holds each one\n")
		p("(an Attach, whose describe is now the id read and one header read instead of an image open).\n\n")
	}
}
