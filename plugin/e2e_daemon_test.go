//go:build e2e

package plugin

// One test per way dockerd calls a volume plugin besides `docker run -v`: docker cp,
// --volumes-from, anonymous volumes of --rm containers, docker restart and restart policies,
// volume prune, plugin disable/upgrade, labels, inspect while another host holds the volume, and
// a missed Unmount. Each cites the moby code that decides what dockerd does.

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver/metrics/promtest"
	"github.com/cephdocker/ceph-docker-plugin/driver/volclient"
	"github.com/cephdocker/ceph-docker-plugin/plugin/plugintest"
)

// pluginID is the plugin's 64-hex ID in dockerd.
func pluginID(t *testing.T) string {
	t.Helper()
	return must(t, "plugin", "inspect", "-f", "{{.Id}}", pluginName())
}

// pluginClient speaks to the managed plugin's own socket, as dockerd does: dockerd puts a managed
// plugin's socket in /run/docker/plugins/<id>/ whatever its --exec-root (measured on 20.10 and 28).
func pluginClient(t *testing.T) *volclient.Client {
	t.Helper()
	sock := filepath.Join("/run/docker/plugins", pluginID(t), "ceph.sock")
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("the plugin's socket: %v", err)
	}
	return volclient.New(sock, 90*time.Second)
}

// mountIDs is the plugin's list of Docker mount IDs holding the volume on this host.
func mountIDs(t *testing.T, name string) []string {
	t.Helper()
	var ids []string
	raw, _ := inspectStatus(t, name)["mounts"].([]any)
	for _, v := range raw {
		s, _ := v.(string)
		ids = append(ids, s)
	}
	return ids
}

// volumeMountsOnHost lists the host's mount points of the volume under this dockerd: the
// plugin's propagated mount <data-root>/plugins/<id>/propagated-mount/<name> (dockerd's
// propagation shows each mount there twice; rbd-fuse's own mounts under .rbd-fuse are not it).
func volumeMountsOnHost(name string) []string {
	seen := map[string]bool{}
	var out []string
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], os.Getenv("DOCKER_DATA_ROOT")+"/") && strings.HasSuffix(f[4], "/propagated-mount/"+name) && !seen[f[4]] {
			seen[f[4]] = true
			out = append(out, f[4])
		}
	}
	return out
}

