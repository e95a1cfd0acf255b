//go:build integration

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/cephdocker/ceph-docker-plugin/driver/execx"
	"github.com/cephdocker/ceph-docker-plugin/driver/volclient"
	"github.com/cephdocker/ceph-docker-plugin/rbd/fuse"
)

// These tests start the real plugin binary against the real lab Ceph (fuse mapper on this host)
// and speak to its socket exactly as dockerd does: HTTP POST with JSON bodies.

var pluginBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cdp-bin")
	if err != nil {
		panic(err)
	}
	pluginBin = filepath.Join(dir, "ceph-docker-plugin")
	build := exec.Command("go", "build", "-tags", "pacific", "-o", pluginBin, ".")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the plugin:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type lab struct {
	conf, user, keyring, adminKeyring, pool string
}

func labEnv(t *testing.T) lab {
	t.Helper()
	l := lab{os.Getenv("CEPH_CONF"), os.Getenv("CEPH_USER"), os.Getenv("CEPH_KEYRING"), os.Getenv("CEPH_ADMIN_KEYRING"), os.Getenv("RBD_POOL")}
	if l.conf == "" || l.user == "" || l.keyring == "" || l.adminKeyring == "" || l.pool == "" {
		t.Fatal("CEPH_CONF, CEPH_USER, CEPH_KEYRING, CEPH_ADMIN_KEYRING and RBD_POOL must be set: run `make test`")
	}
	return l
}

// admin runs a ceph/rbd/rados CLI command as client.admin (test set-up and inspection only).
func (l lab) admin(t *testing.T, tool string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	full := append([]string{"-c", l.conf, "-n", "client.admin", "-k", l.adminKeyring}, args...)
	res, err := execx.Run(ctx, execx.Cmd{Name: tool, Args: full})
	if err != nil {
		t.Fatalf("%s %v: %v", tool, args, err)
	}
	return string(res.Stdout)
}

// backend is one of the plugin's backends as the protocol-level tests drive it: the suite runs
// unchanged against both.
type backend struct {
	name string
	env  []string // settings that select it
	pool string   // the pool its images live in
}

// cinderPool is the pool of the lab Cinder's RBD backend (scripts/openstack-up.sh).
const cinderPool = "cinder"

// eachBackend runs fn as a subtest per backend: BACKEND=rbd, then BACKEND=cinder.
func eachBackend(t *testing.T, l lab, fn func(t *testing.T, b backend)) {
	t.Run("rbd", func(t *testing.T) { fn(t, backend{name: "rbd", pool: l.pool}) })
	t.Run("cinder", func(t *testing.T) { fn(t, backend{name: "cinder", env: cinderEnv(t), pool: cinderPool}) })
}

// image is the RBD image behind a volume: its name with BACKEND=rbd, volume-<cinder id> with Cinder.
func (b backend) image(p *plugin, name string) string {
	if b.name == "rbd" {
		return name
	}
	id, _ := p.get(name).Volume.Status["cinder-id"].(string)
	if id == "" {
		p.t.Fatalf("volume %s has no cinder-id", name)
	}
	return "volume-" + id
}

// assertReleased fails unless the backend says nobody holds the volume: no host lock with
// BACKEND=rbd; with Cinder, status available and no attachment (nothing half-attached).
func (b backend) assertReleased(p *plugin, name string) {
	p.t.Helper()
	st := p.get(name).Volume.Status
	if h, _ := st["holder"].(string); h != "" {
		p.t.Fatalf("volume %s still held: %q", name, h)
	}
	if b.name == "cinder" && st["cinder-status"] != "available" {
		p.t.Fatalf("volume %s: cinder status %v, want available", name, st["cinder-status"])
	}
}

