//go:build lab && labdocker

package lab

import (
	"crypto/rand"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The docker guest (make lab-docker): a Debian guest (scripts/lab-docker-build.sh) whose own stock
// kernel has rbd.ko, running containerd + dockerd; the tests create the real managed plugin in it
// from the rootfs scripts/plugin-build.sh built (a raw disk holding its tar), with MAPPER=krbd, and
// drive everything through the real docker CLI in the guest (via the lab agent's /exec).

// dockerGuestEnv is what scripts/lab-docker-build.sh wrote to $LAB_DIR/lab-docker/env.
type dockerGuestEnv struct {
	kernel, initrd, root, pluginTar, versions string
}

func dockerGuestEnvOf(t *testing.T) dockerGuestEnv {
	e := dockerGuestEnv{kernel: os.Getenv("LAB_DOCKER_KERNEL"), initrd: os.Getenv("LAB_DOCKER_INITRD"),
		root: os.Getenv("LAB_DOCKER_ROOT"), pluginTar: os.Getenv("LAB_DOCKER_PLUGIN_TAR"), versions: os.Getenv("LAB_DOCKER_VERSIONS")}
	if e.kernel == "" || e.initrd == "" || e.root == "" || e.pluginTar == "" {
		t.Fatal("LAB_DOCKER_KERNEL, LAB_DOCKER_INITRD, LAB_DOCKER_ROOT and LAB_DOCKER_PLUGIN_TAR must be set: run `make lab-docker`")
	}
	return e
}

// dockerPlugin is the managed plugin's name in the guest.
const dockerPlugin = "ceph:latest"

// dockerBoot is how a docker guest boots: by default the root disk with snapshot=on (the image is
// never written) and the plugin's tar as a second, read-only disk.
type dockerBoot struct {
	root, format string   // root disk and its format ("" = e.root, raw)
	writable     bool     // write the root disk itself (baking an image)
	qemu         []string // more QEMU arguments (a second NIC)
}

// bootDocker boots the docker guest with the default disks, waits for the agent, then for
// dockerd, and returns the guest with both times measured from QEMU's start.
func bootDocker(t *testing.T, e dockerGuestEnv, name string) (*guest, time.Duration, time.Duration) {
	t.Helper()
	g, start := startDocker(t, e, name, dockerBoot{})
	agentUp, dockerUp := waitDockerGuest(t, g, start)
	return g, agentUp, dockerUp
}

// startDocker starts QEMU for a docker guest and returns at once (guests boot side by side).
func startDocker(t *testing.T, e dockerGuestEnv, name string, o dockerBoot) (*guest, time.Time) {
	t.Helper()
	root, format := e.root, "raw"
	if o.root != "" {
		root, format = o.root, o.format
	}
	disk := "file=" + root + ",format=" + format + ",if=virtio"
	if !o.writable {
		disk += ",snapshot=on"
	}
	return launchGuest(t, machine{name: name, mem: "1536", kernel: e.kernel, initrd: e.initrd,
		// no_timer_check: on a loaded host TCG runs the guest too slowly for the kernel's check of
		// the IO-APIC timer, which then panics ("IO-APIC + timer doesn't work").
		cmdline: []string{"root=/dev/vda", "rw", "init=/sbin/lab-docker-init", "no_timer_check"},
		qemuArgs: append([]string{
			// Each guest its own SMBIOS UUID: the plugin's host identity is bound to it.
			"-uuid", guestUUID(),
			"-drive", disk,
			"-drive", "file=" + e.pluginTar + ",format=raw,if=virtio,readonly=on",
		}, o.qemu...),
		callTimeout: 11 * time.Minute,
		onFailure: func(g *guest) {
			res := g.run(20*time.Second, "sh", "-c", "tail -c 6000 /var/log/dockerd.log")
			t.Logf("%s dockerd.log (tail):\n%s", name, res.Stdout)
		},
	})
}

// waitDockerGuest waits for a started guest's agent, then for its dockerd; both times are
// measured from start.
func waitDockerGuest(t *testing.T, g *guest, start time.Time) (time.Duration, time.Duration) {
	t.Helper()
	// Bounds for a host loaded by other work: two guests booting side by side there took 210 s to
	// the agent and 320 s to dockerd.
	agentUp := waitAgent(t, g, start, 6*time.Minute)
	waitDockerd(t, g, 5*time.Minute)
	return agentUp, time.Since(start)
}

// createPlugin creates the managed plugin in the guest from the tar on its second disk; it returns
// the time taken by the untar and by `docker plugin create`.
func createPlugin(t *testing.T, g *guest) (time.Duration, time.Duration) {
	t.Helper()
	t0 := time.Now()
	g.sh("mkdir -p /var/lib/lab-plugin && tar -xf /dev/vdb -C /var/lib/lab-plugin --exclude config-csi.json")
	untar := time.Since(t0)
	t0 = time.Now()
	dk(g, 10*time.Minute, "plugin", "create", dockerPlugin, "/var/lib/lab-plugin")
	create := time.Since(t0)
	g.sh("rm -rf /var/lib/lab-plugin")
	return untar, create
}

// csiPlugin is the CSI plugin's name in the guest (plugin/config-csi.json, the same rootfs).
const csiPlugin = "ceph-csi:latest"

// createCSIPlugin creates the CSI plugin in the guest from the same tar, with config-csi.json; it
// returns the time `docker plugin create` took.
func createCSIPlugin(t *testing.T, g *guest) time.Duration {
	t.Helper()
	// dockerd refuses a second plugin whose rootfs layer is byte-identical to an installed one's.
	g.sh("mkdir -p /var/lib/lab-plugin && tar -xf /dev/vdb -C /var/lib/lab-plugin && cd /var/lib/lab-plugin && " +
		"mv config-csi.json config.json && rm -f rootfs/etc/ceph-docker-plugin.name && echo " + csiPlugin + " >rootfs/etc/ceph-docker-plugin.name")
	t0 := time.Now()
	dk(g, 10*time.Minute, "plugin", "create", csiPlugin, "/var/lib/lab-plugin")
	create := time.Since(t0)
	g.sh("rm -rf /var/lib/lab-plugin")
	return create
}

// guestUUID returns a random UUID (QEMU's -uuid).
func guestUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// uploadCephFiles gives a guest the cluster's config and the plugin user's keyring, through the
// agent (the image holds no key).
func uploadCephFiles(t *testing.T, g *guest) {
	t.Helper()
	g.sh("mkdir -p /etc/ceph")
	g.writeFile("/etc/ceph/ceph.conf", 0o644, lab.guestConf)
	kr, err := os.ReadFile(lab.keyring)
	if err != nil {
		t.Fatal(err)
	}
	g.writeFile("/etc/ceph/ceph.client."+lab.user+".keyring", 0o600, kr)
}

// enablePlugin enables the created plugin with --timeout 120 (dockerd's own deadline for each
// call to the plugin, 30 s by default, below the plugin's CALL_TIMEOUT, as
// scripts/plugin-build.sh enables it) and waits for it to load the rbd module.
func enablePlugin(t *testing.T, g *guest) time.Duration {
	t.Helper()
	return enablePluginNamed(t, g, dockerPlugin, "ceph.sock")
}

// enablePluginNamed is enablePlugin for the plugin name whose socket is sock.
func enablePluginNamed(t *testing.T, g *guest, name, sock string) time.Duration {
	t.Helper()
	t0 := time.Now()
	// dockerd gives a starting plugin a fixed time to open its socket (about 12.6 s, measured):
	// a TCG guest on a busy host can miss it; dockerd then leaves the plugin disabled, and the
	// enable is tried again (at most six times).
	for try := 1; ; try++ {
		res := g.run(3*time.Minute, "docker", "plugin", "enable", "--timeout", "120", name)
		if res.Code == 0 {
			break
		}
		if try == 6 || !strings.Contains(res.Stderr, sock) {
			t.Fatalf("%s: docker plugin enable: exit %d %s%s", g.name, res.Code, res.Stdout, res.Stderr)
		}
		t.Logf("%s: docker plugin enable, try %d: %s", g.name, try, strings.TrimSpace(res.Stderr))
	}
	enable := time.Since(t0)
	waitFor(t, 60*time.Second, g.name+"'s plugin to load the rbd module", func() bool {
		return g.run(10*time.Second, "test", "-e", "/sys/bus/rbd/add_single_major").Code == 0
	})
	return enable
}

// waitDockerd polls `docker version` in the guest until the daemon answers or d passes.
func waitDockerd(t *testing.T, g *guest, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		res := g.run(20*time.Second, "docker", "version", "--format", "{{.Server.Version}}")
		if res.Code == 0 && strings.TrimSpace(res.Stdout) != "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: dockerd did not answer within %s: %s %s\n%s", g.name, d, res.Stderr, res.Err,
				g.run(20*time.Second, "sh", "-c", "tail -c 3000 /var/log/dockerd.log /var/log/containerd.log").Stdout)
		}
		time.Sleep(time.Second)
	}
}

