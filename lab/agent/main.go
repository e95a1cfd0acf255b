// Command lab-agent runs inside a krbd lab guest (QEMU, Debian's stock kernel) and lets the
// host-side lab tests drive it over HTTP on the guest's eth0 (forwarded by QEMU to 127.0.0.1 on
// the host): run commands, write files, start/kill the plugin binary and speak its socket, map
// images with the plugin's own krbd mapper, and run a background writer that keeps writing to a
// mounted volume independently of the plugin. Static (CGO_ENABLED=0): it needs nothing in the
// guest. Test rig only: it executes whatever it is sent, so it listens only inside the guest.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/internal/syncbuf"
	"github.com/cephdocker/ceph-docker-plugin/lab/labapi"
	"github.com/cephdocker/ceph-docker-plugin/rbd/krbd"
)

func main() {
	listen := flag.String("listen", ":8080", "address to serve on")
	flag.Parse()
	a := &agent{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("POST /exec", a.exec)
	mux.HandleFunc("POST /file", a.file)
	mux.HandleFunc("POST /plugin/start", a.pluginStart)
	mux.HandleFunc("POST /plugin/kill", a.pluginKill)
	mux.HandleFunc("GET /plugin/log", a.pluginLog)
	mux.HandleFunc("POST /plugin/call/{method}", a.pluginCall)
	mux.HandleFunc("POST /krbd/map", a.krbdMap)
	mux.HandleFunc("POST /krbd/unmap", a.krbdUnmap)
	mux.HandleFunc("GET /krbd/list", a.krbdList)
	mux.HandleFunc("POST /writer/start", a.writerStart)
	mux.HandleFunc("GET /writer/status", a.writerStatus)
	mux.HandleFunc("POST /writer/stop", a.writerStop)
	log.Printf("lab-agent listening on %s", *listen)
	log.Fatal(http.ListenAndServe(*listen, mux))
}

type agent struct {
	mu     sync.Mutex
	plugin *exec.Cmd
	done   chan struct{}
	sock   string
	logBuf *syncbuf.Buffer
	writer *writer
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, err error) {
	reply(w, http.StatusInternalServerError, labapi.Error{Err: err.Error()})
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		reply(w, http.StatusBadRequest, labapi.Error{Err: "bad request: " + err.Error()})
		return false
	}
	return true
}

