//go:build lab && labdocker

package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Two docker guests as a two-node swarm (make lab-swarm): the manager (swarm-a) and a worker
// (swarm-b) on a link of their own (a QEMU dgram netdev over the host's loopback, 10.0.3.0/24 in
// the guests), both reaching the host's Ceph through slirp as the docker guest does.

// bakedRoot returns a qcow2 overlay of the docker guest's root disk in which the managed plugins
// are already created (the volume plugin and the CSI plugin, disabled, with the settings every
// node shares) and busybox imported. `docker
// plugin create` costs 2-5 min under TCG: it is paid once per root image and plugin build, not
// once per guest. The overlay sits beside the root image and is rebuilt when either changes.
func bakedRoot(t *testing.T, e dockerGuestEnv) string {
	t.Helper()
	dir := filepath.Dir(e.root)
	img, sumFile := filepath.Join(dir, "root-plugin.qcow2"), filepath.Join(dir, "root-plugin.sum")
	key := fmt.Sprintf("v2 root=%s plugin=%s user=%s pool=%s", strings.TrimSpace(readFile(filepath.Join(dir, "root.sum"))),
		fileSHA256(t, e.pluginTar), lab.user, lab.pool)
	if readFile(sumFile) == key {
		if _, err := os.Stat(img); err == nil {
			return img
		}
	}
	t0 := time.Now()
	_ = os.Remove(sumFile)
	tmp := img + ".new"
	_ = os.Remove(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", e.root, tmp).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create %s: %v: %s", tmp, err, out)
	}
	g, start := startDocker(t, e, "lab-bake", dockerBoot{root: tmp, format: "qcow2", writable: true})
	waitDockerGuest(t, g, start)
	dk(g, 2*time.Minute, "import", "/opt/lab/busybox.tar", "busybox:lab")
	_, create := createPlugin(t, g)
	dk(g, time.Minute, "plugin", "set", dockerPlugin, "MAPPER=krbd", "CEPH_USER="+lab.user, "RBD_POOL="+lab.pool,
		"DEFAULT_SIZE=256M", "LOG_LEVEL=debug")
	csiCreate := createCSIPlugin(t, g)
	dk(g, time.Minute, "plugin", "set", csiPlugin, "MAPPER=krbd", "CEPH_USER="+lab.user, "RBD_POOL="+lab.pool,
		"DEFAULT_SIZE=256M", "LOG_LEVEL=debug")
	// Each guest booted from the overlay must get an engine ID of its own.
	g.sh("lab-dockerd stop && rm -f /var/lib/docker/engine-id && sync")
	g.powerOff()
	if err := os.Rename(tmp, img); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sumFile, []byte(key), 0o644); err != nil {
		t.Fatal(err)
	}
	step(t, "baked %s (plugins created in %.1fs and %.1fs) in %.1fs", img, create.Seconds(), csiCreate.Seconds(), time.Since(t0).Seconds())
	return img
}

// fileSHA256 returns the hex SHA-256 of a host file.
func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// freeUDPPort returns a UDP port on 127.0.0.1 that was free a moment ago.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// swarmLink returns the QEMU arguments of a point-to-point link between two guests: a second NIC
// in each, joined by UDP datagrams on the host's loopback (QEMU's dgram netdev: no bridge, no tap).
func swarmLink(t *testing.T) ([]string, []string) {
	pa, pb := freeUDPPort(t), freeUDPPort(t)
	nic := func(local, remote int, mac string) []string {
		return []string{"-netdev", fmt.Sprintf("dgram,id=n1,local.type=inet,local.host=127.0.0.1,local.port=%d,remote.type=inet,remote.host=127.0.0.1,remote.port=%d", local, remote),
			"-device", "virtio-net-pci,netdev=n1,mac=" + mac}
	}
	return nic(pa, pb, "52:54:00:0a:03:01"), nic(pb, pa, "52:54:00:0a:03:02")
}