// dk runs the docker CLI in the guest; it fails the test unless the command exits 0.
func dk(g *guest, timeout time.Duration, args ...string) string {
	g.t.Helper()
	res := g.run(timeout, append([]string{"docker"}, args...)...)
	if res.Code != 0 {
		g.t.Fatalf("%s: docker %s: exit %d %s\nstdout: %s\nstderr: %s\ndockerd.log (tail):\n%s", g.name, strings.Join(args, " "),
			res.Code, res.Err, res.Stdout, res.Stderr, g.run(20*time.Second, "sh", "-c", "tail -c 3000 /var/log/dockerd.log").Stdout)
	}
	return strings.TrimSpace(res.Stdout)
}

var rbdDev = regexp.MustCompile(`^/dev/rbd[0-9]+$`)

// dataMount returns the device mounted on /data in a container's /proc/mounts output.
func dataMount(t *testing.T, out string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[1] == "/data" {
			return f[0]
		}
	}
	t.Fatalf("no /data mount in the container's mounts:\n%s", out)
	return ""
}

// keyPath is how the kernel got the key for the maps seen so far ("" until a map was inspected).
var keyPath string

// assertMapped checks that the plugin has exactly one mapping of vol, /dev/rbdN, mounted in the
// guest under dockerd's plugin directory (the plugin's propagated mount), and that no map request
// the kernel keeps holds the key. It returns the device and its mount point in the guest.
func assertMapped(t *testing.T, g *guest, vol string) (string, string) {
	t.Helper()
	devs := g.mappings(vol)
	if len(devs) != 1 || !rbdDev.MatchString(devs[0]) {
		t.Fatalf("the guest kernel has %d mappings of %s: %v; want one /dev/rbdN", len(devs), vol, devs)
	}
	mp := ""
	for _, l := range strings.Split(g.sh("cat /proc/mounts"), "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[0] == devs[0] && strings.HasPrefix(f[1], "/var/lib/docker/plugins/") {
			mp = f[1]
		}
	}
	if mp == "" {
		t.Fatalf("%s is not mounted under /var/lib/docker/plugins/ (the plugin's propagated mount):\n%s", devs[0], g.sh("grep rbd /proc/mounts || true"))
	}
	cfg := g.sh("cat /sys/bus/rbd/devices/*/config_info")
	if strings.Contains(cfg, lab.key) {
		t.Errorf("the cephx key of client.%s is in the kernel's map request (config_info): the plugin fell back to secret=", lab.user)
	}
	switch {
	case strings.Contains(cfg, "key=client."+lab.user):
		keyPath = "kernel keyring (key=client." + lab.user + ")"
	case strings.Contains(cfg, "secret="):
		keyPath = "secret= in the map request"
	default:
		t.Errorf("the map request names neither key= nor secret=: %q", cfg)
	}
	return devs[0], mp
}

