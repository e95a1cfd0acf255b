//go:build integration

package main

import (
	"testing"

	"github.com/cephdocker/ceph-docker-plugin/driver/metrics/promtest"
)

// A real Prometheus server (Debian's) scrapes the plugin's METRICS_ADDR while the test makes
// calls through the socket; the counters and gauges it stores are the calls that were made.
func TestMetricsScrapedByPrometheus(t *testing.T) {
	t.Parallel()
	l := labEnv(t)
	addr := promtest.FreeLoopbackAddr(t)
	p := newPlugin(t, l, "host-a", "METRICS_ADDR="+addr)
	p.start()
	prom := promtest.Start(t, addr)

	name := uniq("metrics")
	p.create(name, map[string]string{"size": "128M"})
	t.Cleanup(func() { _ = p.try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil) })
	for i := 0; i < 3; i++ {
		p.get(name)
	}
	p.fail("/VolumeDriver.Get", map[string]string{"Name": uniq("missing")})
	p.fail("/VolumeDriver.Create", map[string]any{"Name": uniq("bad"), "Opts": map[string]string{"colour": "red"}})
	p.mount(name, "c1")
	p.mount(name, "c1") // a nested use
	prom.WaitFor(t, `cdp_volumes_mounted{backend="rbd"}`, 1)
	prom.WaitFor(t, `cdp_volume_uses{backend="rbd"}`, 2)
	p.unmount(name, "c1")
	p.unmount(name, "c1")

	for q, want := range map[string]float64{
		`cdp_calls_total{op="create",outcome="ok"}`:                   1,
		`cdp_calls_total{op="create",outcome="invalid"}`:              1,
		`cdp_calls_total{op="get",outcome="ok"}`:                      3,
		`cdp_calls_total{op="get",outcome="not_found"}`:               1,
		`cdp_calls_total{op="mount",outcome="ok"}`:                    2,
		`cdp_calls_total{op="unmount",outcome="ok"}`:                  2,
		`cdp_call_duration_seconds_count{op="mount"}`:                 2,
		`cdp_volumes_mounted{backend="rbd"}`:                          0,
		`cdp_repairs_pending{backend="rbd"}`:                          0,
		`cdp_backend_reachable{backend="rbd"}`:                        1,
		`sum(cdp_calls_total{outcome=~"error|timeout"}) or vector(0)`: 0,
		`cdp_fenced_clients_total{backend="rbd"}`:                     0,
		`count(process_resident_memory_bytes{job="cdp"})`:             1,
		`cdp_call_duration_seconds_bucket{op="get",le="+Inf"}`:        4,
	} {
		prom.WaitFor(t, q, want)
	}
}