// cephRouteAhead keeps the guest's way to the host's 127.0.0.1 (through slirp) when its lo comes
// up. The guest's init leaves lo down so that 127/8 is not local; but a service task on the host
// network brings lo up (seen on the worker: lo up with 127.0.0.1/8 once its task was prepared, and
// the plugin's calls to Ceph timing out), and the local table then takes 127/8 before the route via
// slirp. A rule ahead of the local table sends 127/8 to the main table's route instead.
func cephRouteAhead(g *guest) {
	g.sh("ip rule add pref 10 to 127.0.0.0/8 lookup main && ip rule add pref 100 lookup local && ip rule del pref 0 lookup local")
}

// swarmWriter is the service's command: records of 4 KiB of random data written at block i-1 of
// /data/data, each fsynced, then "i sha256 node" appended to /data/sums and fsynced. One write is
// in flight at a time, so every record but the last one a reader sees has been fsynced. It
// carries on from the records already there: a task that moved continues the numbering.
const swarmWriter = `touch /data/sums; i=$(wc -l </data/sums); echo "$NODE starts after record $i"
while :; do i=$((i+1)); head -c 4096 /dev/urandom >/tmp/r || exit 1
dd if=/tmp/r of=/data/data bs=4096 seek=$((i-1)) conv=notrunc,fsync 2>/dev/null || exit 1
echo "$i $(sha256sum </tmp/r | cut -c1-64) $NODE" | dd of=/data/sums oflag=append conv=notrunc,fsync 2>/dev/null || exit 1
done`

// serviceTasks returns "node state" of each task of svc that swarm wants running.
func serviceTasks(g *guest, svc string) []string {
	res := g.run(30*time.Second, "docker", "service", "ps", svc, "--filter", "desired-state=running", "--format", "{{.Node}} {{.CurrentState}}")
	return strings.Split(strings.TrimSpace(res.Stdout), "\n")
}

// runningOn tells whether one of tasks runs on node.
func runningOn(tasks []string, node string) bool {
	return slices.ContainsFunc(tasks, func(l string) bool { return strings.HasPrefix(l, node+" Running") })
}

// guestClockOffset returns how far the guest's clock is behind the host's (host - guest).
func guestClockOffset(t *testing.T, g *guest) time.Duration {
	t.Helper()
	before := time.Now()
	out := strings.TrimSpace(g.sh("date +%s.%N"))
	after := time.Now()
	f, err := strconv.ParseFloat(out, 64)
	if err != nil {
		t.Fatalf("%s: date: %q", g.name, out)
	}
	mid := before.Add(after.Sub(before) / 2)
	return mid.Sub(time.Unix(0, int64(f*1e9)))
}

// dockerdLogTime returns the time= of the first line of a guest's dockerd log holding what
// (host clock, given the guest's clock offset); zero if none.
func dockerdLogTime(t *testing.T, g *guest, what string, off time.Duration) (time.Time, string) {
	t.Helper()
	for _, l := range strings.Split(g.sh("cat /var/log/dockerd.log"), "\n") {
		if !strings.Contains(l, what) {
			continue
		}
		m := regexp.MustCompile(`^time="([^"]+)"`).FindStringSubmatch(l)
		if m == nil {
			continue
		}
		ts, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			t.Fatalf("dockerd log time %q: %v", m[1], err)
		}
		return ts.Add(off), l
	}
	return time.Time{}, ""
}

// fencedInDockerd extracts the fenced clients from the plugin's takeover line as dockerd logged it
// (the plugin's line quoted inside dockerd's msg="...").
var fencedInDockerd = regexp.MustCompile(`fenced=\\"\[([^\]]*)\]\\"`)