// assertNoRBD checks, within a bounded time, that the guest has no rbd mapping and no rbd mount.
func assertNoRBD(t *testing.T, g *guest, what string) {
	t.Helper()
	assertNoRBDWithin(t, g, what, 30*time.Second)
}

// assertNoRBDWithin is assertNoRBD with the bound d.
func assertNoRBDWithin(t *testing.T, g *guest, what string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		out := g.sh("ls /sys/bus/rbd/devices 2>/dev/null; grep '^/dev/rbd' /proc/mounts || true")
		if strings.TrimSpace(out) == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: rbd mappings or mounts left in the guest after %s:\n%s", what, d, out)
		}
		time.Sleep(time.Second)
	}
}

// dockerVolume creates a volume with the plugin; at cleanup it removes the case's containers and
// the volume in the guest, then the image from the host (whatever a failure left).
func dockerVolume(t *testing.T, g *guest, containers ...string) string {
	t.Helper()
	vol := uniq("lab-dk")
	t.Cleanup(func() {
		if g.alive() {
			if len(containers) > 0 {
				g.run(2*time.Minute, append([]string{"docker", "rm", "-f"}, containers...)...)
			}
			g.run(2*time.Minute, "docker", "volume", "rm", "-f", vol)
		}
		removeImage(t, vol)
	})
	dk(g, 3*time.Minute, "volume", "create", "--driver", dockerPlugin, vol)
	return vol
}

