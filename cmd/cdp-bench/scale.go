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
	costMountN           int    // Mount + Unmount cycles counted in getcost
	bigN                 int    // images in the pool for biglist
	hostsN               []int  // instance counts for hosts
	hostsWindow          time.Duration
	reconcileN           int // volumes mounted before the restart in reconcile
	reconcileSize        string
	cinderCostN          int // calls counted per scenario in cindercost
	cinderMany           int // volumes in the bench's project for cindermany
	cinderManyKeep       bool
}

func scaleFlags(o *scaleOptions) {
	flag.StringVar(&o.binBefore, "plugin-before", "", "earlier builds of the plugin (comma-separated), measured beside this one by getcost")
	flag.StringVar(&o.beforeRef, "before-ref", "", "the git revisions -plugin-before were built from, in its order (for the report)")
	flag.IntVar(&o.costN, "cost-n", 300, "calls counted per scenario in getcost")
	flag.IntVar(&o.costMountN, "cost-mount-n", 20, "Mount + Unmount cycles counted in getcost")
	o.hostsN = []int{1, 10, 50, 100}
	flag.Func("hosts-n", "instance counts for the hosts phase (default 1,10,50,100)", func(v string) error {
		var err error
		o.hostsN, err = parseInts(v)
		return err
	})
	flag.DurationVar(&o.hostsWindow, "hosts-window", 15*time.Second, "how long the hosts phase sends Gets at each N (Lists: a third of it)")
	flag.StringVar(&o.reconcileSize, "reconcile-size", "32M", "volume size in the reconcile phase (each formatted filesystem's inode tables take pool space)")
	flag.IntVar(&o.reconcileN, "reconcile-n", 300, "volumes mounted (rbd-fuse) before the restart in the reconcile phase (1000: about 50 min on the lab machine, more than make bench-scale is meant to take)")
	flag.IntVar(&o.cinderCostN, "cinder-cost-n", 50, "calls counted per scenario in cindercost")
	flag.IntVar(&o.cinderMany, "cinder-many", 2000, "volumes in the bench's own Cinder project for cindermany")
	flag.BoolVar(&o.cinderManyKeep, "cinder-many-keep", false, "keep cindermany's volumes for the next run (creating them takes minutes)")
	flag.IntVar(&o.bigN, "big-n", 100000, "images in the pool for biglist (directory entries written by the bench)")
}

// scaleResults are the scale phases' figures.
type scaleResults struct {
	cost        []costRow
	big         *bigListResult
	hosts       []*hostsRow
	rec         *footprint
	cinderCost  []cinderCostRow
	cinderMany  *cinderManyResult
	memAvailKiB int64 // MemAvailable before the reconcile phase
}

// scaleRes holds the figures of this run's scale phases (one bench per process).
var scaleRes scaleResults

var scalePhaseNames = []string{"getcost", "cindercost", "biglist", "hosts", "reconcile", "cindermany"}

func (b *bench) scalePhases() []struct {
	name string
	fn   func(context.Context) error
} {
	return []struct {
		name string
		fn   func(context.Context) error
	}{{"getcost", b.getCost}, {"cindercost", b.cinderCost}, {"biglist", b.bigList}, {"hosts", b.hosts}, {"reconcile", b.reconcile}, {"cindermany", b.cinderMany}}
}