// startSwarm boots two docker guests from the baked root on a link of their own, enables plugin
// (whose socket is sock) on both with LOCK_BREAK=on, and makes them a swarm: manager swarm-a,
// worker swarm-b. The busybox image is tagged swarmImage on both.
func startSwarm(t *testing.T, e dockerGuestEnv, plugin, sock string) (*guest, *guest) {
	t.Helper()
	root := bakedRoot(t, e)
	la, lb := swarmLink(t)
	a, sa := startDocker(t, e, "swarm-a", dockerBoot{root: root, format: "qcow2", qemu: la})
	b, sb := startDocker(t, e, "swarm-b", dockerBoot{root: root, format: "qcow2", qemu: lb})
	for _, n := range []struct {
		g     *guest
		start time.Time
		ip    string
	}{{a, sa, "10.0.3.1"}, {b, sb, "10.0.3.2"}} {
		agentUp, dockerUp := waitDockerGuest(t, n.g, n.start)
		n.g.sh("ip link set eth1 up && ip addr add " + n.ip + "/24 dev eth1")
		cephRouteAhead(n.g)
		uploadCephFiles(t, n.g)
		dk(n.g, time.Minute, "plugin", "set", plugin, "NODE_NAME="+n.g.name, "LOCK_BREAK=on")
		enable := enablePluginNamed(t, n.g, plugin, sock)
		step(t, "%s (%s on the swarm link): agent after %.1fs, dockerd after %.1fs, plugin %s enabled (LOCK_BREAK=on) in %.1fs",
			n.g.name, n.ip, agentUp.Seconds(), dockerUp.Seconds(), plugin, enable.Seconds())
	}
	t0 := time.Now()
	dk(a, 2*time.Minute, "swarm", "init", "--advertise-addr", "10.0.3.1", "--listen-addr", "10.0.3.1:2377")
	token := dk(a, time.Minute, "swarm", "join-token", "-q", "worker")
	// A slow join (a loaded host) goes on in the background after the CLI's 20 s; the wait for
	// both nodes Ready covers it.
	join := b.run(3*time.Minute, "docker", "swarm", "join", "--token", token, "--advertise-addr", "10.0.3.2", "--listen-addr", "10.0.3.2:2377", "10.0.3.1:2377")
	if join.Code != 0 && !strings.Contains(join.Stderr, "will continue in the background") {
		t.Fatalf("swarm-b: docker swarm join: exit %d %s%s", join.Code, join.Stdout, join.Stderr)
	}
	waitFor(t, 4*time.Minute, "both nodes Ready", func() bool {
		return strings.Count(a.run(30*time.Second, "docker", "node", "ls", "--format", "{{.Hostname}} {{.Status}}").Stdout, " Ready") == 2
	})
	heartbeat := dk(a, time.Minute, "info", "--format", "{{.Swarm.Cluster.Spec.Dispatcher.HeartbeatPeriod}}")
	step(t, "two-node swarm over the link in %.1fs (manager swarm-a, worker swarm-b; dispatcher heartbeat %s)", time.Since(t0).Seconds(), heartbeat)
	// Swarm's agent pulls a task's image before it creates the container, falling back to the
	// local one when the pull fails: a name whose registry refuses at once (port 1 of the host's
	// loopback) keeps the lab's missing DNS (a lookup that times out) out of the figures.
	for _, g := range []*guest{a, b} {
		dk(g, time.Minute, "tag", "busybox:lab", swarmImage)
	}
	return a, b
}

// swarmImage is the task image of the swarm tests (see startSwarm).
const swarmImage = "127.0.0.1:1/lab/busybox:lab"