// waitGuestFile waits until path in the guest (a plugin mount seen from the guest) holds want.
func waitGuestFile(t *testing.T, g *guest, path, want string) {
	t.Helper()
	waitFor(t, 90*time.Second, path+" to hold "+strconv.Quote(want), func() bool {
		return strings.Contains(g.run(10*time.Second, "cat", path).Stdout, want)
	})
}

// pluginPID returns the PID (in the guest) of the plugin binary, 0 if it does not run.
func pluginPID(g *guest) int {
	res := g.run(10*time.Second, "pidof", "ceph-docker-plugin")
	pid, _ := strconv.Atoi(strings.Fields(res.Stdout + " 0")[0])
	return pid
}

// TestDockerGuest: the real managed plugin under the real dockerd with krbd, in one guest.
func TestDockerGuest(t *testing.T) {
	e := dockerGuestEnvOf(t)
	total := time.Now()
	g, agentUp, dockerUp := bootDocker(t, e, "lab-dock")
	kv := strings.TrimSpace(g.sh("uname -r"))
	ver := dk(g, time.Minute, "version", "--format", "{{.Server.Version}} (API {{.Server.APIVersion}}), containerd {{range .Server.Components}}{{if eq .Name \"containerd\"}}{{.Version}}{{end}}{{end}}")
	step(t, "guest up: agent after %.1fs, dockerd answering after %.1fs (kernel %s, dockerd %s; %s)",
		agentUp.Seconds(), dockerUp.Seconds(), kv, ver, e.versions)
	info := dk(g, time.Minute, "info", "--format", "{{.Driver}} cgroup v{{.CgroupVersion}} seccomp={{range .SecurityOptions}}{{.}} {{end}}")
	step(t, "docker info: %s", info)
	g.sh("[ ! -e /sys/bus/rbd ]") // the plugin must load the module itself

	// The cluster config and the keyring, uploaded now: the image holds no key.
	uploadCephFiles(t, g)

	t0 := time.Now()
	dk(g, 2*time.Minute, "import", "/opt/lab/busybox.tar", "busybox:lab")
	step(t, "docker import busybox: %.1fs", time.Since(t0).Seconds())

	untar, create := createPlugin(t, g)
	dk(g, time.Minute, "plugin", "set", dockerPlugin, "MAPPER=krbd", "CEPH_USER="+lab.user, "RBD_POOL="+lab.pool,
		"DEFAULT_SIZE=256M", "NODE_NAME="+g.name, "LOG_LEVEL=debug")
	enable := enablePlugin(t, g)
	step(t, "managed plugin %s: rootfs untarred from the second disk %.1fs, `docker plugin create` %.1fs, enable %.1fs",
		dockerPlugin, untar.Seconds(), create.Seconds(), enable.Seconds())
	if !strings.Contains(g.sh("cat /var/log/dockerd.log"), "loaded the kernel's rbd driver") {
		t.Errorf("rbd is loaded but dockerd's log has no \"loaded the kernel's rbd driver\" from the plugin")
	}
	step(t, "MAPPER=krbd: the plugin loaded rbd.ko from inside its container (modprobe, the guest's /lib/modules)")
	setup := time.Since(total)

	run := []string{"run", "--network", "none"}
	times := map[string]time.Duration{}
	cases := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"create-write-read", func(t *testing.T) {
			vol := dockerVolume(t, g, "w1")
			dk(g, 3*time.Minute, append(run, "-d", "--name", "w1", "-v", vol+":/data", "busybox:lab",
				"sh", "-c", "echo hello-1 >/data/f && sync && sleep 600")...)
			dev, mp := assertMapped(t, g, vol)
			waitGuestFile(t, g, mp+"/f", "hello-1")
			assertNoKeyDocker(t, g)
			// Why the keyring works: dockerd gives managed plugins no seccomp filter (containers get one).
			seccomp := strings.TrimSpace(g.sh("grep '^Seccomp:' /proc/$(pidof ceph-docker-plugin)/status"))
			step(t, "container w1 wrote through %s (mounted at %s); key path: %s; the plugin's %s", dev, mp, keyPath, seccomp)
			dk(g, 2*time.Minute, "rm", "-f", "w1")
			assertNoRBD(t, g, "after w1 was removed")
			out := dk(g, 3*time.Minute, append(run, "--rm", "-v", vol+":/data", "busybox:lab", "sh", "-c", "cat /data/f; cat /proc/mounts")...)
			if !strings.HasPrefix(out, "hello-1") {
				t.Fatalf("a new container reads %q, want hello-1", out)
			}
			if d := dataMount(t, out); !rbdDev.MatchString(d) {
				t.Fatalf("the new container's /data is %s, not a /dev/rbdN", d)
			}
			step(t, "a new container read hello-1 from %s", dataMount(t, out))
		}},
		{"two-containers", func(t *testing.T) {
			vol := dockerVolume(t, g, "s1")
			dk(g, 3*time.Minute, append(run, "-d", "--name", "s1", "-v", vol+":/data", "busybox:lab",
				"sh", "-c", "echo from-s1 >/data/a && sync && sleep 600")...)
			dev, mp := assertMapped(t, g, vol)
			waitGuestFile(t, g, mp+"/a", "from-s1")
			out := dk(g, 3*time.Minute, append(run, "--rm", "-v", vol+":/data", "busybox:lab",
				"sh", "-c", "cat /data/a && echo from-s2 >/data/b && sync && cat /proc/mounts")...)
			if !strings.HasPrefix(out, "from-s1") || dataMount(t, out) != dev {
				t.Fatalf("the second container read %q on %s; want from-s1 on %s", strings.SplitN(out, "\n", 2)[0], dataMount(t, out), dev)
			}
			if d2, _ := assertMapped(t, g, vol); d2 != dev {
				t.Fatalf("after the second container left, the volume is on %s, was %s", d2, dev)
			}
			if got := dk(g, time.Minute, "exec", "s1", "cat", "/data/b"); got != "from-s2" {
				t.Fatalf("s1 reads %q from the second container's file, want from-s2", got)
			}
			step(t, "two containers on one mapping %s; the first still mounted after the second left, sees its file", dev)
			dk(g, 2*time.Minute, "rm", "-f", "s1")
			assertNoRBD(t, g, "after both containers left")
		}},
		{"docker-cp", func(t *testing.T) {
			vol := dockerVolume(t, g, "p1")
			dk(g, 3*time.Minute, append(run, "-d", "--name", "p1", "-v", vol+":/data", "busybox:lab", "sleep", "600")...)
			dev, mp := assertMapped(t, g, vol)
			g.sh("head -c 1048576 /dev/urandom >/tmp/cp-src")
			want := strings.Fields(g.sh("sha256sum /tmp/cp-src"))[0]
			t0 := time.Now()
			dk(g, 2*time.Minute, "cp", "/tmp/cp-src", "p1:/data/cp")
			in := time.Since(t0)
			if got := strings.Fields(dk(g, time.Minute, "exec", "p1", "sha256sum", "/data/cp"))[0]; got != want {
				t.Fatalf("the file copied in has sha256 %s in the container, want %s", got, want)
			}
			if got := strings.Fields(g.sh("sha256sum " + mp + "/cp"))[0]; got != want {
				t.Fatalf("the file copied in has sha256 %s on the plugin's mount, want %s", got, want)
			}
			dk(g, 2*time.Minute, "cp", "p1:/data/cp", "/tmp/cp-back")
			if got := strings.Fields(g.sh("sha256sum /tmp/cp-back"))[0]; got != want {
				t.Fatalf("the file copied out has sha256 %s, want %s", got, want)
			}
			if d2, _ := assertMapped(t, g, vol); d2 != dev {
				t.Fatalf("after docker cp the volume is on %s, was %s", d2, dev)
			}
			step(t, "docker cp 1 MiB into the running container (%.1fs) and back out, checksums equal, still one mapping %s", in.Seconds(), dev)
			dk(g, 2*time.Minute, "rm", "-f", "p1")
			assertNoRBD(t, g, "after the container of docker cp left")
		}},
		{"plugin-sigkill-while-writing", func(t *testing.T) {
			vol := dockerVolume(t, g, "k1")
			// Records "<n> <uptime>", each appended and fsynced, as fast as the volume takes them.
			dk(g, 3*time.Minute, append(run, "-d", "--name", "k1", "-v", vol+":/data", "busybox:lab", "sh", "-c",
				`i=0; while :; do i=$((i+1)); read up _ </proc/uptime; echo "$i $up" | dd of=/data/log oflag=append conv=notrunc,fsync 2>/dev/null; done`)...)
			dev, mp := assertMapped(t, g, vol)
			waitFor(t, 60*time.Second, "the writer's first records", func() bool {
				return len(strings.Split(strings.TrimSpace(g.run(10*time.Second, "cat", mp+"/log").Stdout), "\n")) >= 20
			})
			old := pluginPID(g)
			if old == 0 {
				t.Fatal("no ceph-docker-plugin process in the guest")
			}
			killedAt := strings.Fields(g.sh("kill -9 " + strconv.Itoa(old) + " && cat /proc/uptime"))[0]
			t0 := time.Now()
			var pid int
			waitFor(t, 60*time.Second, "dockerd to restart the plugin", func() bool { pid = pluginPID(g); return pid != 0 && pid != old })
			restart := time.Since(t0)
			// The restarted plugin answers dockerd (it found its state and the existing mapping).
			dk(g, 2*time.Minute, "volume", "inspect", vol)
			time.Sleep(5 * time.Second)
			if d2, _ := assertMapped(t, g, vol); d2 != dev {
				t.Fatalf("after the plugin restart the volume is on %s, was %s", d2, dev)
			}
			recs := strings.Split(strings.TrimSpace(g.sh("cat "+mp+"/log")), "\n")
			gap, at, after := longestGap(t, recs, killedAt)
			if after < 10 {
				t.Fatalf("only %d records after the SIGKILL: the writes did not go on", after)
			}
			step(t, "plugin (pid %d) SIGKILLed while k1 wrote to %s: dockerd restarted it in %.1fs (pid %d); %d fsynced records, %d after the kill; longest gap between two %.0f ms (at uptime %s, kill at %s)",
				old, dev, restart.Seconds(), pid, len(recs), after, gap*1000, at, killedAt)
			dk(g, 2*time.Minute, "rm", "-f", "k1")
			assertNoRBD(t, g, "after the writer left (the restarted plugin unmapped)")
		}},
		{"dockerd-restart", func(t *testing.T) {
			vol := dockerVolume(t, g, "r1")
			dk(g, 3*time.Minute, append(run, "-d", "--name", "r1", "--restart", "always", "--stop-timeout", "2", "-v", vol+":/data",
				"busybox:lab", "sh", "-c", "cat /proc/uptime >>/data/boots && sync && sleep 600")...)
			dev, mp := assertMapped(t, g, vol)
			waitGuestFile(t, g, mp+"/boots", ".")
			t0 := time.Now()
			g.sh("lab-dockerd stop")
			stop := time.Since(t0)
			assertNoRBD(t, g, "with dockerd stopped (it stopped r1, whose volume the plugin released)")
			t0 = time.Now()
			g.sh("lab-dockerd start")
			waitDockerd(t, g, 180*time.Second)
			up := time.Since(t0)
			waitFor(t, 3*time.Minute, "r1 to run again (restart policy)", func() bool {
				return g.run(20*time.Second, "docker", "inspect", "--format", "{{.State.Running}}", "r1").Stdout == "true\n"
			})
			back := time.Since(t0)
			dev2, mp2 := assertMapped(t, g, vol)
			waitFor(t, 90*time.Second, "r1's second record", func() bool {
				return len(strings.Split(strings.TrimSpace(g.run(10*time.Second, "cat", mp2+"/boots").Stdout), "\n")) == 2
			})
			step(t, "dockerd stopped in %.1fs with r1 on %s (released); started again: answering after %.1fs, r1 running again on %s after %.1fs, its data there",
				stop.Seconds(), dev, up.Seconds(), dev2, back.Seconds())
			dk(g, 2*time.Minute, "rm", "-f", "r1")
			assertNoRBD(t, g, "after r1 was removed")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer use(t, g)()
			assertNoRBD(t, g, "before the case")
			t0 := time.Now()
			c.fn(t)
			times[c.name] = time.Since(t0)
			step(t, "%s: %.1fs", c.name, times[c.name].Seconds())
		})
	}
	var sum []string
	for _, c := range cases {
		if d, ok := times[c.name]; ok {
			sum = append(sum, fmt.Sprintf("%s %.1fs", c.name, d.Seconds()))
		}
	}
	step(t, "boot to dockerd %.1fs; setup (boot, import, plugin create/enable) %.1fs; cases: %s; total %.1fs; key path: %s",
		dockerUp.Seconds(), setup.Seconds(), strings.Join(sum, ", "), time.Since(total).Seconds(), keyPath)
}

