package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The HTTP cost of a Cinder-mode call. The plugin is pointed at a counting proxy in front of
// Keystone (OS_AUTH_URL); that proxy rewrites the block-storage endpoints of the service catalog
// in Keystone's token responses to a second counting proxy in front of Cinder, so every request
// the plugin sends to either service passes through the bench and is counted and timed.

// countingProxy forwards to target and counts and times the requests it forwards.
type countingProxy struct {
	target  *url.URL
	ln      net.Listener
	srv     *http.Server
	rewrite func(body []byte, self string) []byte // of every response body, given the proxy's URL (nil: none)

	mu    sync.Mutex
	count int
	lat   sample
	paths map[string]int // by method and path shape
}

func newCountingProxy(target string, rewrite func(body []byte, self string) []byte) (*countingProxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	cp := &countingProxy{target: u, ln: ln, rewrite: rewrite, paths: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(r *http.Response) error {
		if cp.rewrite == nil {
			return nil
		}
		b, err := io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil {
			return err
		}
		b = cp.rewrite(b, "http://"+ln.Addr().String())
		r.Body = io.NopCloser(bytes.NewReader(b))
		r.ContentLength = int64(len(b))
		r.Header.Set("Content-Length", strconv.Itoa(len(b)))
		return nil
	}
	cp.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rp.ServeHTTP(w, r)
		cp.mu.Lock()
		cp.count++
		cp.lat = append(cp.lat, time.Since(start))
		cp.paths[r.Method+" "+pathShape(r.URL.Path)+queryKeys(r.URL.Query())]++
		cp.mu.Unlock()
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = cp.srv.Serve(ln) }()
	return cp, nil
}

func (cp *countingProxy) url() string { return "http://" + cp.ln.Addr().String() }

func (cp *countingProxy) close() { _ = cp.srv.Close() }

// take returns what was counted since the last take, and starts again.
func (cp *countingProxy) take() (int, sample, map[string]int) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	n, lat, paths := cp.count, cp.lat, cp.paths
	cp.count, cp.lat, cp.paths = 0, nil, map[string]int{}
	return n, lat, paths
}

// pathShape replaces ids in a path with {id}: /v3/<project>/volumes/<uuid> -> /v3/{id}/volumes/{id}.
func pathShape(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		if len(s) >= 20 && strings.IndexFunc(s, func(r rune) bool { return !strings.ContainsRune("0123456789abcdef-", r) }) < 0 {
			parts[i] = "{id}"
		}
	}
	return strings.Join(parts, "/")
}

// queryKeys names a query's keys (not its values): "?limit&name".
func queryKeys(q url.Values) string {
	if len(q) == 0 {
		return ""
	}
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return "?" + strings.Join(keys, "&")
}

// countingProxies starts the counting proxies in front of Cinder and Keystone and returns them,
// with the path of OS_AUTH_URL (the plugin's OS_AUTH_URL is ks.url() + that path).
func countingProxies(ctx context.Context) (cinderProxy, ksProxy *countingProxy, authPath string, err error) {
	c, err := cinderClient(ctx)
	if err != nil {
		return nil, nil, "", err
	}
	cu, err := url.Parse(c.Endpoint)
	if err != nil {
		return nil, nil, "", err
	}
	cinderOrigin := cu.Scheme + "://" + cu.Host
	// Cinder's own answers name it too (pagination links): those are rewritten to its proxy.
	cinderProxy, err = newCountingProxy(cinderOrigin, func(body []byte, self string) []byte {
		return bytes.ReplaceAll(body, []byte(cinderOrigin), []byte(self))
	})
	if err != nil {
		return nil, nil, "", err
	}
	ks, err := url.Parse(os.Getenv("OS_AUTH_URL"))
	if err != nil {
		cinderProxy.close()
		return nil, nil, "", err
	}
	ksProxy, err = newCountingProxy(ks.Scheme+"://"+ks.Host, func(body []byte, _ string) []byte {
		return bytes.ReplaceAll(body, []byte(cinderOrigin), []byte(cinderProxy.url()))
	})
	if err != nil {
		cinderProxy.close()
		return nil, nil, "", err
	}
	return cinderProxy, ksProxy, ks.Path, nil
}