// TestDockerSwarmFailover: a service with a per-slot volume (MAPPER=krbd, LOCK_BREAK=on) writes
// with fsync on the worker; the worker is powered off mid-write; swarm reschedules the task on the
// manager, whose plugin fences the dead node and maps the volume; the task carries on with its
// data. Checked: every fsynced record intact, e2fsck clean, the dead node's clients blocklisted,
// and the time from power-off to the task running again, in parts.
func TestDockerSwarmFailover(t *testing.T) {
	e := dockerGuestEnvOf(t)
	total := time.Now()
	a, b := startSwarm(t, e, dockerPlugin, "ceph.sock")

	prefix := uniq("lab-db")
	svc, vol := prefix, prefix+".1"
	t.Cleanup(func() {
		if a.alive() {
			a.run(time.Minute, "docker", "service", "rm", svc)
			a.run(2*time.Minute, "sh", "-c", "for i in $(seq 60); do [ -z \"$(docker ps -aq --filter label=com.docker.swarm.service.name="+svc+")\" ] && break; sleep 1; done; docker volume rm -f "+vol)
		}
		removeImage(t, vol)
	})
	// The task must start on the worker: the manager has to survive to reschedule it.
	dk(a, time.Minute, "node", "update", "--availability", "drain", "swarm-a")
	t0 := time.Now()
	dk(a, 3*time.Minute, "service", "create", "--detach", "--name", svc, "--replicas", "1", "--network", "host",
		"--no-resolve-image", "--stop-grace-period", "2s", "--env", "NODE={{.Node.Hostname}}",
		"--mount", "type=volume,src="+prefix+".{{.Task.Slot}},dst=/data,volume-driver="+dockerPlugin,
		swarmImage, "sh", "-c", swarmWriter)
	waitFor(t, 5*time.Minute, "the task to run on swarm-b", func() bool { return runningOn(serviceTasks(a, svc), "swarm-b") })
	step(t, "service %s: task running on swarm-b after %.1fs (volume %s created and mounted there)", svc, time.Since(t0).Seconds(), vol)
	dk(a, time.Minute, "node", "update", "--availability", "active", "swarm-a")

	dev, mp := assertMapped(t, b, vol)
	kclient := strings.TrimSpace(b.sh("cat /sys/bus/rbd/devices/*/client_addr"))
	waitFor(t, 3*time.Minute, "50 records on swarm-b", func() bool {
		return strings.Count(b.run(10*time.Second, "cat", mp+"/sums").Stdout, "\n") >= 50
	})
	watchers := strings.TrimSpace(mustAdmin(t, "rbd", "status", lab.pool+"/"+vol))
	// The manager's debug log says when the dispatcher declares the worker down (dockerd reloads
	// "debug" from daemon.json on SIGHUP).
	a.sh(`mkdir -p /etc/docker && echo '{"debug": true}' >/etc/docker/daemon.json && kill -HUP "$(cat /run/lab-dockerd.pid)"`)
	aOff := guestClockOffset(t, a)
	seen := strings.Split(strings.TrimSpace(b.sh("cat "+mp+"/sums")), "\n")
	down := time.Now()
	b.powerOff()
	step(t, "swarm-b powered off (QEMU killed) mid-write: %d records read on %s just before (kernel client %s; rbd status: %s)",
		len(seen), dev, kclient, strings.ReplaceAll(watchers, "\n", "; "))

	// Poll the manager: when it sees the node down, when a new task is placed on swarm-a, when it runs.
	var nodeDown, placed, running time.Duration
	deadline := time.Now().Add(6 * time.Minute)
	for running == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the task did not run on swarm-a within 6 min of the power-off: %q\n%s", serviceTasks(a, svc),
				a.run(30*time.Second, "docker", "service", "ps", "--no-trunc", svc).Stdout)
		}
		res := a.run(30*time.Second, "sh", "-c", "docker node inspect swarm-b --format '{{.Status.State}}'; docker service ps "+svc+
			" --filter desired-state=running --format '{{.Node}} {{.CurrentState}}'")
		at := time.Since(down)
		lines := strings.Split(strings.TrimSpace(res.Stdout), "\n")
		if nodeDown == 0 && len(lines) > 0 && lines[0] == "down" {
			nodeDown = at
		}
		if placed == 0 && slices.ContainsFunc(lines[1:], func(l string) bool { return strings.HasPrefix(l, "swarm-a ") }) {
			placed = at
		}
		if runningOn(lines[1:], "swarm-a") {
			running = at
		}
		time.Sleep(500 * time.Millisecond)
	}
	takeover, fenced := takeoverOf(t, a, aOff)
	step(t, "power-off -> task running on swarm-a with its volume, seen by polling the manager: %.1fs (node down seen at %.1fs, the new task on swarm-a at %.1fs)",
		running.Seconds(), nodeDown.Seconds(), placed.Seconds())
	// The same, from the guests' own records (swarm-a's clock, brought to the host's).
	since := func(at time.Time) string {
		if at.IsZero() {
			return "?"
		}
		return fmt.Sprintf("%.1fs", at.Sub(down).Seconds())
	}
	expired, _ := dockerdLogTime(t, a, "heartbeat expiration for worker", aOff)
	task := strings.Fields(dk(a, time.Minute, "service", "ps", svc, "--filter", "desired-state=running", "--filter", "node=swarm-a", "-q", "--no-trunc"))
	if len(task) != 1 {
		t.Fatalf("tasks of %s on swarm-a: %v", svc, task)
	}
	var created, started time.Time
	if f := strings.Fields(dk(a, time.Minute, "inspect", "--format", "{{.CreatedAt.Format \"2006-01-02T15:04:05.999999999Z07:00\"}} {{.Status.Timestamp.Format \"2006-01-02T15:04:05.999999999Z07:00\"}}", task[0])); len(f) == 2 {
		created, _ = time.Parse(time.RFC3339Nano, f[0])
		started, _ = time.Parse(time.RFC3339Nano, f[1])
		created, started = created.Add(aOff), started.Add(aOff)
	}
	mounted, _ := dockerdLogTime(t, a, "first mount: time per step", aOff)
	pullFailed, _ := dockerdLogTime(t, a, "pulling image failed", aOff)
	// The Mount's arrival: its "request done" line's time less the duration it gives.
	var mountCalled time.Time
	if at, l := dockerdLogTime(t, a, `op=mount volume=`+vol, aOff); l != "" {
		if m := regexp.MustCompile(`duration=(\S+?)\s`).FindStringSubmatch(l); m != nil {
			if d, err := time.ParseDuration(m[1]); err == nil {
				mountCalled = at.Add(-d)
			}
		}
	}
	step(t, "timeline after the power-off (swarm-a's logs and task record): heartbeat expired, swarm-b marked down %s; new task created %s; image pull tried and failed (no registry here) %s; Mount called %s; the plugin took the volume over (swarm-b's watch had lapsed) %s; volume mounted %s; task running %s; fenced %v",
		since(expired), since(created), since(pullFailed), since(mountCalled), since(takeover), since(mounted), since(started), fenced)

	assertFenced(t, fenced, kclient)

	// The moved task carries on from the records it finds.
	assertWritesOnA(t, a, vol)

	// Stop the service, then check the image from the host: e2fsck, and every record.
	t0 = time.Now()
	dk(a, time.Minute, "service", "rm", svc)
	assertNoRBD(t, a, "after service rm")
	step(t, "service removed, volume released on swarm-a in %.1fs", time.Since(t0).Seconds())
	checkSwarmRecords(t, vol, seen)
	step(t, "total %.1fs", time.Since(total).Seconds())
}

