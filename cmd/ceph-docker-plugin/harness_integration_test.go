//go:build integration

package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"

	"github.com/cephdocker/ceph-docker-plugin/driver/volclient"
	"github.com/cephdocker/ceph-docker-plugin/plugin/plugintest"
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
	c := plugintest.MustCeph(t)
	return lab{c.Conf, c.User, c.Keyring, c.AdminKeyring, c.Pool}
}

// admin runs a ceph/rbd/rados CLI command as client.admin (test set-up and inspection only).
func (l lab) admin(t *testing.T, tool string, args ...string) string {
	t.Helper()
	out, err := plugintest.Ceph{Conf: l.conf, AdminKeyring: l.adminKeyring}.Admin(tool, args...)
	if err != nil {
		t.Fatalf("%s %v: %v", tool, args, err)
	}
	return out
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

// eachBackend runs fn as a subtest per backend, BACKEND=rbd and BACKEND=cinder, in parallel:
// each subtest starts plugins of its own (own directories, own volume names).
func eachBackend(t *testing.T, l lab, fn func(t *testing.T, b backend)) {
	t.Run("rbd", func(t *testing.T) { t.Parallel(); fn(t, backend{name: "rbd", pool: l.pool}) })
	t.Run("cinder", func(t *testing.T) {
		t.Parallel()
		fn(t, backend{name: "cinder", env: cinderEnv(t), pool: cinderPool})
	})
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

func uniq(prefix string) string { return plugintest.Uniq(prefix) }

// plugin is one running plugin process, standing for one host.
type plugin struct {
	*plugintest.Process
	t    *testing.T
	name string
	dir  string // holds socket, state, mounts
}

func (p *plugin) sock() string      { return p.Sock() }
func (p *plugin) mountRoot() string { return p.MountRoot() }
func (p *plugin) fuseRoot() string  { return p.FuseRoot() }
func (p *plugin) logs() string      { return p.Logs() }

// newPlugin prepares (but does not start) a host's plugin. extra overrides settings.
func newPlugin(t *testing.T, l lab, node string, extra ...string) *plugin {
	dir, err := os.MkdirTemp("", "cdp-"+node+"-")
	if err != nil {
		t.Fatal(err)
	}
	p := &plugin{t: t, name: node, dir: dir}
	p.Process = plugintest.NewProcess(pluginBin, dir, node, 90*time.Second, append([]string{
		"CEPH_CONF=" + l.conf, "CEPH_USER=" + l.user, "CEPH_KEYRING=" + l.keyring, "RBD_POOL=" + l.pool,
		"LOG_LEVEL=debug", "CALL_TIMEOUT=40s", "DEFAULT_SIZE=256M",
	}, extra...)...)
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

// start starts the plugin and waits until it answers on its socket and has finished its
// start-up reconcile.
func (p *plugin) start(extra ...string) {
	p.t.Helper()
	p.startAndWait(func() bool {
		// The plugin answers as soon as its socket is open (calls on a volume still being
		// reconciled wait for it); tests then also wait for the whole start-up reconcile, so that
		// they can look at what it repaired. (An error answer from the backend counts.)
		var resp map[string]any
		err := p.try("/VolumeDriver.List", struct{}{}, &resp)
		pe, ok := err.(*volclient.Error)
		return err == nil || (ok && !strings.Contains(pe.Msg, "still reconciling"))
	}, extra...)
}

// startAndWait starts the plugin and waits until ready says true and the plugin has logged one
// more finished start-up reconcile than before.
func (p *plugin) startAndWait(ready func() bool, extra ...string) {
	p.t.Helper()
	reconciled := p.reconciles()
	if err := p.Start(extra...); err != nil {
		p.t.Fatal(err)
	}
	if _, err := p.WaitReady(60*time.Second, 50*time.Millisecond, func() bool { return ready() && p.reconciles() > reconciled }); err != nil {
		p.t.Fatalf("%v\n%s", err, p.logs())
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

// kill9 kills the plugin with SIGKILL, as a crash would.
func (p *plugin) kill9() {
	p.t.Helper()
	if err := p.Kill9(5 * time.Second); err != nil {
		p.t.Fatal(err)
	}
}

func (p *plugin) waitExit(d time.Duration) error {
	p.t.Helper()
	if err := p.WaitExit(d); err != nil {
		p.t.Fatal(err)
	}
	return p.ExitErr()
}

func (p *plugin) stop() { p.Stop(10 * time.Second) }

// cleanHost removes whatever the host's plugin left (after a test failure or a simulated
// crash): its mounts and its fuse mappings.
func (p *plugin) cleanHost() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p.CleanHost(ctx)
}

// try posts one request and decodes the answer; a refusal (the answer's "Err") is *volclient.Error.
func (p *plugin) try(path string, req, resp any) error { return p.Call(path, req, resp) }

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

// must fails the test on a protocol call's error.
func (p *plugin) must(err error) {
	p.t.Helper()
	if err != nil {
		p.t.Fatal(err)
	}
}

type volResp struct{ Volume plugintest.Volume }

type mountResp struct{ Mountpoint string }

func (p *plugin) create(name string, opts map[string]string) {
	p.t.Helper()
	p.must(p.Create(name, opts))
}

func (p *plugin) mount(name, id string) string {
	p.t.Helper()
	mp, err := p.Mount(name, id)
	p.must(err)
	return mp
}

func (p *plugin) unmount(name, id string) { p.t.Helper(); p.must(p.Unmount(name, id)) }

func (p *plugin) remove(name string) { p.t.Helper(); p.must(p.Remove(name)) }

func (p *plugin) get(name string) volResp {
	p.t.Helper()
	v, err := p.Get(name)
	p.must(err)
	return volResp{v}
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

func writeFile(t *testing.T, path string, data []byte) { plugintest.WriteFileSync(t, path, data) }

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