func uniq(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// plugin is one running plugin process, standing for one host.
type plugin struct {
	t       *testing.T
	name    string
	dir     string // holds socket, state, mounts
	cwd     string // the process's working directory ("": the test's)
	env     []string
	cmd     *exec.Cmd
	logMu   sync.Mutex
	log     bytes.Buffer
	waitErr chan error
	client  *volclient.Client
}

func (p *plugin) sock() string      { return filepath.Join(p.dir, "ceph.sock") }
func (p *plugin) mountRoot() string { return filepath.Join(p.dir, "mnt") }
func (p *plugin) fuseRoot() string  { return filepath.Join(p.mountRoot(), ".rbd-fuse") }

// newPlugin prepares (but does not start) a host's plugin. extra overrides settings.
func newPlugin(t *testing.T, l lab, node string, extra ...string) *plugin {
	dir, err := os.MkdirTemp("", "cdp-"+node+"-")
	if err != nil {
		t.Fatal(err)
	}
	p := &plugin{t: t, name: node, dir: dir}
	p.client = volclient.New(p.sock(), 90*time.Second)
	p.env = append([]string{
		"CEPH_CONF=" + l.conf, "CEPH_USER=" + l.user, "CEPH_KEYRING=" + l.keyring, "RBD_POOL=" + l.pool,
		"MAPPER=fuse", "MOUNT_ROOT=" + p.mountRoot(), "STATE_DIR=" + filepath.Join(dir, "state"),
		"PLUGIN_SOCKET=" + p.sock(), "NODE_NAME=" + node, "LOG_LEVEL=debug", "CALL_TIMEOUT=40s",
		"DEFAULT_SIZE=256M",
	}, extra...)
	t.Cleanup(func() {
		if t.Failed() {
			logs := p.logs()
			if len(logs) > 6000 {
				logs = "..." + logs[len(logs)-6000:]
			}
			t.Logf("plugin %s's log:\n%s", node, logs)
		}
		p.stop()
		p.cleanHost()
		os.RemoveAll(dir)
	})
	return p
}

func (p *plugin) start(extra ...string) {
	p.t.Helper()
	p.client.CloseIdle() // a previous process's connections
	p.cmd = exec.Command(pluginBin)
	p.cmd.Dir = p.cwd
	p.cmd.Env = append(append(os.Environ(), p.env...), extra...)
	w := writerFunc(func(b []byte) (int, error) { p.logMu.Lock(); defer p.logMu.Unlock(); return p.log.Write(b) })
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.waitErr = make(chan error, 1)
	go func(c *exec.Cmd, ch chan error) { ch <- c.Wait() }(p.cmd, p.waitErr)
	reconciled := p.reconciles()
	deadline := time.Now().Add(60 * time.Second)
	for {
		// The plugin answers as soon as its socket is open (calls on a volume still being
		// reconciled wait for it); tests then also wait for the whole start-up reconcile, so that
		// they can look at what it repaired. (An error answer from the backend counts.)
		var resp map[string]any
		err := p.try("/VolumeDriver.List", struct{}{}, &resp)
		if pe, ok := err.(*volclient.Error); (err == nil || (ok && !strings.Contains(pe.Msg, "still reconciling"))) && p.reconciles() > reconciled {
			return
		}
		select {
		case err := <-p.waitErr:
			p.t.Fatalf("plugin %s exited at start: %v\n%s", p.name, err, p.logs())
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("plugin %s did not answer on %s and finish its reconcile within 60s\n%s", p.name, p.sock(), p.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// reconciles counts the start-up reconciles the plugin has logged as finished.
func (p *plugin) reconciles() int {
	n := 0
	for _, l := range strings.Split(p.logs(), "\n") {
		if strings.Contains(l, "msg=reconciled") && strings.Contains(l, " duration=") {
			n++
		}
	}
	return n
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

func (p *plugin) logs() string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return p.log.String()
}

// kill9 kills the plugin with SIGKILL, as a crash would.
func (p *plugin) kill9() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	p.waitExit(5 * time.Second)
}

func (p *plugin) waitExit(d time.Duration) error {
	select {
	case err := <-p.waitErr:
		p.cmd = nil
		return err
	case <-time.After(d):
		p.t.Fatalf("plugin %s did not exit", p.name)
		return nil
	}
}

func (p *plugin) stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.waitErr:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.waitErr
	}
	p.cmd = nil
}

// cleanHost removes whatever the host's plugin left (after a test failure or a simulated
// crash): its mounts and its fuse mappings.
func (p *plugin) cleanHost() {
	f := fuse.New(p.fuseRoot(), "", "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	maps, _ := f.List(ctx)
	// rbd-fuse processes first: a fenced one never completes I/O, and unmounting a filesystem
	// over it would wait forever for its final writes.
	for _, pid := range fuse.Daemons(p.fuseRoot()) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	// The volumes' mounts first, then the loops, while their backing files still have a path
	// (Unmap finds a loop by it; once the rbd-fuse mount under it is detached, the loop would
	// be left attached to a dead file, its flush stuck in the kernel), then rbd-fuse's mounts.
	unmount := func(keep func(string) bool) {
		mounts, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(p.mountRoot()))
		for i := len(mounts) - 1; i >= 0; i-- {
			if !keep(mounts[i].Mountpoint) {
				_ = unix.Unmount(mounts[i].Mountpoint, unix.MNT_DETACH)
			}
		}
	}
	underFuse := func(mp string) bool { return strings.HasPrefix(mp, p.fuseRoot()) }
	unmount(underFuse)
	for _, m := range maps {
		_ = f.Unmap(ctx, m.ImageSpec)
	}
	unmount(func(string) bool { return false })
}

// try posts one request and decodes the answer; a refusal (the answer's "Err") is *volclient.Error.
func (p *plugin) try(path string, req, resp any) error {
	return p.client.Call(path, req, resp)
}

// call is try for requests that must succeed.
func (p *plugin) call(path string, req, resp any) {
	p.t.Helper()
	if err := p.try(path, req, resp); err != nil {
		p.t.Fatalf("%s %s on %s: %v", path, mustJSON(req), p.name, err)
	}
}

// fail is try for requests that must fail with a message; it returns the message.
func (p *plugin) fail(path string, req any) string {
	p.t.Helper()
	err := p.try(path, req, nil)
	pe, ok := err.(*volclient.Error)
	if !ok {
		p.t.Fatalf("%s %s on %s: want an error answer, got %v", path, mustJSON(req), p.name, err)
	}
	return pe.Msg
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

type volResp struct {
	Volume struct {
		Name       string
		Mountpoint string
		Status     map[string]any
	}
}

type mountResp struct{ Mountpoint string }

func (p *plugin) create(name string, opts map[string]string) {
	p.call("/VolumeDriver.Create", map[string]any{"Name": name, "Opts": opts}, nil)
}

func (p *plugin) mount(name, id string) string {
	var r mountResp
	p.call("/VolumeDriver.Mount", map[string]string{"Name": name, "ID": id}, &r)
	if r.Mountpoint == "" {
		p.t.Fatalf("mount %s: empty mountpoint", name)
	}
	return r.Mountpoint
}

func (p *plugin) unmount(name, id string) {
	p.call("/VolumeDriver.Unmount", map[string]string{"Name": name, "ID": id}, nil)
}

func (p *plugin) remove(name string) {
	p.call("/VolumeDriver.Remove", map[string]string{"Name": name}, nil)
}

func (p *plugin) get(name string) volResp {
	var r volResp
	p.call("/VolumeDriver.Get", map[string]string{"Name": name}, &r)
	return r
}

// hostState is what this host has of the plugin's: mappings, mounts and rbd-fuse processes.
type hostState struct {
	maps    []string // fuse mappings: pool/image -> device
	mounts  []string // mounts under the mount root (volumes and fuse)
	leftova []string
}

func (p *plugin) host() hostState {
	f := fuse.New(p.fuseRoot(), "", "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var hs hostState
	maps, err := f.List(ctx)
	if err != nil {
		p.t.Fatal(err)
	}
	for _, m := range maps {
		hs.maps = append(hs.maps, m.ImageSpec.String()+"="+m.Device)
	}
	mounts, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(p.mountRoot()))
	for _, m := range mounts {
		hs.mounts = append(hs.mounts, m.Mountpoint)
	}
	hs.leftova, _ = f.Leftovers(ctx)
	return hs
}

// assertClean fails unless the host has no mapping, mount or rbd-fuse process of the plugin.
func (p *plugin) assertClean() {
	p.t.Helper()
	hs := p.host()
	if len(hs.maps)+len(hs.mounts)+len(hs.leftova) > 0 {
		p.t.Fatalf("host %s not clean: mappings %v, mounts %v, leftovers %v\n%s", p.name, hs.maps, hs.mounts, hs.leftova, p.logs())
	}
}

// mappingsOf counts the host's mappings of one image (more than one is a double mapping).
func (p *plugin) mappingsOf(pool, image string) int {
	n := 0
	for _, m := range p.host().maps {
		if strings.HasPrefix(m, pool+"/"+image+"=") {
			n++
		}
	}
	return n
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func randomData(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func isMounted(t *testing.T, path string) bool {
	ok, err := mountinfo.Mounted(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return ok
}