// cinderCostRow is the HTTP cost of one kind of Cinder-mode call.
type cinderCostRow struct {
	call                   string
	calls                  int
	keystone, cinder       float64 // requests per call
	keystoneLat, cinderLat sample
	lat                    sample // the call, over the plugin's socket
	paths                  map[string]int
}

func (b *bench) cinderCost(ctx context.Context) error {
	cinderProxy, ksProxy, authPath, err := countingProxies(ctx)
	if err != nil {
		return err
	}
	defer cinderProxy.close()
	defer ksProxy.close()
	p := newPlugin(b.o.bin, b.o.work, "bench-cindercost", "BACKEND=cinder", "CEPH_CONF="+b.env.conf, "CEPH_USER="+b.env.user,
		"CEPH_KEYRING="+b.env.keyring, "OS_AUTH_URL="+ksProxy.url()+authPath)
	if _, err := p.start(b.o.bin); err != nil {
		return err
	}
	defer p.stop()
	name := b.prefix + "-cc"
	if err := p.create(name, map[string]string{"size": "1"}); err != nil {
		return err
	}
	defer func() { _ = p.remove(name) }()
	n := b.o.scale.cinderCostN
	measure := func(call string, fn func() error) error {
		for i := 0; i < 3; i++ {
			if err := fn(); err != nil {
				return err
			}
		}
		ksProxy.take()
		cinderProxy.take()
		row := cinderCostRow{call: call, calls: n, paths: map[string]int{}}
		for i := 0; i < n; i++ {
			if err := timed(&row.lat, fn); err != nil {
				return err
			}
		}
		kn, klat, kp := ksProxy.take()
		cn, clat, cpaths := cinderProxy.take()
		row.keystone, row.cinder = float64(kn)/float64(n), float64(cn)/float64(n)
		row.keystoneLat, row.cinderLat = klat, clat
		for k, v := range kp {
			row.paths["keystone "+k] = v
		}
		for k, v := range cpaths {
			row.paths["cinder "+k] = v
		}
		scaleRes.cinderCost = append(scaleRes.cinderCost, row)
		logf("cindercost: %s: %.2f Keystone and %.2f Cinder requests per call (Cinder p50 %s), call p50 %s", call, row.keystone, row.cinder, ms(clat.p50()), ms(row.lat.p50()))
		return nil
	}
	if err := measure("Get (volume not in use)", func() error { return p.get(name) }); err != nil {
		return err
	}
	missing := name + "-missing"
	if err := measure("Get (no such volume)", func() error {
		if err := p.get(missing); err == nil {
			return fmt.Errorf("get %s: found a volume that does not exist", missing)
		}
		return nil
	}); err != nil {
		return err
	}
	return measure("List", func() error { _, err := p.list(); return err })
}

func (b *bench) reportCinderCost(w *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("### Cinder mode: HTTP requests per call\n\n")
	p("`BACKEND=cinder`, the lab's Keystone + Cinder, project `%s`. The plugin's `OS_AUTH_URL` points at a\n", os.Getenv("OS_PROJECT_NAME"))
	p("counting proxy in front of Keystone, which rewrites the block-storage endpoints of the catalog in\n")
	p("Keystone's answers to a second counting proxy in front of Cinder: every request the plugin sends to either\n")
	p("passes through the bench, counted and timed there (time to the full answer, proxy included). Each call\n")
	p("is warmed with 3, then %d are counted.\n\n", b.o.scale.cinderCostN)
	p("| call | Keystone requests per call | Cinder requests per call | Cinder request p50 / p95 | call p50 / p95 | requests seen |\n|---|---|---|---|---|---|\n")
	for _, r := range scaleRes.cinderCost {
		var seen []string
		for k, v := range r.paths {
			seen = append(seen, fmt.Sprintf("`%s` ×%d", k, v))
		}
		sort.Strings(seen)
		p("| %s | %.2f | %.2f | %s / %s | %s / %s | %s |\n", r.call, r.keystone, r.cinder, ms(r.cinderLat.p50()), ms(r.cinderLat.p95()),
			ms(r.lat.p50()), ms(r.lat.p95()), strings.Join(seen, "; "))
	}
	p("\n")
}
