// Command cdp-bench measures the plugin binary, driven over its socket as dockerd drives it,
// side by side with the raw tools doing the same work by hand, and writes docs/BENCHMARKS.md
// from that one run: per-call latency, List with many volumes, concurrency, the data path (fio),
// footprint and restart, and Cinder mode. `make bench` runs it on the lab rig.
//
// Everything it creates is named bench-*; it removes it at the end (and leftovers of an
// interrupted run at the start).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/plugin/plugintest"
)

type options struct {
	bin, work, out        string
	phases                []string
	n                     int // per-call latency runs
	listN                 int
	levels                [][2]int // clients, cycles per client
	fioRandIO             string
	fioRounds             int
	fioSize               string
	footprintN            int
	footprintCount        bool // count the restarted plugin's OSD requests (reconcile phase)
	footprintMemFloorMiB  int64
	footprintDiskFloorMiB int64
	footprintSize         string // volume size for this footprint run, when not fpSize (reconcile phase)
	footprintWorkers      int
	cinderN               int
	concSize, fpSize      string
	writeMiB              int
	commit, makeTarget    string
	scale                 scaleOptions
}

func parseLevels(s string) ([][2]int, error) {
	var out [][2]int
	for _, part := range strings.Split(s, ",") {
		c, k, ok := strings.Cut(strings.TrimSpace(part), ":")
		ci, err1 := strconv.Atoi(c)
		ki, err2 := strconv.Atoi(k)
		if !ok || err1 != nil || err2 != nil || ci < 1 || ki < 1 {
			return nil, fmt.Errorf("bad -levels entry %q: want clients:cycles", part)
		}
		out = append(out, [2]int{ci, ki})
	}
	return out, nil
}

func main() {
	var o options
	var phases, levels string
	flag.StringVar(&o.bin, "plugin", "", "the plugin binary (go build -tags pacific ./cmd/ceph-docker-plugin)")
	flag.StringVar(&o.work, "work", "/var/lib/ceph-docker-plugin-lab/bench", "work directory (sockets, state, mounts); cleaned at start")
	flag.StringVar(&o.out, "out", "docs/BENCHMARKS.md", "report to write")
	flag.StringVar(&phases, "phases", "latency,list,concurrency,datapath,footprint,cinder,getcost", "phases to run (the scale phases: getcost)")
	flag.IntVar(&o.n, "n", 30, "runs per call in the latency phase")
	flag.IntVar(&o.listN, "list", 1000, "volumes in the pool for List")
	flag.StringVar(&levels, "levels", "1:10,8:4,32:2", "concurrency levels as clients:cycles-per-client")
	flag.StringVar(&o.fioRandIO, "fio-rand-io", "64M", "bytes each random fio job moves (one pass, no block twice)")
	flag.IntVar(&o.fioRounds, "fio-rounds", 5, "fio rounds (plugin and raw alternate)")
	flag.StringVar(&o.fioSize, "fio-size", "512M", "fio region size (sequential jobs pass over all of it)")
	flag.IntVar(&o.footprintN, "footprint", 200, "volumes mounted for the footprint phase")
	flag.IntVar(&o.footprintWorkers, "footprint-workers", 8, "parallel clients mounting them")
	flag.IntVar(&o.cinderN, "cinder-n", 15, "runs in the Cinder phase")
	flag.StringVar(&o.concSize, "conc-size", "1G", "volume size in the concurrency phase")
	flag.Int64Var(&o.footprintMemFloorMiB, "footprint-mem-floor", 3072, "stop mounting footprint volumes when MemAvailable falls under this many MiB")
	flag.Int64Var(&o.footprintDiskFloorMiB, "footprint-disk-floor", 2048, "stop mounting footprint volumes when the pool's free space falls under this many MiB")
	flag.StringVar(&o.fpSize, "footprint-size", "256M", "volume size in the footprint phase")
	flag.IntVar(&o.writeMiB, "write-mib", 4, "MiB each concurrency cycle writes (then fsync)")
	flag.StringVar(&o.makeTarget, "command", "make bench", "how this run was started (for the report)")
	scaleFlags(&o.scale)
	flag.Parse()
	o.phases = strings.Split(phases, ",")
	var err error
	if o.levels, err = parseLevels(levels); err != nil {
		fatal(err)
	}
	if o.bin == "" {
		fatal(fmt.Errorf("-plugin is required"))
	}
	if err := run(o); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "cdp-bench:", err)
	os.Exit(1)
}