// assertReleased fails unless no container holds the volume: the plugin reports no device, no
// mount reference and no holder (with Cinder: the volume is available), and the host has no
// mount of it. dockerd may answer `docker stop` before its exit handling has unmounted the
// container's volumes, so this polls for a while.
func assertReleased(t *testing.T, name string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := inspectStatus(t, name)
		var why string
		switch {
		case st["device"] != nil || st["mounts"] != nil || st["holder"] != nil:
			why = fmt.Sprintf("still held: Status %v", st)
		case cinderMode() && st["cinder-status"] != "available":
			why = fmt.Sprintf("Cinder status %v, want available", st["cinder-status"])
		case len(volumeMountsOnHost(name)) > 0:
			why = fmt.Sprintf("released but still mounted on the host: %v", volumeMountsOnHost(name))
		default:
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("volume %s %s", name, why)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// container starts a long-running container and removes it when the test ends.
func container(t *testing.T, name string, args ...string) {
	t.Helper()
	all := append([]string{"run", "-d", "--name", name, "--network", "none"}, args...)
	must(t, append(all, "busybox", "sleep", "600")...)
	t.Cleanup(func() { _, _ = docker(t, time.Minute, "rm", "-f", name) })
}

func randomFile(t *testing.T, path string, n int) string {
	t.Helper()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := md5.Sum(b)
	return hex.EncodeToString(sum[:])
}

func md5File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := md5.Sum(b)
	return hex.EncodeToString(sum[:])
}

// md5In is the checksum of a file as a container sees it.
func md5In(t *testing.T, out string) string {
	t.Helper()
	f := strings.Fields(out)
	if len(f) == 0 {
		t.Fatalf("md5sum printed nothing")
	}
	return f[0]
}

// docker cp mounts the container's volumes again with the mount point's own ID for each stat and
// copy, running or stopped (moby daemon/archive.go: mountVolumes -> MountPoint.Setup, which
// reuses m.ID while it is set and counts m.active; then DetachAndUnmount -> MountPoint.Cleanup
// calls Unmount(m.ID) once per use, volume/mounts/mounts.go). The nested Unmount must not take
// the volume from the running container.
func TestDockerCpRunningAndStopped(t *testing.T) {
	name := uniq("cp")
	volume(t, name, "size=256M")
	c1 := uniq("cp-holder")
	container(t, c1, "-v", name+":/data")
	must(t, "exec", c1, "sh", "-c", "echo before > /data/before; sync")
	ids := mountIDs(t, name)
	if len(ids) != 1 {
		t.Fatalf("one running container: mount IDs %v", ids)
	}
	dir := t.TempDir()
	inSum := randomFile(t, filepath.Join(dir, "in.bin"), 1<<20)

	// Into the running container.
	must(t, "cp", filepath.Join(dir, "in.bin"), c1+":/data/in.bin")
	if got := md5In(t, must(t, "exec", c1, "md5sum", "/data/in.bin")); got != inSum {
		t.Fatalf("the running container reads %s after docker cp in, want %s", got, inSum)
	}
	must(t, "exec", c1, "sh", "-c", "echo after-cp > /data/after; sync")
	if now := mountIDs(t, name); len(now) != 1 || now[0] != ids[0] {
		t.Fatalf("after docker cp in: mount IDs %v, want still %v", now, ids)
	}
	// Out of the running container.
	must(t, "cp", c1+":/data/after", filepath.Join(dir, "after"))
	if b, err := os.ReadFile(filepath.Join(dir, "after")); err != nil || string(b) != "after-cp\n" {
		t.Fatalf("docker cp out of the running container: %q, %v", b, err)
	}
	if out := must(t, "exec", c1, "cat", "/data/before"); out != "before" {
		t.Fatalf("the running container after docker cp out reads %q", out)
	}
	if now := mountIDs(t, name); len(now) != 1 || now[0] != ids[0] {
		t.Fatalf("after docker cp out: mount IDs %v, want still %v", now, ids)
	}
	if m := volumeMountsOnHost(name); len(m) != 1 {
		t.Fatalf("after docker cp the host has mounts %v of the volume, want one", m)
	}

	// A second container uses the volume while the first runs.
	out := must(t, "run", "--rm", "--network", "none", "-v", name+":/data", "busybox", "sh", "-c",
		"md5sum /data/in.bin; cat /data/after; echo second > /data/second; sync")
	if !strings.HasPrefix(out, inSum+" ") || !strings.Contains(out, "after-cp") {
		t.Fatalf("a second container while the first runs: %q", out)
	}
	if now := mountIDs(t, name); len(now) != 1 || now[0] != ids[0] {
		t.Fatalf("after the second container left: mount IDs %v, want %v", now, ids)
	}
	if out := must(t, "exec", c1, "cat", "/data/second"); out != "second" {
		t.Fatalf("the first container reads the second's file: %q", out)
	}

	// After the first stops, a new container reads what was copied in.
	must(t, "stop", "-t", "1", c1)
	assertReleased(t, name)
	out = run(t, name, "md5sum /data/in.bin; cat /data/after")
	if !strings.HasPrefix(out, inSum+" ") || !strings.Contains(out, "after-cp") {
		t.Fatalf("a new container after the first stopped: %q", out)
	}

	// docker cp into and out of the stopped container: dockerd mounts its volumes for the copy
	// (a fresh ID) and unmounts them after.
	stoppedSum := randomFile(t, filepath.Join(dir, "stopped.bin"), 512<<10)
	must(t, "cp", filepath.Join(dir, "stopped.bin"), c1+":/data/stopped.bin")
	assertReleased(t, name)
	must(t, "cp", c1+":/data/stopped.bin", filepath.Join(dir, "stopped-out.bin"))
	if got := md5File(t, filepath.Join(dir, "stopped-out.bin")); got != stoppedSum {
		t.Fatalf("docker cp out of the stopped container: %s, want %s", got, stoppedSum)
	}
	assertReleased(t, name)
	if got := md5In(t, run(t, name, "md5sum /data/stopped.bin")); got != stoppedSum {
		t.Fatalf("a new container reads %s of what was copied into the stopped one, want %s", got, stoppedSum)
	}
	must(t, "rm", c1)
	assertReleased(t, name)
}

// --volumes-from gives the second container the first one's mount points (moby
// daemon/volumes.go registerMountPoints: each copied MountPoint is set up with its own ID when
// the container starts), so the plugin sees two IDs on one mapping.
func TestVolumesFrom(t *testing.T) {
	name := uniq("from")
	volume(t, name, "size=256M")
	c1, c2 := uniq("from-src"), uniq("from-dst")
	container(t, c1, "-v", name+":/data")
	must(t, "exec", c1, "sh", "-c", "echo from-c1 > /data/f; sync")
	container(t, c2, "--volumes-from", c1)
	if out := must(t, "exec", c2, "cat", "/data/f"); out != "from-c1" {
		t.Fatalf("--volumes-from container reads %q", out)
	}
	must(t, "exec", c2, "sh", "-c", "echo from-c2 > /data/g; sync")
	if out := must(t, "exec", c1, "cat", "/data/g"); out != "from-c2" {
		t.Fatalf("the source container reads %q of the --volumes-from one's write", out)
	}
	ids := mountIDs(t, name)
	if len(ids) != 2 || ids[0] == ids[1] {
		t.Fatalf("two containers through --volumes-from: mount IDs %v, want two", ids)
	}
	if m := volumeMountsOnHost(name); len(m) != 1 {
		t.Fatalf("the host has mounts %v of the volume, want one", m)
	}
	must(t, "rm", "-f", c2)
	if now := mountIDs(t, name); len(now) != 1 {
		t.Fatalf("after the --volumes-from container left: mount IDs %v", now)
	}
	if out := must(t, "exec", c1, "cat", "/data/g"); out != "from-c2" {
		t.Fatalf("the source container after the other left: %q", out)
	}
	// The data-container pattern: --volumes-from a stopped container.
	must(t, "stop", "-t", "1", c1)
	assertReleased(t, name)
	out := must(t, "run", "--rm", "--network", "none", "--volumes-from", c1, "busybox", "cat", "/data/f", "/data/g")
	if out != "from-c1\nfrom-c2" {
		t.Fatalf("--volumes-from a stopped container reads %q", out)
	}
	assertReleased(t, name)
	must(t, "rm", c1)
}

// volumeEvents lists dockerd's volume events since a time, as "action name" lines.
func volumeEvents(t *testing.T, since time.Time) []string {
	t.Helper()
	out := must(t, "events", "--since", strconv.FormatInt(since.Unix(), 10), "--until", strconv.FormatInt(time.Now().Unix()+1, 10),
		"--filter", "type=volume", "--format", "{{.Action}} {{.Actor.ID}}")
	return strings.Split(out, "\n")
}

var hex64 = regexp.MustCompile(`^[0-9a-f]{64}$`)

// An anonymous volume (`-v /data`) of a --rm container: dockerd names it with 64 hex characters
// (volume/service VolumesService.Create: stringid.GenerateRandomID), creates it with the plugin,
// and removes it when the container is removed, because --rm removes the container's volumes
// that were not given a name (daemon/mounts.go removeMountPoints: `if m.Spec.Source != ""
// continue`, then volumes.Remove). So the plugin's REMOVE_ACTION applies to it.
func TestAnonymousVolumeOfRmContainer(t *testing.T) {
	since := time.Now().Add(-time.Second)
	out := must(t, "run", "--rm", "--network", "none", "--volume-driver", pluginName(), "-v", "/data", "busybox",
		"sh", "-c", "echo anon > /data/f; sync; cat /data/f; grep ' /data ' /proc/mounts")
	if !strings.HasPrefix(out, "anon\n") {
		t.Fatalf("container on an anonymous plugin volume: %q", out)
	}
	var name string
	actions := map[string]int{}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		name, actions = "", map[string]int{}
		for _, ev := range volumeEvents(t, since) {
			action, vol, _ := strings.Cut(ev, " ")
			if hex64.MatchString(vol) {
				if name == "" {
					name = vol
				}
				if vol == name {
					actions[action]++
				}
			}
		}
		if actions["destroy"] > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond) // the removal follows the container's exit
	}
	if name == "" {
		t.Fatalf("no volume event names a 64-hex volume since %v", since)
	}
	record(name)
	t.Logf("anonymous volume %s: events %v", name, actions)
	if actions["create"] != 1 || actions["mount"] != 1 || actions["unmount"] != 1 || actions["destroy"] != 1 {
		t.Fatalf("anonymous volume %s: events %v, want create, mount, unmount and destroy once each", name, actions)
	}
	// It is gone from dockerd and from the plugin (Get looks cluster-wide), and nothing of it
	// is left on this host.
	if out, err := docker(t, time.Minute, "volume", "inspect", name); err == nil || !strings.Contains(strings.ToLower(out), "no such volume") {
		t.Fatalf("volume inspect %s after --rm: %v %s", name, err, out)
	}
	err := pluginClient(t).Call("/VolumeDriver.Get", map[string]string{"Name": name}, nil)
	if pe, ok := err.(*volclient.Error); !ok || !strings.Contains(pe.Msg, "not found") {
		t.Fatalf("the plugin's Get of the removed anonymous volume %s: %v, want not found", name, err)
	}
	if m := volumeMountsOnHost(name); len(m) > 0 {
		t.Fatalf("the removed anonymous volume is still mounted: %v", m)
	}
}

