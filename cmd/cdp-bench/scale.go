package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
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
	flag.IntVar(&o.bigN, "big-n", 100000, "images in the pool for biglist (directory entries written by the bench)")
}

// scaleResults are the scale phases' figures.
type scaleResults struct {
	cost  []costRow
	big   *bigListResult
	hosts []*hostsRow
}

// scaleRes holds the figures of this run's scale phases (one bench per process).
var scaleRes scaleResults

var scalePhaseNames = []string{"getcost", "biglist", "hosts"}

func (b *bench) scalePhases() []struct {
	name string
	fn   func(context.Context) error
} {
	return []struct {
		name string
		fn   func(context.Context) error
	}{{"getcost", b.getCost}, {"biglist", b.bigList}, {"hosts", b.hosts}}
}

// writeReport writes the report: the whole file when a standard phase ran, else only the scale
// section of the file there.
func (b *bench) writeReport() error {
	old, _ := os.ReadFile(b.o.out)
	section := b.scaleSection()
	if section == "" {
		section = between(string(old))
	}
	standard := slices.ContainsFunc(b.o.phases, func(p string) bool { return !slices.Contains(scalePhaseNames, p) })
	var out string
	switch {
	case standard:
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
	if len(r.cost) == 0 && r.big == nil && len(r.hosts) == 0 {
		return ""
	}
	var w strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&w, format, args...) }
	p("%s\n", scaleBegin)
	p("## Scale: the cost of one call\n\n")
	p("Written by `%s` on %s, load average %s at the start and %s at the end (the machine's 2 cores are\n",
		b.o.makeTarget, b.res.start.UTC().Format("2006-01-02 15:04 MST"), b.res.loadStart, loadavg())
	p("shared with other work: %s at the start).\n\n", b.res.busyStart)
	if len(r.cost) > 0 {
		b.reportCost(&w)
	}
	if r.big != nil {
		b.reportBigList(&w)
	}
	if len(r.hosts) > 0 {
		b.reportHosts(&w)
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