func (a *agent) exec(w http.ResponseWriter, r *http.Request) {
	var req labapi.ExecRequest
	if !decode(w, r, &req) {
		return
	}
	if len(req.Argv) == 0 {
		reply(w, http.StatusBadRequest, labapi.Error{Err: "empty argv"})
		return
	}
	timeout := time.Duration(req.TimeoutMS) * time.Millisecond
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, req.Argv[0], req.Argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	cmd.Env = append(os.Environ(), req.Env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	res := labapi.ExecResult{Stdout: stdout.String(), Stderr: stderr.String(), MS: time.Since(start).Milliseconds()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		res.Code, res.Err = -1, "timed out after "+timeout.String()
	case errors.As(err, &ee):
		res.Code = ee.ExitCode()
	default:
		res.Code, res.Err = -1, err.Error()
	}
	reply(w, http.StatusOK, res)
}

func (a *agent) file(w http.ResponseWriter, r *http.Request) {
	var req labapi.FileRequest
	if !decode(w, r, &req) {
		return
	}
	mode := os.FileMode(req.Mode)
	if mode == 0 {
		mode = 0o600
	}
	// Create with the final mode: a secret never exists world-readable, even for a moment.
	f, err := os.OpenFile(req.Path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		fail(w, err)
		return
	}
	_, werr := f.Write(req.Data)
	if err := errors.Join(werr, f.Sync(), f.Close(), os.Chmod(req.Path, mode)); err != nil {
		fail(w, err)
		return
	}
	reply(w, http.StatusOK, labapi.Error{})
}

func (a *agent) pluginStart(w http.ResponseWriter, r *http.Request) {
	var req labapi.PluginStart
	if !decode(w, r, &req) {
		return
	}
	a.mu.Lock()
	if a.plugin != nil {
		a.mu.Unlock()
		fail(w, errors.New("the plugin runs already"))
		return
	}
	sock := "/run/docker/plugins/ceph.sock"
	for _, e := range req.Env {
		if v, ok := cutPrefix(e, "PLUGIN_SOCKET="); ok {
			sock = v
		}
	}
	if a.logBuf == nil {
		a.logBuf = &syncbuf.Buffer{}
	}
	fmt.Fprintf(a.logBuf, "----- plugin start %s\n", time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(req.Binary)
	// Only what the request gives, plus PATH: the guest's environment holds nothing else of use.
	cmd.Env = append([]string{"PATH=/sbin:/usr/sbin:/bin:/usr/bin"}, req.Env...)
	cmd.Stdout, cmd.Stderr = a.logBuf, a.logBuf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		a.mu.Unlock()
		fail(w, err)
		return
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	a.plugin, a.done, a.sock = cmd, done, sock
	a.mu.Unlock()

	// Ready when the socket answers (the plugin opens it first, before connecting to Ceph).
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("unix", sock, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-done:
			a.mu.Lock()
			a.plugin = nil
			a.mu.Unlock()
			fail(w, fmt.Errorf("the plugin exited at start: %s", tail(a.logBuf.String(), 2000)))
			return
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			fail(w, errors.New("the plugin did not open its socket within 30 s"))
			return
		}
	}
	reply(w, http.StatusOK, labapi.PluginInfo{PID: cmd.Process.Pid})
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return "", false
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// pluginKill kills the plugin (SIGKILL, or SIGTERM with "term") and waits for it to be gone.
func (a *agent) pluginKill(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	cmd, done := a.plugin, a.done
	a.plugin = nil
	a.mu.Unlock()
	if cmd == nil {
		reply(w, http.StatusOK, labapi.PluginInfo{})
		return
	}
	sig := syscall.SIGKILL
	if r.URL.Query().Get("signal") == "term" {
		sig = syscall.SIGTERM
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
	reply(w, http.StatusOK, labapi.PluginInfo{PID: cmd.Process.Pid})
}

func (a *agent) pluginLog(w http.ResponseWriter, _ *http.Request) {
	a.mu.Lock()
	b := a.logBuf
	a.mu.Unlock()
	if b != nil {
		_, _ = io.WriteString(w, b.String())
	}
}

// pluginCall forwards one docker.volumedriver/1.0 request to the plugin's socket, as dockerd does.
func (a *agent) pluginCall(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	sock := a.sock
	a.mu.Unlock()
	if sock == "" {
		fail(w, errors.New("the plugin was never started"))
		return
	}
	c := &http.Client{Timeout: 130 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, "http://plugin/"+r.PathValue("method"), r.Body)
	if err != nil {
		fail(w, err)
		return
	}
	req.Header.Set("Content-Type", "application/vnd.docker.plugins.v1+json")
	resp, err := c.Do(req)
	if err != nil {
		reply(w, http.StatusBadGateway, labapi.Error{Err: err.Error()})
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// krbdMap maps an image with the plugin's own kernel mapper (rbd/krbd), as the plugin would.
func (a *agent) krbdMap(w http.ResponseWriter, r *http.Request) {
	var req labapi.KRBDMap
	if !decode(w, r, &req) {
		return
	}
	m := krbd.New(krbd.KeyringFile{Path: req.Keyring})
	ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
	defer cancel()
	got, err := m.Map(ctx, driver.MapRequest{ImageSpec: driver.ImageSpec{Pool: req.Pool, Image: req.Image},
		ReadOnly: req.ReadOnly, Monitors: req.Monitors, User: req.User})
	if err != nil {
		fail(w, err)
		return
	}
	reply(w, http.StatusOK, got)
}

func (a *agent) krbdUnmap(w http.ResponseWriter, r *http.Request) {
	var req labapi.KRBDMap
	if !decode(w, r, &req) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
	defer cancel()
	if err := krbd.New(nil).Unmap(ctx, driver.ImageSpec{Pool: req.Pool, Image: req.Image}); err != nil {
		fail(w, err)
		return
	}
	reply(w, http.StatusOK, labapi.Error{})
}

func (a *agent) krbdList(w http.ResponseWriter, r *http.Request) {
	maps, err := krbd.New(nil).List(r.Context())
	if err != nil {
		fail(w, err)
		return
	}
	reply(w, http.StatusOK, maps)
}