// docker restart: dockerd unmounts the container's volumes when it stops (Cleanup resets the
// mount point's ID when its count reaches 0) and mounts them with a new ID when it starts.
func TestDockerRestart(t *testing.T) {
	name := uniq("rst")
	volume(t, name, "size=256M")
	c := uniq("restarted")
	container(t, c, "-v", name+":/data")
	must(t, "exec", c, "sh", "-c", "echo kept > /data/f; sync")
	before := mountIDs(t, name)
	started := must(t, "inspect", "-f", "{{.State.StartedAt}}", c)
	must(t, "restart", "-t", "1", c)
	if now := must(t, "inspect", "-f", "{{.State.Running}} {{.State.StartedAt}}", c); now == "true "+started || !strings.HasPrefix(now, "true ") {
		t.Fatalf("after docker restart: %q (started %s before)", now, started)
	}
	if out := must(t, "exec", c, "cat", "/data/f"); out != "kept" {
		t.Fatalf("after docker restart the container reads %q", out)
	}
	after := mountIDs(t, name)
	if len(before) != 1 || len(after) != 1 || after[0] == before[0] {
		t.Fatalf("mount IDs before docker restart %v, after %v: want one each, a new one after", before, after)
	}
	must(t, "exec", c, "sh", "-c", "echo again > /data/g; sync")
	must(t, "rm", "-f", c)
	assertReleased(t, name)
}

