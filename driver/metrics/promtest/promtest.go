// Package promtest runs a real Prometheus server (Debian's package) for tests that check what the
// plugin's metrics endpoint serves, as an operator's Prometheus would see it.
package promtest

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

// FreeLoopbackAddr returns 127.0.0.1:PORT with a port free at the time of the call.
func FreeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Server is a running Prometheus server.
type Server struct{ api string }

// Start starts Debian's Prometheus on loopback, scraping target (host:port, path /metrics) every
// second, and stops it when the test ends.
func Start(t *testing.T, target string) Server {
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
	listen := FreeLoopbackAddr(t)
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
	prom := Server{api: "http://" + listen}
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

// Query runs an instant query and returns its single value (ok false when there is none).
func (p Server) Query(ctx context.Context, q string) (float64, bool, error) {
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

// WaitFor waits (up to 30 s: a few scrapes) until q's value is want.
func (p Server) WaitFor(t *testing.T, q string, want float64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got float64
	var ok bool
	var err error
	for ctx.Err() == nil {
		if got, ok, err = p.Query(ctx, q); ok && got == want {
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("prometheus: %s = %v (found %v, %v), want %v", q, got, ok, err, want)
}