// writeReport writes the report: the whole file when a standard phase ran, else only the scale
// section of the file there. Within the scale section each phase has a part of its own: a run
// replaces the parts of the phases it ran and keeps the others.
func (b *bench) writeReport() error {
	old, _ := os.ReadFile(b.o.out)
	section := b.scaleSection(string(old))
	var out string
	switch {
	case b.standardPhases():
		out = b.report()
		if section != "" {
			out += "\n" + section
		}
		out += keptAfter(string(old))
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

// partMarks are the markers around one phase's part of the scale section.
func partMarks(phase string) (begin, end string) {
	return "<!-- scale part " + phase + " -->", "<!-- scale part " + phase + " end -->"
}

// oldPart returns phase's part of doc, markers included ("" when it has none).
func oldPart(doc, phase string) string {
	begin, end := partMarks(phase)
	i := strings.Index(doc, begin)
	j := strings.Index(doc, end)
	if i < 0 || j < i {
		return ""
	}
	return doc[i:j+len(end)] + "\n\n"
}

// splice puts section in place of doc's scale section, or at its end.
// keptAfter is what follows the scale section in doc: sections no phase writes (the docker
// guests' figures from the lab tests), kept when the standard phases rewrite the report.
func keptAfter(doc string) string {
	j := strings.Index(doc, scaleEnd)
	if j < 0 {
		return ""
	}
	rest := strings.TrimSpace(doc[j+len(scaleEnd):])
	if rest == "" {
		return ""
	}
	return "\n" + rest + "\n"
}

func splice(doc, section string) string {
	i := strings.Index(doc, scaleBegin)
	j := strings.Index(doc, scaleEnd)
	if i < 0 || j < i {
		return strings.TrimRight(doc, "\n") + "\n\n" + section
	}
	rest := strings.TrimLeft(doc[j+len(scaleEnd):], "\n")
	return doc[:i] + section + rest
}

// scaleSection renders the scale section: this run's parts, and old's for the phases it did not
// run ("" when there are none).
func (b *bench) scaleSection(old string) string {
	r := scaleRes
	render := map[string]func(*strings.Builder){}
	if len(r.cost) > 0 {
		render["getcost"] = b.reportCost
	}
	if len(r.cinderCost) > 0 {
		render["cindercost"] = b.reportCinderCost
	}
	if r.cinderMany != nil {
		render["cindermany"] = b.reportCinderMany
	}
	if r.big != nil {
		render["biglist"] = b.reportBigList
	}
	if len(r.hosts) > 0 {
		render["hosts"] = b.reportHosts
	}
	if r.rec != nil {
		render["reconcile"] = b.reportReconcile
	}
	command := b.o.makeTarget
	if command == "make bench" && !b.standardPhases() {
		command = "make bench-scale"
	}
	var parts strings.Builder
	for _, phase := range scalePhaseNames {
		fn, ok := render[phase]
		if !ok {
			parts.WriteString(oldPart(old, phase))
			continue
		}
		begin, end := partMarks(phase)
		var w strings.Builder
		fn(&w)
		fmt.Fprintf(&parts, "%s\n%s", begin, w.String())
		fmt.Fprintf(&parts, "*Measured by `%s` (phase `%s`) on %s; load average %s at the start of the run and %s at the\n",
			command, phase, b.res.start.UTC().Format("2006-01-02 15:04 MST"), b.res.loadStart, loadavg())
		fmt.Fprintf(&parts, "end; other heavy processes at the start: %s.*\n%s\n\n", b.res.busyStart, end)
	}
	if parts.Len() == 0 {
		return ""
	}
	var w strings.Builder
	fmt.Fprintf(&w, "%s\n## Scale: the cost of a call, large pools, many hosts\n\n", scaleBegin)
	w.WriteString("Written by `make bench-scale` (`scripts/bench-scale.sh`: the scale phases of `cmd/cdp-bench`, after\n")
	w.WriteString("`make bench`'s build). Each part below comes from one run of its phase and says when; a run replaces the\n")
	w.WriteString("parts of the phases it ran. The machine's 2 cores are shared with other work during these runs: times\n")
	w.WriteString("are noisy, which is why the costs that matter are counted (OSD requests, HTTP requests, CPU time).\n\n")
	w.WriteString(parts.String())
	fmt.Fprintf(&w, "%s\n", scaleEnd)
	return w.String()
}

func (b *bench) reportCost(w *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("### Get, Mount and Unmount, counted\n\n")
	p("One plugin (`BACKEND=rbd`, `MAPPER=fuse`) per build, driven over its socket; each scenario is warmed with\n")
	p("3 calls, then %d calls are counted (Mount and Unmount: %d cycles of a formatted volume, each call counted\n", b.o.scale.costN, b.o.scale.costMountN)
	p("on its own; the rbd-fuse daemon a Mount starts is another client, not counted). **OSD requests** are the plugin's own Ceph client's: the `op`,\n")
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
	p("What a Get reads now (`rbd.Cluster.Describe`): the image's id from `rbd_id.<name>` (one read), then one\n")
	p("compound read of `rbd_header.<id>` that asks the OSD's rbd class for the size, features, object prefix,\n")
	p("data pool, striping, parent and parent overlap and the metadata, the lock class for the host locks, and\n")
	p("lists the header's watchers: one state of the header, exact, and no image open (librbd's open, before,\n")
	p("read the header in a dozen requests and copied the client's configuration). A name with no image costs\n")
	p("the `rbd_id` read and one read of the plugin's index of volumes in other pools. A clone's parent adds two\n")
	p("reads the first time it is seen (its image and snapshot names; remembered after).\n\n")
	p("What a first Mount asks of Ceph now: Attach's describe (the id and the header, 2), the host lock and a\n")
	p("second id read that makes sure the name still leads to the locked header (2), a stat of the data object at\n")
	p("the image's end (`EndsUnwritten`, 1), and the record of this host's clients (`RecordClients`: the id, the\n")
	p("header's watchers in one compound read, and the omap write, 3). The watchers were listed through an image\n")
	p("open before (about 14 requests); librbd lists the same watches of the header object, read here directly.\n")
	p("An Unmount of the last user: the host locks (id + read), the holder record (id + read + removal) and the\n")
	p("lock's release (id + break). The rbd-fuse daemon a Mount starts opens the image itself (its own client,\n")
	p("not counted here); krbd does the same in the kernel.\n\n")
	var before, after []costRow
	for _, c := range scaleRes.cost {
		if strings.HasPrefix(c.build, "before") {
			before = append(before, c)
		} else {
			after = append(after, c)
		}
	}
	for _, a := range after {
		for _, bf := range before {
			if bf.call == a.call && a.per.ops > 0 {
				p("- %s, %s → this tree: %.1f → %.1f OSD requests (%.1f× fewer), %.2f → %.2f ms of plugin CPU.\n", a.call,
					strings.TrimPrefix(bf.build, "before "), bf.per.ops, a.per.ops, bf.per.ops/a.per.ops, bf.per.cpuMS, a.per.cpuMS)
			}
		}
	}
	if len(before) > 0 {
		p("\n")
	}
}

func (b *bench) reportBigList(w *strings.Builder) {
	r := scaleRes.big
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("### List of a very large pool\n\n")
	p("A pool of its own (`%s`) whose `rbd_directory` holds %d images. **The images are not real**: the\n", bigPool, r.images)
	p("bench writes the directory's entries itself (`name_<image>` and `id_<id>`, as `rbd create` writes them;\n")
	p("%s for all of them), because List reads only the directory (`rbd.listDirectory`: the `name_` keys,\n", ms(r.fill))
	p("page by page; the OSD answers at most `osd_max_omap_entries_per_request`, 1,024, per request) and creating\n")
	p("%d real images takes hours on this machine. The plugin runs as\n", r.images)
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
	b.o.footprintN, b.o.footprintCount, b.o.footprintSize = b.o.scale.reconcileN, true, b.o.scale.reconcileSize
	defer func() { b.o.footprintN, b.o.footprintCount, b.o.footprintSize, b.res.fp = saved, false, "", savedFP }()
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
	p("The footprint phase of section 4 with %d volumes (%s each): a fresh plugin (`MAPPER=fuse`) creates and\n", fp.volumes, b.o.scale.reconcileSize)
	p("mounts them with %d parallel clients, is stopped with SIGTERM (mounts and rbd-fuse mappings stay) and\n", b.o.footprintWorkers)
	p("started again; the reconcile time is the plugin's own log line.\n\n")
	p("| measure | value |\n|---|---|\n")
	each := func(kib int64) string { return mib(kib / int64(max(fp.fuseCount, 1))) }
	switch {
	case fp.memFloorHit:
		p("| volumes mounted before the restart | %d of the %d asked for: mounting stopped when the machine's available memory fell under %d MiB |\n",
			fp.volumes, b.o.scale.reconcileN, b.o.footprintMemFloorMiB)
	case fp.diskFloorHit:
		p("| volumes mounted before the restart | %d of the %d asked for: mounting stopped when the pool's free space fell under %d MiB |\n",
			fp.volumes, b.o.scale.reconcileN, b.o.footprintDiskFloorMiB)
	default:
		p("| volumes mounted before the restart | %d |\n", fp.volumes)
	}
	p("| rbd-fuse daemons serving them: memory together (each) | %d: PSS %s (%s), RSS %s (%s) |\n",
		fp.fuseCount, mib(fp.fusePSS), each(fp.fusePSS), mib(fp.fuseRSS), each(fp.fuseRSS))
	p("| MemAvailable before creating them minus after mounting them (the whole machine) | %s (%s per volume) |\n",
		mib(fp.memAvailDrop), mib(fp.memAvailDrop/int64(max(fp.volumes, 1))))
	p("| time to create + mount them all | %s |\n", fp.mountTime.Round(time.Millisecond))
	p("| plugin RSS with them mounted / after the restart | %s / %s |\n", mib(fp.fullRSS), mib(fp.afterRSS))
	p("| start to first answered request (no volumes / with them to reconcile) | %s / %s |\n", ms(fp.firstAnswerIdle), ms(fp.firstAnswer))
	done := "not seen in the plugin's log within 5 minutes"
	if fp.reconcileSeen {
		done = fp.reconcile.Round(time.Millisecond).String()
	}
	p("| reconcile of all of them, to done (plugin log) | %s |\n", done)
	p("| create + first Mount of another volume sent right after the first answer | %s |\n", ms(fp.firstMountAfterRestart))
	if fp.counted {
		p("| OSD requests the restarted plugin sent, start to reconcile done (one more volume's create, Mount, Unmount, remove included) | %.0f (%.1f per volume; reads %.0f, writes %.0f) |\n",
			fp.reconcileOps.ops, fp.reconcileOps.ops/float64(max(fp.volumes, 1)), fp.reconcileOps.reads, fp.reconcileOps.writes)
		p("| most OSD requests it sent in any one second, start to reconcile done (sampled every 100 ms; the Mount above included) | %.0f |\n", fp.reconcilePeakOp)
	}
	p("| rbd-fuse daemons alive before the restart / after the reconcile | %d / %d |\n", fp.fuseBefore, fp.fuseAfter)
	p("| volumes the reconcile could not repair | %d |\n\n", fp.repairErrors)
	if fp.fuseCount > 0 && scaleRes.memAvailKiB > 0 {
		per := fp.fusePSS / int64(fp.fuseCount)
		p("**How many fit here.** With `MAPPER=fuse` every mapped volume is an rbd-fuse daemon (one Ceph client per\n")
		p("image, so that fencing one volume's holder fences nothing else). Its RSS counts the Ceph libraries\n")
		p("every daemon maps, once per daemon; its PSS shares them out, and is what the daemons take together:\n")
		p("%s each here, so the %s of memory available at the start of this phase (24 GiB in all, shared with\n", mib(per), mib(scaleRes.memAvailKiB))
		p("other work) holds about %d mapped volumes. The daemons run with the fuse mapper's Ceph client options\n", scaleRes.memAvailKiB/max(per, 1))
		p("(`fuse.ClientOptionsDefault`: an 8 MiB librbd cache, one messenger thread, two malloc arenas; see\n")
		p("\"rbd-fuse daemons\" below). With krbd (production hosts) a mapping is a kernel device and costs no\n")
		p("process. The reconcile confirms with Ceph, volume by volume and one at a time, that this host still\n")
		p("holds each one (an Attach: the id read and one header read); the OSD requests above are the whole\n")
		p("cost it put on Ceph, and the busiest second says how much of it came at once.\n\n")
	}
}
