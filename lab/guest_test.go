//go:build lab

package lab

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/lab/labapi"
	"github.com/cephdocker/ceph-docker-plugin/plugin/plugintest"
)

// The krbd lab: QEMU guests (TCG) running Debian's stock kernel, each a "host" running the plugin
// binary with MAPPER=krbd against the host's lab Ceph. scripts/lab-build.sh makes the kernel and
// the initramfs; the tests boot guests, drive their agent (lab/agent) over a port QEMU forwards to
// 127.0.0.1, and kill every QEMU they started at cleanup.

// env is what the lab needs from the Makefile: the Ceph lab's env and the lab-build.sh output.
type env struct {
	kernel, initrd               string
	conf, user, keyring, adminKR string
	pool                         string
	guestConf                    []byte // ceph.conf for the guests: fsid and mon host only
	key                          string // client.<user>'s secret: must never show anywhere
	monitors                     []string
}

var lab env

func TestMain(m *testing.M) {
	c, err := plugintest.CephFromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	e := env{kernel: os.Getenv("LAB_KERNEL"), initrd: os.Getenv("LAB_INITRD"), conf: c.Conf, user: c.User,
		keyring: c.Keyring, adminKR: c.AdminKeyring, pool: c.Pool}
	if e.kernel == "" || e.initrd == "" {
		fmt.Fprintln(os.Stderr, "LAB_KERNEL and LAB_INITRD must be set: run `make lab`")
		os.Exit(2)
	}
	conf, err := os.ReadFile(e.conf)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	// The guests get only the cluster's identity and monitors; the host's file has lab paths.
	var gc bytes.Buffer
	gc.WriteString("[global]\n")
	sc := bufio.NewScanner(bytes.NewReader(conf))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "fsid") || strings.HasPrefix(l, "mon host") || strings.HasPrefix(l, "mon_host") {
			gc.WriteString(l + "\n")
		}
	}
	e.guestConf = gc.Bytes()
	kr, err := os.ReadFile(e.keyring)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if m := regexp.MustCompile(`(?m)^\s*key\s*=\s*(\S+)`).FindSubmatch(kr); m != nil {
		e.key = string(m[1])
	} else {
		fmt.Fprintln(os.Stderr, "no key in", e.keyring)
		os.Exit(2)
	}
	lab = e
	os.Exit(m.Run())
}

// admin runs a ceph/rbd CLI command as client.admin on the host (set-up, inspection, cleanup).
func admin(t *testing.T, tool string, args ...string) (string, error) {
	t.Helper()
	return plugintest.Ceph{Conf: lab.conf, AdminKeyring: lab.adminKR}.Admin(tool, args...)
}

// hostLockers returns the holders ("client.N cookie") of the plugin's host lock on the image.
func hostLockers(t *testing.T, image string) []string {
	t.Helper()
	var info struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(mustAdmin(t, "rbd", "info", "--format", "json", lab.pool+"/"+image)), &info); err != nil {
		t.Fatal(err)
	}
	out, err := admin(t, "rados", "-p", lab.pool, "lock", "info", "rbd_header."+info.ID, "ceph-docker-plugin", "--format", "json")
	if err != nil {
		return nil // no such lock on the object
	}
	var lk struct {
		Lockers []struct{ Name, Cookie string }
	}
	if err := json.Unmarshal([]byte(out), &lk); err != nil {
		t.Fatalf("rados lock info: %q: %v", out, err)
	}
	var holders []string
	for _, l := range lk.Lockers {
		holders = append(holders, l.Name+" "+l.Cookie)
	}
	return holders
}

// use points the guests' failures at t (a subtest) until the returned func puts back the parent.
func use(t *testing.T, gs ...*guest) func() {
	prev := make([]*testing.T, len(gs))
	for i, g := range gs {
		prev[i], g.t = g.t, t
	}
	return func() {
		for i, g := range gs {
			g.t = prev[i]
		}
	}
}