// takeoverOf returns when the plugin on g took a volume over from a dead holder (host clock, given
// g's clock offset) and the clients it fenced, from its line in g's dockerd log.
func takeoverOf(t *testing.T, g *guest, off time.Duration) (time.Time, []string) {
	t.Helper()
	at, line := dockerdLogTime(t, g, "took the volume over from a dead holder", off)
	if line == "" {
		t.Fatalf("%s's dockerd log has no takeover line from the plugin", g.name)
	}
	m := fencedInDockerd.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no fenced=[...] in the takeover line: %s", line)
	}
	return at, strings.Fields(m[1])
}

// assertFenced checks that the dead node's kernel client is among the clients the plugin fenced,
// and that each of them is in Ceph's blocklist.
func assertFenced(t *testing.T, fenced []string, kclient string) {
	t.Helper()
	if !slices.Contains(fenced, kclient) {
		t.Errorf("the plugin fenced %v, not swarm-b's kernel client %s", fenced, kclient)
	}
	bl := blocklist(t)
	for _, c := range fenced {
		if !slices.Contains(bl, c) {
			t.Errorf("fenced client %s is not in ceph osd blocklist ls: %v", c, bl)
		}
	}
	step(t, "ceph osd blocklist ls holds swarm-b's clients %v (kernel client %s among them)", fenced, kclient)
}

