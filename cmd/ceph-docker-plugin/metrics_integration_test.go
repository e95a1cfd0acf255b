//go:build integration

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// A real Prometheus server (Debian's) scrapes the plugin's METRICS_ADDR while the test makes
// calls through the socket; the counters and gauges it stores are the calls that were made.
func TestMetricsScrapedByPrometheus(t *testing.T) {
	l := labEnv(t)
	addr := freeLoopbackAddr(t)
	p := newPlugin(t, l, "host-a", "METRICS_ADDR="+addr)
	p.start()
	prom := startPrometheus(t, addr)

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
	prom.waitFor(t, `cdp_volumes_mounted{backend="rbd"}`, 1)
	prom.waitFor(t, `cdp_volume_uses{backend="rbd"}`, 2)
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
		prom.waitFor(t, q, want)
	}
}

// freeLoopbackAddr returns 127.0.0.1:PORT with a port free at the time of the call.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type prometheus struct{ api string }

// startPrometheus starts Debian's Prometheus on loopback, scraping target every second, and
// stops it when the test ends.
func startPrometheus(t *testing.T, target string) prometheus {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is not installed: `make test` installs it (scripts/test-deps.sh)")
	}
	dir := t.TempDir()
	conf := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: cdp\n    static_configs:\n      - targets: [%q]\n", target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	listen := freeLoopbackAddr(t)
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+listen, "--log.level=warn")
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			raw, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", raw)
		}
	})
	prom := prometheus{api: "http://" + listen}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(prom.api + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return prom
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready on %s within 60s: %v", listen, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// query runs an instant query and returns its single value (ok false when there is none).
func (p prometheus) query(ctx context.Context, q string) (float64, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.api+"/api/v1/query?query="+url.QueryEscape(q), nil)
	if err != nil {
		return 0, false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string
		Error  string
		Data   struct {
			Result []struct {
				Value [2]any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, false, err
	}
	if r.Status != "success" {
		return 0, false, fmt.Errorf("query %s: %s", q, r.Error)
	}
	if len(r.Data.Result) != 1 {
		return 0, false, nil
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	return v, err == nil, err
}

// waitFor waits (up to 30 s: a few scrapes) until q's value is want.
func (p prometheus) waitFor(t *testing.T, q string, want float64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got float64
	var ok bool
	var err error
	for ctx.Err() == nil {
		if got, ok, err = p.query(ctx, q); ok && got == want {
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("prometheus: %s = %v (found %v, %v), want %v", q, got, ok, err, want)
}