// restartDockerd stops the private dockerd (SIGTERM: it stops containers and plugins) and starts
// it again with scripts/docker-up.sh.
func restartDockerd(t *testing.T) {
	t.Helper()
	pid := readPID(t, filepath.Join(dockerLab(), "dockerd.pid"))
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for i := 0; syscall.Kill(pid, 0) == nil; i++ {
		if i > 600 {
			t.Fatal("dockerd did not stop in 60s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	top, _ := filepath.Abs("..")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, filepath.Join(top, "scripts", "docker-up.sh")).CombinedOutput(); err != nil {
		t.Fatalf("restart dockerd: %v\n%s", err, out)
	}
}

// serverAPI is dockerd's API version as a number (1.41 for 20.10).
func serverAPI(t *testing.T) float64 {
	v, _ := strconv.ParseFloat(must(t, "version", "-f", "{{.Server.APIVersion}}"), 64)
	return v
}

// docker volume prune never removes a plugin's volume: moby's VolumesService.Prune finds its
// candidates with ByDriver(volume.DefaultDriverName) (volume/service/service.go), in 20.10 as in
// current engines (which also spare named volumes unless --all). A local volume with the same
// label, pruned in the same call, shows the prune ran and matched.
func TestVolumePruneSparesPluginVolumes(t *testing.T) {
	label := "cdp-e2e-prune=" + uniq("p")
	name := uniq("prune")
	record(name)
	must(t, "volume", "create", "--driver", pluginName(), "--label", label, "-o", "size=256M", name)
	t.Cleanup(func() { _, _ = docker(t, 2*time.Minute, "volume", "rm", "-f", name) })
	track(t, name)
	local := uniq("prune-local")
	must(t, "volume", "create", "--label", label, local)
	t.Cleanup(func() { _, _ = docker(t, time.Minute, "volume", "rm", "-f", local) })

	args := []string{"volume", "prune", "-f", "--filter", "label=" + label}
	if serverAPI(t) >= 1.42 {
		args = append(args, "--filter", "all=true") // API 1.42+ prunes only anonymous volumes without it
	}
	out := must(t, args...)
	if !strings.Contains(out, local) || strings.Contains(out, name) {
		t.Fatalf("volume prune: %s\nwant %s (local) removed and %s (plugin) kept", out, local, name)
	}
	if _, err := docker(t, time.Minute, "volume", "inspect", local); err == nil {
		t.Fatalf("the local volume %s survived the prune", local)
	}
	// Still there: dockerd's inspect asks the plugin, which finds it in the backend.
	if st := inspectStatus(t, name); st["size"] == nil {
		t.Fatalf("the plugin volume after the prune: Status %v", st)
	}
}

// startRegistry serves Debian's docker-registry on a free loopback port for the test (both
// engines' suites may run it at once) and returns its address for image references,
// localhost:PORT (which dockerd reaches without TLS).
func startRegistry(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "registry.yml")
	addr := promtest.FreeLoopbackAddr(t)
	if err := os.WriteFile(cfg, []byte("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: "+filepath.Join(dir, "data")+
		"\nhttp:\n  addr: "+addr+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out plugintest.SyncBuffer
	reg := exec.Command("docker-registry", "serve", cfg)
	reg.Stdout, reg.Stderr = &out, &out
	if err := reg.Start(); err != nil {
		t.Fatalf("start docker-registry: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- reg.Wait() }()
	t.Cleanup(func() {
		_ = reg.Process.Kill()
		<-exited
	})
	// A loaded machine (the krbd lab's guests run beside the e2e suites in CI) may take well over
	// 10 s to start it.
	deadline := time.Now().Add(90 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return "localhost:" + strings.TrimPrefix(addr, "127.0.0.1:")
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("docker-registry exited (%v) before it listened on %s:\n%s", err, addr, out.String())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry did not listen on %s within 90 s:\n%s", addr, out.String())
		}
	}
}

// pluginBuild is where scripts/plugin-build.sh built the plugin under test for this engine.
func pluginBuild() string {
	return filepath.Join(dockerLab(), "plugin-build", strings.Split(pluginName(), ":")[0])
}

// builtPlugin is the plugin directory (config.json + rootfs) that make e2e built and created.
func builtPlugin(t *testing.T) string {
	t.Helper()
	built := filepath.Join(pluginBuild(), "plugin")
	if _, err := os.Stat(filepath.Join(built, "config.json")); err != nil {
		t.Fatalf("no built plugin in %s (make e2e builds it): %v", built, err)
	}
	return built
}

// `docker plugin disable` is refused while a container uses a volume. `docker plugin upgrade`
// needs the plugin disabled (moby plugin/backend_linux.go Upgrade: "plugin must be disabled
// before upgrading"); Disable refuses while the plugin's reference count is above zero, and
// dockerd holds one reference per volume of the plugin it knows, used or not (volume/service
// store.go create -> drivers.CreateDriver acquires, purge releases). So an upgrade is
// `disable -f` once no container uses the volumes, upgrade, enable, as Docker's own docs show.
// The plugin keeps its ID, settings and propagated mount (where STATE_DIR is) across it
// (upgradePlugin replaces only rootfs and config), and the volumes keep their data.
func TestPluginDisableInUseAndUpgrade(t *testing.T) {
	built := builtPlugin(t)
	name := uniq("upg")
	volume(t, name, "size=256M")
	c := uniq("upg-user")
	container(t, c, "-v", name+":/data")
	must(t, "exec", c, "sh", "-c", "dd if=/dev/urandom of=/data/blob bs=1M count=2 2>/dev/null; md5sum /data/blob > /data/blob.md5; sync")
	out := mustFail(t, "plugin", "disable", pluginName())
	if !strings.Contains(out, "in use") {
		t.Fatalf("plugin disable while a container uses a volume: %s", out)
	}
	if now := mountIDs(t, name); len(now) != 1 {
		t.Fatalf("after the refused disable: mount IDs %v", now)
	}
	must(t, "rm", "-f", c)
	assertReleased(t, name)
	// No container uses it now, but dockerd still knows the volume: measured on 20.10.
	out, err := docker(t, time.Minute, "plugin", "disable", pluginName())
	if err == nil {
		_, _ = docker(t, time.Minute, "plugin", "enable", "--timeout", "120", pluginName())
		t.Fatalf("plugin disable without -f succeeded while dockerd knows volume %s (expected moby's per-volume reference to refuse it): %s", name, out)
	}
	if !strings.Contains(out, "in use") {
		t.Fatalf("plugin disable with an unused volume: %s", out)
	}

	id := pluginID(t)
	settings := must(t, "plugin", "inspect", "-f", "{{json .Settings.Env}}", pluginName())
	dataRoot := os.Getenv("DOCKER_DATA_ROOT")
	stateDir := filepath.Join(dataRoot, "plugins", id, "propagated-mount", ".state")
	stBefore, err := os.Stat(stateDir)
	if err != nil {
		t.Fatalf("the plugin's STATE_DIR on the host: %v", err)
	}
	// The rebuilt plugin: the same build with one file changed (dockerd also refuses a second
	// plugin whose rootfs layer is byte-identical to an installed one's).
	registry := startRegistry(t)
	variant := filepath.Join(t.TempDir(), "plugin")
	if out, err := exec.Command("cp", "-a", built, variant).CombinedOutput(); err != nil {
		t.Fatalf("copy plugin: %v %s", err, out)
	}
	mark := uniq("upgraded")
	if err := os.WriteFile(filepath.Join(variant, "rootfs", "etc", "ceph-docker-plugin-upgrade"), []byte(mark+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := registry + "/ceph-upgrade:" + mark
	must(t, "plugin", "create", ref, variant)
	must(t, "plugin", "push", ref)
	must(t, "plugin", "rm", ref)

	must(t, "plugin", "disable", "-f", pluginName())
	t.Cleanup(func() { _, _ = docker(t, time.Minute, "plugin", "enable", "--timeout", "120", pluginName()) })
	must(t, "plugin", "upgrade", "--grant-all-permissions", "--skip-remote-check", pluginName(), ref)
	start := time.Now()
	must(t, "plugin", "enable", "--timeout", "120", pluginName())
	t.Logf("upgraded plugin enabled in %v", time.Since(start).Round(100*time.Millisecond))

	if now := pluginID(t); now != id {
		t.Fatalf("the plugin's ID changed across the upgrade: %s -> %s", id, now)
	}
	if got := must(t, "plugin", "inspect", "-f", "{{.PluginReference}}", pluginName()); !strings.Contains(got, mark) {
		t.Fatalf("plugin reference after the upgrade: %s, want %s", got, ref)
	}
	if b, err := os.ReadFile(filepath.Join(dataRoot, "plugins", id, "rootfs", "etc", "ceph-docker-plugin-upgrade")); err != nil || strings.TrimSpace(string(b)) != mark {
		t.Fatalf("the plugin's rootfs is not the upgraded one: %q, %v", b, err)
	}
	if now := must(t, "plugin", "inspect", "-f", "{{json .Settings.Env}}", pluginName()); now != settings {
		t.Fatalf("settings changed across the upgrade: %v", changedKeys(settings, now)) // names only: values hold OS_PASSWORD
	}
	stAfter, err := os.Stat(stateDir)
	if err != nil || !os.SameFile(stBefore, stAfter) {
		t.Fatalf("STATE_DIR %s is not the same directory after the upgrade: %v", stateDir, err)
	}
	if ls := must(t, "volume", "ls", "-q", "--filter", "driver="+pluginName()); !strings.Contains(ls, name) {
		t.Fatalf("volume ls after the upgrade does not list %s:\n%s", name, ls)
	}
	if out := run(t, name, "md5sum -c /data/blob.md5"); !strings.Contains(out, "/data/blob: OK") {
		t.Fatalf("data after the upgrade: %s", out)
	}
	assertReleased(t, name)
}

// changedKeys names the settings (JSON lists of KEY=VALUE) that differ between a and b.
func changedKeys(a, b string) []string {
	var la, lb []string
	_ = json.Unmarshal([]byte(a), &la)
	_ = json.Unmarshal([]byte(b), &lb)
	vals := map[string]string{}
	for _, kv := range la {
		k, v, _ := strings.Cut(kv, "=")
		vals[k] = v
	}
	var out []string
	for _, kv := range lb {
		k, v, _ := strings.Cut(kv, "=")
		if old, ok := vals[k]; !ok || old != v {
			out = append(out, k)
		}
		delete(vals, k)
	}
	for k := range vals {
		out = append(out, k)
	}
	return out
}

// Labels of `docker volume create --label` are dockerd's: it keeps them in its own metadata
// database (<data-root>/volumes/metadata.db, volume/service/store.go setMeta) and shows them in
// `docker volume inspect`; docker.volumedriver/1.0's Create carries only Name and Opts, so the
// plugin, Ceph/Cinder and other hosts never see them. A second create of the name with other
// labels is answered from dockerd's cache and keeps the first ones (store.go create: "TODO:
// there could be some inconsistent details such as labels here").
func TestVolumeLabels(t *testing.T) {
	name := uniq("lbl")
	owner := uniq("owner")
	record(name)
	must(t, "volume", "create", "--driver", pluginName(), "--label", "cdp.e2e=yes", "--label", "owner="+owner, "-o", "size=256M", name)
	t.Cleanup(func() { _, _ = docker(t, 2*time.Minute, "volume", "rm", "-f", name) })
	track(t, name)
	want := `{"cdp.e2e":"yes","owner":"` + owner + `"}`
	if got := must(t, "volume", "inspect", "-f", "{{json .Labels}}", name); got != want {
		t.Fatalf("labels in volume inspect: %s, want %s", got, want)
	}
	if ls := must(t, "volume", "ls", "-q", "--filter", "label=owner="+owner); ls != name {
		t.Fatalf("volume ls --filter label=owner=%s: %q", owner, ls)
	}
	db, err := os.ReadFile(filepath.Join(os.Getenv("DOCKER_DATA_ROOT"), "volumes", "metadata.db"))
	if err != nil || !bytes.Contains(db, []byte(owner)) {
		t.Fatalf("dockerd's volume metadata database does not hold the label (%v)", err)
	}
	var got struct {
		Volume struct{ Status map[string]any }
	}
	if err := pluginClient(t).Call("/VolumeDriver.Get", map[string]string{"Name": name}, &got); err != nil {
		t.Fatal(err)
	}
	if raw, _ := json.Marshal(got.Volume.Status); bytes.Contains(raw, []byte(owner)) || bytes.Contains(raw, []byte("cdp.e2e")) {
		t.Fatalf("the plugin's Get shows the labels, which dockerd never sends it: %s", raw)
	}
	must(t, "volume", "create", "--driver", pluginName(), "--label", "owner=someone-else", "-o", "size=256M", name)
	if got := must(t, "volume", "inspect", "-f", "{{json .Labels}}", name); got != want {
		t.Fatalf("labels after a second create with other labels: %s, want still %s", got, want)
	}
}

// otherHost is a second instance of the plugin binary outside dockerd, standing for another host
// (as the cmd harness does): its own socket, mount root, state and NODE_NAME, on the same Ceph
// (and Cinder).
type otherHost struct {
	*plugintest.Process
	node   string
	client *volclient.Client
}

func startOtherHost(t *testing.T) *otherHost {
	t.Helper()
	bin := filepath.Join(pluginBuild(), "ctx", "ceph-docker-plugin")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("the plugin binary make e2e built: %v", err)
	}
	dir, err := os.MkdirTemp("", "cdp-e2e-other-")
	if err != nil {
		t.Fatal(err)
	}
	node := plugintest.Uniq("e2e-other")
	env := plugintest.MustEnvFile(t, filepath.Join(plugintest.LabDir(), "ceph", "env")).List()
	if cinderMode() {
		env = append(env, plugintest.MustEnvFile(t, filepath.Join(plugintest.LabDir(), "openstack", "env")).List()...)
		env = append(env, "BACKEND=cinder")
	}
	p := plugintest.NewProcess(bin, dir, node, 90*time.Second,
		append(env, "STATE_DIR="+filepath.Join(dir, "mnt", ".state"), "LOG_LEVEL=debug")...)
	h := &otherHost{Process: p, node: node, client: p.Client}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s's log:\n%s", h.node, h.Logs())
		}
		h.stop()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		h.CleanHost(ctx)
		os.RemoveAll(dir)
	})
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.WaitReady(time.Minute, 100*time.Millisecond, func() bool {
		var resp map[string]any
		return h.Call("/VolumeDriver.List", struct{}{}, &resp) == nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, h.Logs())
	}
	return h
}

func (h *otherHost) stop() { h.Stop(15 * time.Second) }

// `docker volume inspect` of a volume another host holds answers (Get is cluster-wide) and names
// the holder; a container here is refused naming it, and nothing is left on this host; once the
// other host lets go, a container here gets the data it wrote.
func TestInspectWhileAnotherHostHolds(t *testing.T) {
	name := uniq("held")
	volume(t, name, "size=1G")
	other := startOtherHost(t)
	var mr struct{ Mountpoint string }
	const otherID = "e2e-other-mount"
	if err := other.client.Call("/VolumeDriver.Mount", map[string]string{"Name": name, "ID": otherID}, &mr); err != nil {
		t.Fatalf("mount on %s: %v", other.node, err)
	}
	released := false
	t.Cleanup(func() {
		if !released {
			_ = other.client.Call("/VolumeDriver.Unmount", map[string]string{"Name": name, "ID": otherID}, nil)
		}
	})
	if err := os.WriteFile(filepath.Join(mr.Mountpoint, "from-other"), []byte(other.node+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	st := inspectStatus(t, name)
	if h, _ := st["holder"].(string); !strings.Contains(h, other.node) || st["device"] != nil || st["mounts"] != nil {
		t.Fatalf("volume inspect while %s holds it: Status %v, want the holder named and no local mount", other.node, st)
	}
	t.Logf("volume inspect while another host holds it: holder %q", st["holder"])
	start := time.Now()
	out := mustFail(t, "run", "--rm", "--network", "none", "-v", name+":/data", "busybox", "true")
	if !strings.Contains(out, other.node) || !strings.Contains(out, name) {
		t.Fatalf("a container here while %s holds the volume: %s", other.node, out)
	}
	t.Logf("refused after %v: %s", time.Since(start).Round(100*time.Millisecond), out)
	out = mustFail(t, "volume", "rm", name)
	if !strings.Contains(out, "in use") || !strings.Contains(out, other.node) {
		t.Fatalf("volume rm while %s holds it: %s", other.node, out)
	}
	if m := volumeMountsOnHost(name); len(m) > 0 {
		t.Fatalf("the refused mount left %v on this host", m)
	}
	if err := other.client.Call("/VolumeDriver.Unmount", map[string]string{"Name": name, "ID": otherID}, nil); err != nil {
		t.Fatalf("unmount on %s: %v", other.node, err)
	}
	released = true
	other.stop()
	if out := run(t, name, "cat /data/from-other"); out != other.node {
		t.Fatalf("after %s let go, a container here reads %q", other.node, out)
	}
	assertReleased(t, name)
}

// A missed Unmount (dockerd crashed or lost a container's mount point count; moby's
// MountPoint.Cleanup skips Unmount when it finds the count at zero) leaves the mount ID counted:
// the plugin keeps the volume mounted and held by this host, so no other host can map it under
// a container that may still be writing. The operator sees the ID in `docker volume inspect`,
// `docker volume rm` refused, and releases it by calling Unmount with that ID on the plugin's
// socket (README: "When dockerd gets it wrong").
func TestMissedUnmountKeepsVolumeHeld(t *testing.T) {
	name := uniq("missed")
	volume(t, name, "size=256M")
	pc := pluginClient(t)
	lost := "e2e-lost-" + hex.EncodeToString([]byte(name))[:12]
	if err := pc.Call("/VolumeDriver.Mount", map[string]string{"Name": name, "ID": lost}, nil); err != nil {
		t.Fatal(err)
	}
	released := false
	t.Cleanup(func() {
		if !released {
			_ = pc.Call("/VolumeDriver.Unmount", map[string]string{"Name": name, "ID": lost}, nil)
		}
	})
	if ids := mountIDs(t, name); len(ids) != 1 || ids[0] != lost {
		t.Fatalf("mount IDs %v, want [%s]", ids, lost)
	}
	if out := run(t, name, "echo held > /data/f; cat /data/f"); out != "held" {
		t.Fatalf("a container on the volume held by a lost ID: %q", out)
	}
	if ids := mountIDs(t, name); len(ids) != 1 || ids[0] != lost {
		t.Fatalf("after the container left: mount IDs %v, want [%s] (the volume stays held)", ids, lost)
	}
	if m := volumeMountsOnHost(name); len(m) != 1 {
		t.Fatalf("the volume held by a lost ID is mounted %v on the host, want once", m)
	}
	out := mustFail(t, "volume", "rm", name)
	if !strings.Contains(out, "mounted on this host") {
		t.Fatalf("volume rm of a volume held by a lost ID: %s", out)
	}
	if err := pc.Call("/VolumeDriver.Unmount", map[string]string{"Name": name, "ID": lost}, nil); err != nil {
		t.Fatalf("the README's remedy, Unmount with the lost ID: %v", err)
	}
	released = true
	assertReleased(t, name)
}