// checkSwarmRecords checks a swarmWriter volume from the host after its task moved from swarm-b
// to swarm-a: e2fsck clean, every block's sha256 as its record says, the records numbered without
// a gap, every record swarm-b showed before it died (but the last, which may have been in flight)
// there, and at least 20 written on swarm-a.
func checkSwarmRecords(t *testing.T, vol string, seen []string) {
	t.Helper()
	exp := filepath.Join(t.TempDir(), "vol.img")
	mustAdmin(t, "rbd", "export", "--no-progress", lab.pool+"/"+vol, exp)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "e2fsck", "-f", "-n", exp).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -f -n of %s after the move: %v\n%s", vol, err, out)
	} else {
		step(t, "e2fsck -f -n: clean (%s)", strings.TrimSpace(lastLine(string(out))))
	}
	sums := debugfsCat(t, exp, "/sums")
	data := debugfsCat(t, exp, "/data")
	recs := strings.Split(strings.TrimSpace(sums), "\n")
	byNode, firstA := map[string]int{}, 0
	for i, r := range recs {
		f := strings.Fields(r)
		if len(f) != 3 || f[0] != strconv.Itoa(i+1) {
			t.Fatalf("record %d is %q: records lost, torn or reordered", i+1, r)
		}
		if (i+1)*4096 > len(data) {
			t.Fatalf("record %d: /data holds only %d bytes", i+1, len(data))
		}
		h := sha256.Sum256([]byte(data[i*4096 : (i+1)*4096]))
		if hex.EncodeToString(h[:]) != f[1] {
			t.Errorf("record %d (%s): the block's sha256 is %x, the record says %s", i+1, f[2], h, f[1])
		}
		byNode[f[2]]++
		if f[2] == "swarm-a" && firstA == 0 {
			firstA = i + 1
		}
	}
	// Every record swarm-b had fsynced (all it showed but the last, which may have been in flight).
	for i, r := range seen[:len(seen)-1] {
		if i >= len(recs) || recs[i] != r {
			t.Errorf("record %d fsynced on swarm-b (%q) is not what the volume holds after the move", i+1, r)
			break
		}
	}
	if byNode["swarm-b"] < len(seen)-1 || byNode["swarm-a"] < 20 {
		t.Errorf("records by node: %v; want at least %d by swarm-b and 20 by swarm-a", byNode, len(seen)-1)
	}
	step(t, "%d records, every block's sha256 as recorded (%d by swarm-b, %d by swarm-a, numbering continued at %d); the %d swarm-b showed before the power-off are there",
		len(recs), byNode["swarm-b"], byNode["swarm-a"], firstA, len(seen))
}

// debugfsCat returns a file's contents from an ext4 image (read without mounting it).
func debugfsCat(t *testing.T, img, path string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "debugfs", "-R", "cat "+path, img).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return string(out)
}

func lastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return l[len(l)-1]
}

// assertWritesOnA checks that the moved task writes vol on swarm-a: mapped there, and 20 records of
// swarm-a's in its sums file.
func assertWritesOnA(t *testing.T, a *guest, vol string) {
	t.Helper()
	dev, mp := assertMapped(t, a, vol)
	waitFor(t, 3*time.Minute, "20 records written on swarm-a", func() bool {
		return strings.Count(a.run(10*time.Second, "cat", mp+"/sums").Stdout, " swarm-a\n") >= 20
	})
	step(t, "the task writes on swarm-a through %s", dev)
}