var t0 = time.Now()

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[cdp-bench %6.1fs] %s\n", time.Since(t0).Seconds(), fmt.Sprintf(format, args...))
}

func run(o options) error {
	env, err := readEnv()
	if err != nil {
		return err
	}
	b := &bench{o: o, env: env, res: &results{}}
	b.res.start = time.Now()
	b.res.loadStart = loadavg()
	b.res.busyStart = busyProcs()
	b.res.machine = machineInfo(o.out)
	b.res.opts = o

	// SIGINT or SIGTERM stops the phases where they are; their teardowns (volumes, mounts,
	// rbd-fuse daemons, plugins) still run.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := b.setup(ctx); err != nil {
		return err
	}
	defer b.teardown()

	type phase struct {
		name string
		fn   func(context.Context) error
	}
	all := []phase{
		{"latency", b.latency}, {"list", b.list}, {"concurrency", b.concurrency},
		{"datapath", b.datapath}, {"footprint", b.footprint}, {"cinder", b.cinder},
	}
	for _, sp := range b.scalePhases() {
		all = append(all, phase{sp.name, sp.fn})
	}
	for _, p := range all {
		if !slices.Contains(o.phases, p.name) {
			continue
		}
		logf("phase %s", p.name)
		start := time.Now()
		if err := p.fn(ctx); err != nil {
			logf("phase %s FAILED: %v", p.name, err)
			b.res.failures = append(b.res.failures, fmt.Sprintf("%s: %v", p.name, err))
		}
		b.res.phaseTimes = append(b.res.phaseTimes, phaseTime{p.name, time.Since(start)})
		logf("phase %s done in %s", p.name, time.Since(start).Round(time.Second))
	}
	b.teardown()
	b.res.crashes = b.clientCrashes()
	b.res.end = time.Now()
	b.res.loadEnd = loadavg()
	b.res.busyEnd = busyProcs()
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return err
	}
	if err := b.writeReport(); err != nil {
		return err
	}
	logf("wrote %s (%s)", o.out, time.Since(t0).Round(time.Second))
	if len(b.res.failures) > 0 {
		return fmt.Errorf("%d phase(s) failed: %s", len(b.res.failures), strings.Join(b.res.failures, "; "))
	}
	return nil
}

// labEnv is the lab's coordinates, from the env files `make bench` loads.
type labEnv struct {
	conf, user, keyring, adminKeyring, pool string
	osAuthURL                               string
}

func readEnv() (labEnv, error) {
	c, err := plugintest.CephFromEnv()
	return labEnv{conf: c.Conf, user: c.User, keyring: c.Keyring, adminKeyring: c.AdminKeyring, pool: c.Pool,
		osAuthURL: os.Getenv("OS_AUTH_URL")}, err
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// busyProcs names the other heavy work on the machine (the shared rig runs QEMU guests and test
// suites): how many qemu-system and go test processes run.
func busyProcs() string {
	qemu, gotest := 0, 0
	procs, _ := plugintest.Procs()
	for _, p := range procs {
		args := p.Args
		switch {
		case len(args) == 0:
		case strings.Contains(args[0], "qemu-system"):
			qemu++
		case len(args) > 1 && strings.HasSuffix(args[0], "go") && args[1] == "test":
			gotest++
		}
	}
	return fmt.Sprintf("%d qemu-system, %d go test", qemu, gotest)
}