// longestGap parses "<n> <uptime>" records and returns the longest gap between two consecutive
// ones (s), where it ended, and how many records were written after uptime killedAt.
func longestGap(t *testing.T, recs []string, killedAt string) (float64, string, int) {
	t.Helper()
	kill, err := strconv.ParseFloat(killedAt, 64)
	if err != nil {
		t.Fatal(err)
	}
	var gap, prev float64
	var at string
	after := 0
	for i, r := range recs {
		f := strings.Fields(r)
		if len(f) != 2 {
			t.Fatalf("record %d is %q", i, r)
		}
		if n, _ := strconv.Atoi(f[0]); n != i+1 {
			t.Fatalf("record %d is numbered %q: records lost or reordered", i+1, f[0])
		}
		up, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if i > 0 && up-prev > gap {
			gap, at = up-prev, f[1]
		}
		if up > kill {
			after++
		}
		prev = up
	}
	return gap, at, after
}

// assertNoKeyDocker checks, while a volume is mapped, that the cephx secret shows nowhere a user
// of the guest could read it: process command lines and environments (the plugin's included),
// dockerd's log (which holds the plugin's output), the kernel log, the guest console, the plugin's
// settings as docker shows them.
func assertNoKeyDocker(t *testing.T, g *guest) {
	t.Helper()
	where := map[string]string{
		"process listing (/proc/*/cmdline, /proc/*/environ)": g.sh("for p in /proc/[0-9]*; do tr '\\0' ' ' <$p/cmdline; echo; tr '\\0' ' ' <$p/environ; echo; done 2>/dev/null"),
		"dockerd log (with the plugin's output)":             g.sh("cat /var/log/dockerd.log"),
		"kernel log":                                         g.sh("dmesg"),
		"docker plugin inspect":                              dk(g, time.Minute, "plugin", "inspect", dockerPlugin),
		"guest console":                                      g.console(),
	}
	// The plugin warns when the key cannot go through the kernel keyring (rbd/krbd).
	if strings.Contains(where["dockerd log (with the plugin's output)"], "the kernel keyring cannot hold the cephx secret") {
		t.Errorf("the plugin fell back to secret= in the map request (its warning is in dockerd's log)")
	}
	for what, text := range where {
		if strings.Contains(text, lab.key) {
			t.Errorf("the cephx key of client.%s appears in the %s", lab.user, what)
		}
		if len(text) == 0 && what != "guest console" {
			t.Errorf("the %s is empty: the check proves nothing", what)
		}
	}
	// The listing holds the plugin's command line and its environment (with its settings).
	if ps := where["process listing (/proc/*/cmdline, /proc/*/environ)"]; !strings.Contains(ps, "/usr/bin/ceph-docker-plugin") || !strings.Contains(ps, "MAPPER=krbd") {
		t.Errorf("the process listing shows no ceph-docker-plugin with MAPPER=krbd: the check proves nothing")
	}
}