func mustAdmin(t *testing.T, tool string, args ...string) string {
	t.Helper()
	out, err := admin(t, tool, args...)
	if err != nil {
		t.Fatalf("%s %v: %v", tool, args, err)
	}
	return out
}

func uniq(prefix string) string { return plugintest.Uniq(prefix) }

// removeImage deletes a lab image from the host side (a plugin's host lock does not stop that). A
// powered-off guest's kernel client stays a watcher until Ceph times it out (about 30 s): retry
// for a bounded time.
func removeImage(t *testing.T, image string) {
	deadline := time.Now().Add(90 * time.Second)
	for {
		if _, err := admin(t, "rbd", "info", lab.pool+"/"+image); err != nil {
			return // gone (or removed by the test itself)
		}
		_, err := admin(t, "rbd", "rm", "--no-progress", lab.pool+"/"+image)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			status, _ := admin(t, "rbd", "status", lab.pool+"/"+image)
			t.Errorf("cleanup: could not remove %s/%s: %v\nrbd status: %s", lab.pool, image, err, status)
			return
		}
		time.Sleep(3 * time.Second)
	}
}

// guest is one QEMU guest: a host running the plugin with the kernel rbd driver.
type guest struct {
	t      *testing.T
	name   string
	dir    string
	port   int
	cmd    *exec.Cmd
	exited chan struct{}
	http   *http.Client
	// pluginEnv is the plugin's environment in this guest.
	pluginEnv []string
	// mounts are the caller IDs of each volume mounted through the plugin and not yet unmounted:
	// a failed case's cleanup unmounts them, so that its image can be removed at once.
	mounts map[string][]string
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// machine is what differs between the lab's guests: the krbd guests boot an initramfs, the
// docker guest a root disk.
type machine struct {
	name           string
	mem            string // QEMU's -m
	kernel, initrd string
	cmdline        []string      // kernel arguments beside console, panic and lab_node
	qemuArgs       []string      // beside the machine, the network and the console
	callTimeout    time.Duration // of the agent's HTTP client
	bootWithin     time.Duration // until the agent answers
	// onFailure adds to a failed test's log while the guest still runs, before its power-off.
	onFailure func(g *guest)
}

// startGuest starts a guest (launchGuest) and waits for its agent (waitAgent). It returns the
// guest and the time from QEMU's start to the agent's answer.
func startGuest(t *testing.T, m machine) (*guest, time.Duration) {
	t.Helper()
	g, start := launchGuest(t, m)
	return g, waitAgent(t, g, start, m.bootWithin)
}

// launchGuest starts QEMU (TCG, one CPU, the agent's port forwarded to 127.0.0.1, console and
// monitor under the test's temporary directory) and returns at once, so that guests boot side by
// side; it powers the guest off at cleanup.
func launchGuest(t *testing.T, m machine) (*guest, time.Time) {
	t.Helper()
	dir := t.TempDir()
	g := &guest{t: t, name: m.name, dir: dir, port: freePort(t), exited: make(chan struct{}),
		http: &http.Client{Timeout: m.callTimeout}, mounts: map[string][]string{}}
	args := append([]string{
		"-accel", "tcg,thread=single", "-cpu", "max", "-m", m.mem, "-smp", "1",
		"-display", "none", "-no-reboot", "-kernel", m.kernel, "-initrd", m.initrd,
		"-append", strings.Join(append([]string{"console=ttyS0", "panic=-1", "lab_node=" + m.name}, m.cmdline...), " "),
		"-netdev", fmt.Sprintf("user,id=n0,hostfwd=tcp:127.0.0.1:%d-:8080", g.port),
		"-device", "virtio-net-pci,netdev=n0",
		"-serial", "file:" + filepath.Join(dir, "console.log"),
		"-monitor", "unix:" + filepath.Join(dir, "monitor.sock") + ",server=on,wait=off",
	}, m.qemuArgs...)
	g.cmd = exec.Command("qemu-system-x86_64", args...)
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// A disk with snapshot=on keeps the guest's writes in a temporary file of QEMU's: on this
	// file system, removed with the test's directory.
	g.cmd.Env = append(os.Environ(), "TMPDIR="+dir)
	qlog, err := os.Create(filepath.Join(dir, "qemu.log"))
	if err != nil {
		t.Fatal(err)
	}
	g.cmd.Stdout, g.cmd.Stderr = qlog, qlog
	start := time.Now()
	if err := g.cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	go func() { _ = g.cmd.Wait(); qlog.Close(); close(g.exited) }()
	t.Cleanup(func() {
		if t.Failed() && m.onFailure != nil && g.alive() {
			m.onFailure(g)
		}
		g.powerOff()
		if t.Failed() {
			t.Logf("%s console (tail):\n%s", m.name, tailOf(g.console(), 3000))
		}
	})
	return g, start
}

// waitAgent waits until the agent of a guest started at start answers, for at most within, and
// returns the time since start.
func waitAgent(t *testing.T, g *guest, start time.Time, within time.Duration) time.Duration {
	t.Helper()
	deadline := start.Add(within)
	for !g.alive() {
		select {
		case <-g.exited:
			t.Fatalf("guest %s: qemu exited while booting: %s\n%s", g.name, readFile(filepath.Join(g.dir, "qemu.log")), tailOf(g.console(), 3000))
		case <-time.After(500 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest %s: the agent did not answer within %s:\n%s", g.name, within, tailOf(g.console(), 3000))
		}
	}
	return time.Since(start)
}

// boot starts a krbd guest named name and waits for its agent, then gives it the cluster config
// and the keyring (through the agent: no key on any command line).
func boot(t *testing.T, name string) *guest {
	t.Helper()
	g, up := startGuest(t, machine{name: name, mem: "1536", kernel: lab.kernel, initrd: lab.initrd,
		callTimeout: 180 * time.Second, bootWithin: 150 * time.Second})
	kver := strings.TrimSpace(g.sh("uname -r"))
	t.Logf("guest %s up in %.1fs (kernel %s, QEMU TCG, agent on 127.0.0.1:%d)", name, up.Seconds(), kver, g.port)
	g.writeFile("/etc/ceph/ceph.conf", 0o644, lab.guestConf)
	kr, err := os.ReadFile(lab.keyring)
	if err != nil {
		t.Fatal(err)
	}
	g.writeFile("/etc/ceph/ceph.client."+lab.user+".keyring", 0o600, kr)
	g.pluginEnv = []string{
		"MAPPER=krbd", "CEPH_CONF=/etc/ceph/ceph.conf", "CEPH_USER=" + lab.user,
		"CEPH_KEYRING=/etc/ceph/ceph.client." + lab.user + ".keyring", "RBD_POOL=" + lab.pool,
		"MOUNT_ROOT=/mnt/volumes", "STATE_DIR=/run/cdp/state", "PLUGIN_SOCKET=/run/docker/plugins/ceph.sock",
		"NODE_NAME=" + name, "LOG_LEVEL=debug", "DEFAULT_SIZE=256M", "CALL_TIMEOUT=90s", "CEPH_TIMEOUT=30s",
	}
	return g
}

func readFile(p string) string { b, _ := os.ReadFile(p); return string(b) }

func tailOf(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func (g *guest) console() string { return readFile(filepath.Join(g.dir, "console.log")) }

func (g *guest) url(p string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", g.port, p) }

// powerOff kills QEMU: the guest loses power mid-whatever it was doing.
func (g *guest) powerOff() {
	select {
	case <-g.exited:
		return
	default:
	}
	_ = syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-g.exited:
	case <-time.After(10 * time.Second):
		g.t.Errorf("qemu of %s (pid %d) did not exit after SIGKILL", g.name, g.cmd.Process.Pid)
	}
}

// monitor sends one HMP command (stop, cont, ...) to QEMU's monitor and returns its answer.
func (g *guest) monitor(cmd string) string {
	g.t.Helper()
	c, err := net.DialTimeout("unix", filepath.Join(g.dir, "monitor.sock"), 5*time.Second)
	if err != nil {
		g.t.Fatalf("%s monitor: %v", g.name, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	readPrompt := func() string {
		var out strings.Builder
		for !strings.HasSuffix(out.String(), "(qemu) ") {
			b, err := r.ReadByte()
			if err != nil {
				g.t.Fatalf("%s monitor %q: %v (read %q)", g.name, cmd, err, out.String())
			}
			out.WriteByte(b)
		}
		return out.String()
	}
	readPrompt()
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		g.t.Fatal(err)
	}
	return readPrompt()
}

// post sends a JSON request to the agent and decodes the JSON reply into out; it returns the
// HTTP status.
func (g *guest) post(path string, in, out any) int {
	g.t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			g.t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	method := http.MethodPost
	if in == nil && strings.Contains(path, "status") || strings.HasSuffix(path, "/list") || strings.HasSuffix(path, "/log") {
		method = http.MethodGet
	}
	req, err := http.NewRequest(method, g.url(path), body)
	if err != nil {
		g.t.Fatal(err)
	}
	resp, err := g.http.Do(req)
	if err != nil {
		g.t.Fatalf("%s %s: %v", g.name, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		g.t.Fatal(err)
	}
	if out != nil {
		if s, ok := out.(*string); ok {
			*s = string(raw)
		} else if err := json.Unmarshal(raw, out); err != nil {
			g.t.Fatalf("%s %s: bad reply %q: %v", g.name, path, raw, err)
		}
	}
	return resp.StatusCode
}

// run runs argv in the guest.
func (g *guest) run(timeout time.Duration, argv ...string) labapi.ExecResult {
	g.t.Helper()
	var res labapi.ExecResult
	if code := g.post("/exec", labapi.ExecRequest{Argv: argv, TimeoutMS: timeout.Milliseconds()}, &res); code != http.StatusOK {
		g.t.Fatalf("%s exec %q: HTTP %d", g.name, argv, code)
	}
	return res
}

// sh runs a shell script in the guest and fails the test unless it exits 0.
func (g *guest) sh(script string) string {
	g.t.Helper()
	res := g.run(2*time.Minute, "sh", "-c", script)
	if res.Code != 0 {
		g.t.Fatalf("%s: sh -c %q: exit %d %s\nstdout: %s\nstderr: %s", g.name, script, res.Code, res.Err, res.Stdout, res.Stderr)
	}
	return res.Stdout
}

func (g *guest) writeFile(path string, mode os.FileMode, data []byte) {
	g.t.Helper()
	var e labapi.Error
	if code := g.post("/file", labapi.FileRequest{Path: path, Mode: uint32(mode), Data: data}, &e); code != http.StatusOK {
		g.t.Fatalf("%s write %s: %s", g.name, path, e.Err)
	}
}

// startPlugin starts the plugin binary in the guest with its environment plus extra.
func (g *guest) startPlugin(extra ...string) int {
	g.t.Helper()
	var info labapi.PluginInfo
	var raw string
	code := g.post("/plugin/start", labapi.PluginStart{Binary: "/usr/bin/ceph-docker-plugin", Env: append(append([]string{}, g.pluginEnv...), extra...)}, &raw)
	if code != http.StatusOK {
		g.t.Fatalf("%s: start the plugin: %s", g.name, raw)
	}
	if err := json.Unmarshal([]byte(raw), &info); err != nil {
		g.t.Fatal(err)
	}
	return info.PID
}

// killPlugin kills the plugin with SIGKILL (or SIGTERM with term) and waits until it is gone.
func (g *guest) killPlugin(term bool) {
	g.t.Helper()
	p := "/plugin/kill"
	if term {
		p += "?signal=term"
	}
	var info labapi.PluginInfo
	if code := g.post(p, struct{}{}, &info); code != http.StatusOK {
		g.t.Fatalf("%s: kill the plugin: HTTP %d", g.name, code)
	}
}

func (g *guest) pluginLog() string {
	var s string
	g.post("/plugin/log", nil, &s)
	return s
}

// call makes one docker.volumedriver/1.0 call through the plugin's socket; it returns the reply
// and the plugin's error message ("" on success).
func (g *guest) call(method string, req any) (map[string]any, string) {
	g.t.Helper()
	var raw string
	code := g.post("/plugin/call/VolumeDriver."+method, req, &raw)
	var reply map[string]any
	if err := json.Unmarshal([]byte(raw), &reply); err != nil {
		g.t.Fatalf("%s %s: HTTP %d, not JSON: %q", g.name, method, code, raw)
	}
	if e, _ := reply["Err"].(string); e != "" {
		return reply, e
	}
	if e, _ := reply["err"].(string); e != "" { // the agent's own error (socket unreachable)
		return reply, "agent: " + e
	}
	return reply, ""
}

func (g *guest) mustCall(method string, req any) map[string]any {
	g.t.Helper()
	reply, e := g.call(method, req)
	if e != "" {
		g.t.Fatalf("%s: %s %v: %s\nplugin log (tail):\n%s", g.name, method, req, e, tailOf(g.pluginLog(), 3000))
	}
	return reply
}

type nameReq struct {
	Name string            `json:"Name"`
	ID   string            `json:"ID,omitempty"`
	Opts map[string]string `json:"Opts,omitempty"`
}

// create makes a volume through the plugin and removes its image at cleanup (from the host),
// after unmounting what a failed case left mounted.
func (g *guest) create(name string, opts map[string]string) {
	g.t.Helper()
	t := g.t
	t.Cleanup(func() {
		if ids := g.mounts[name]; len(ids) > 0 && g.alive() {
			for _, id := range ids {
				g.call("Unmount", nameReq{Name: name, ID: id})
			}
			delete(g.mounts, name)
		}
		removeImage(t, name)
	})
	g.mustCall("Create", nameReq{Name: name, Opts: opts})
}

func (g *guest) mount(name, id string) string {
	g.t.Helper()
	r := g.mustCall("Mount", nameReq{Name: name, ID: id})
	mp, _ := r["Mountpoint"].(string)
	if mp == "" {
		g.t.Fatalf("%s: Mount %s returned no mount point: %v", g.name, name, r)
	}
	if !slices.Contains(g.mounts[name], id) {
		g.mounts[name] = append(g.mounts[name], id)
	}
	return mp
}

func (g *guest) unmount(name, id string) {
	g.t.Helper()
	g.mustCall("Unmount", nameReq{Name: name, ID: id})
	g.mounts[name] = slices.DeleteFunc(g.mounts[name], func(s string) bool { return s == id })
}

// alive: QEMU runs and the guest is not frozen (its agent answers).
func (g *guest) alive() bool {
	select {
	case <-g.exited:
		return false
	default:
	}
	resp, err := (&http.Client{Timeout: 3 * time.Second}).Get(g.url("/health"))
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// mappings returns the guest kernel's rbd devices of image ("/dev/rbdN" each), read with the
// plugin's own krbd mapper.
func (g *guest) mappings(image string) []string {
	g.t.Helper()
	var maps []struct {
		Pool, Image, Device string
	}
	if code := g.post("/krbd/list", nil, &maps); code != http.StatusOK {
		g.t.Fatalf("%s krbd list: HTTP %d", g.name, code)
	}
	var out []string
	for _, m := range maps {
		if m.Pool == lab.pool && m.Image == image {
			out = append(out, m.Device)
		}
	}
	return out
}

// mountedDevice returns the device mounted on path in the guest ("" if none).
func (g *guest) mountedDevice(path string) string {
	g.t.Helper()
	for _, l := range strings.Split(g.sh("cat /proc/mounts"), "\n") {
		f := strings.Fields(l)
		if len(f) > 2 && f[1] == path {
			return f[0]
		}
	}
	return ""
}

// krbdMap maps an image in the guest with the plugin's krbd mapper (not through the plugin).
func (g *guest) krbdMap(image string, ro bool) (string, string) {
	g.t.Helper()
	var raw string
	code := g.post("/krbd/map", labapi.KRBDMap{Pool: lab.pool, Image: image, ReadOnly: ro, Monitors: monitors(g.t),
		User: lab.user, Keyring: "/etc/ceph/ceph.client." + lab.user + ".keyring"}, &raw)
	var m struct {
		Device string
		Err    string `json:"err"`
	}
	_ = json.Unmarshal([]byte(raw), &m)
	if code != http.StatusOK {
		return "", m.Err
	}
	return m.Device, ""
}

func (g *guest) krbdUnmap(image string) {
	g.t.Helper()
	var e labapi.Error
	if code := g.post("/krbd/unmap", labapi.KRBDMap{Pool: lab.pool, Image: image}, &e); code != http.StatusOK {
		g.t.Fatalf("%s krbd unmap %s: %s", g.name, image, e.Err)
	}
}

// monitors are the v1 monitor addresses, as the plugin's provisioner gives them to the mapper.
func monitors(t *testing.T) []string {
	if lab.monitors != nil {
		return lab.monitors
	}
	out := mustAdmin(t, "ceph", "mon", "dump", "--format", "json")
	var dump struct {
		Mons []struct {
			PublicAddrs struct {
				Addrvec []struct{ Type, Addr string }
			} `json:"public_addrs"`
		}
	}
	if err := json.Unmarshal([]byte(out), &dump); err != nil {
		t.Fatal(err)
	}
	for _, m := range dump.Mons {
		for _, a := range m.PublicAddrs.Addrvec {
			if a.Type == "v1" {
				lab.monitors = append(lab.monitors, a.Addr)
			}
		}
	}
	return lab.monitors
}

func (g *guest) writerStart(req labapi.WriterStart) {
	g.t.Helper()
	var e labapi.Error
	if code := g.post("/writer/start", req, &e); code != http.StatusOK {
		g.t.Fatalf("%s writer start: %s", g.name, e.Err)
	}
}

func (g *guest) writerStatus() labapi.WriterStatus {
	g.t.Helper()
	var st labapi.WriterStatus
	g.post("/writer/status", nil, &st)
	return st
}

func (g *guest) writerStop() labapi.WriterStatus {
	g.t.Helper()
	var st labapi.WriterStatus
	if code := g.post("/writer/stop", struct{}{}, &st); code != http.StatusOK {
		g.t.Fatalf("%s writer stop: HTTP %d", g.name, code)
	}
	return st
}

// waitFor polls cond every 500 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// assertNoKey checks that the cephx secret shows in none of: the guest's process command lines
// and environments, the plugin's log, the kernel log, the kernel's copy of the map requests, the
// guest console, QEMU's command line. Call it while a volume is mapped.
func (g *guest) assertNoKey() {
	g.t.Helper()
	where := map[string]string{
		"process listing (/proc/*/cmdline, /proc/*/environ)": g.sh("for p in /proc/[0-9]*; do tr '\\0' ' ' <$p/cmdline; echo; tr '\\0' ' ' <$p/environ; echo; done 2>/dev/null"),
		"plugin log":    g.pluginLog(),
		"kernel log":    g.sh("dmesg"),
		"guest console": g.console(),
	}
	// The kernel keeps each map request readable (by root) in config_info: the plugin passes the
	// key in the kernel keyring (key=), so the request names the key and does not contain it.
	cfg := g.sh("cat /sys/bus/rbd/devices/*/config_info")
	where["map requests (/sys/bus/rbd/devices/*/config_info)"] = cfg
	if !strings.Contains(cfg, "key=client."+lab.user) {
		g.t.Errorf("%s: the map requests do not name the key in the kernel keyring: %q", g.name, strings.ReplaceAll(cfg, lab.key, "<key>"))
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", g.cmd.Process.Pid)); err == nil {
		where["qemu command line"] = string(b)
	}
	for what, text := range where {
		if strings.Contains(text, lab.key) {
			g.t.Errorf("%s: the cephx key of client.%s appears in the %s", g.name, lab.user, what)
		}
		if len(text) == 0 && what != "guest console" {
			g.t.Errorf("%s: the %s is empty: the check proves nothing", g.name, what)
		}
	}
}
