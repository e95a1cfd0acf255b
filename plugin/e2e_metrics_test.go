//go:build e2e

package plugin

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver/metrics/promtest"
)

// A real Prometheus server scrapes the installed plugin's METRICS_ADDR (set by `make e2e`) while
// the real docker CLI creates a volume, runs a container on it and removes it: the counters it
// stores grow by the calls dockerd made for that.
func TestMetricsScrapedByPrometheus(t *testing.T) {
	addr := os.Getenv("CDP_METRICS_ADDR")
	if addr == "" {
		t.Fatal("CDP_METRICS_ADDR must name the plugin's METRICS_ADDR: run `make e2e`")
	}
	prom := promtest.Start(t, addr)
	prom.WaitFor(t, `up{job="cdp"}`, 1)

	backend := "rbd"
	if cinderMode() {
		backend = "cinder"
	}
	queries := []string{
		`cdp_calls_total{op="create",outcome="ok"}`, `cdp_calls_total{op="mount",outcome="ok"}`,
		`cdp_calls_total{op="unmount",outcome="ok"}`, `cdp_calls_total{op="remove",outcome="ok"}`,
		`cdp_volumes_mounted{backend="` + backend + `"}`,
	}
	base := map[string]float64{}
	for _, q := range queries {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		v, _, err := prom.Query(ctx, q) // absent: the plugin has not made that call yet (0)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		base[q] = v
	}

	name := uniq("metrics")
	record(name)
	must(t, "volume", "create", "--driver", pluginName(), "-o", "size=128M", name)
	t.Cleanup(func() { _, _ = docker(t, 2*time.Minute, "volume", "rm", "-f", name) })
	track(t, name)
	c := uniq("metrics-writer")
	must(t, "run", "-d", "--name", c, "--network", "none", "-v", name+":/data", "busybox", "sh", "-c", "echo hi > /data/f; sync; sleep 600")
	t.Cleanup(func() { _, _ = docker(t, time.Minute, "rm", "-f", c) })
	prom.WaitFor(t, queries[4], base[queries[4]]+1)
	must(t, "rm", "-f", c)
	must(t, "volume", "rm", name)

	prom.WaitFor(t, queries[0], base[queries[0]]+1) // one Create
	prom.WaitFor(t, queries[3], base[queries[3]]+1) // one Remove
	prom.WaitFor(t, queries[4], base[queries[4]])   // nothing mounted any more
	// dockerd mounts a volume once or twice for `docker run` (newer engines mount it first to copy
	// the image's files into it, then again to start), and unmounts it as often.
	mounts, unmounts := queries[1], queries[2]
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		m, _, merr := prom.Query(ctx, mounts)
		u, _, uerr := prom.Query(ctx, unmounts)
		cancel()
		dm, du := m-base[mounts], u-base[unmounts]
		if merr == nil && uerr == nil && dm >= 1 && dm <= 2 && dm == du {
			t.Logf("dockerd made %v Mount and %v Unmount calls for the container", dm, du)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Mounts %v and Unmounts %v since the start (%v, %v): want as many of each, 1 or 2", dm, du, merr, uerr)
		}
		time.Sleep(300 * time.Millisecond)
	}
	prom.WaitFor(t, `cdp_backend_reachable{backend="`+backend+`"}`, 1)
	prom.WaitFor(t, `cdp_repairs_pending{backend="`+backend+`"}`, 0)
}
