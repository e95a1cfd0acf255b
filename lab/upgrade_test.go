//go:build lab && labdocker

package lab

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serveRegistry serves the registry storage dir (pushed by scripts/lab-docker-build.sh) read-only
// in effect (nothing is pushed to it here) on a port of the host's loopback, which the guests
// reach through slirp; dockerd treats 127.0.0.0/8 registries as insecure (plain HTTP) by default.
func serveRegistry(t *testing.T, dir string) int {
	t.Helper()
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := filepath.Join(t.TempDir(), "registry.yml")
	if err := os.WriteFile(cfg, []byte("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: "+dir+"\nhttp:\n  addr: "+addr+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := exec.Command("docker-registry", "serve", cfg)
	if err := reg.Start(); err != nil {
		t.Fatalf("start docker-registry: %v", err)
	}
	t.Cleanup(func() { _ = reg.Process.Kill(); _ = reg.Wait() })
	waitFor(t, 10*time.Second, "the registry to listen on "+addr, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return port
}

// TestDockerPluginUpgrade (build 4): on a guest whose plugin has volumes that no container uses,
// `docker plugin disable` (-f: dockerd keeps a reference per volume it knows), `docker plugin
// upgrade` to a newer build pulled from a registry, `enable`; the volumes then mount with their
// data, the plugin keeps its ID and its settings, and its rootfs is the new build's.
func TestDockerPluginUpgrade(t *testing.T) {
	e := dockerGuestEnvOf(t)
	regDir := os.Getenv("LAB_DOCKER_REGISTRY")
	if regDir == "" {
		t.Fatal("LAB_DOCKER_REGISTRY must be set: run `make lab-docker-build`")
	}
	total := time.Now()
	port := serveRegistry(t, regDir)
	g, start := startDocker(t, e, "lab-upg", dockerBoot{root: bakedRoot(t, e), format: "qcow2"})
	waitDockerGuest(t, g, start)
	uploadCephFiles(t, g)
	dk(g, time.Minute, "plugin", "set", dockerPlugin, "NODE_NAME="+g.name)
	enablePlugin(t, g)

	vols := []string{uniq("lab-upg"), uniq("lab-upg")}
	sums := map[string]string{}
	for _, v := range vols {
		t.Cleanup(func() {
			if g.alive() {
				g.run(2*time.Minute, "docker", "volume", "rm", "-f", v)
			}
			removeImage(t, v)
		})
		dk(g, 3*time.Minute, "volume", "create", "--driver", dockerPlugin, v)
		out := dk(g, 3*time.Minute, "run", "--rm", "--network", "none", "-v", v+":/data", "busybox:lab", "sh", "-c",
			"head -c 1048576 /dev/urandom >/data/blob && cd /data && sha256sum blob >sum && sync && cat sum")
		sums[v] = strings.Fields(out)[0]
	}
	assertNoRBD(t, g, "with the volumes written and no container using them")
	id := dk(g, time.Minute, "plugin", "inspect", "-f", "{{.Id}}", dockerPlugin)
	settings := dk(g, time.Minute, "plugin", "inspect", "-f", "{{json .Settings.Env}}", dockerPlugin)
	step(t, "%d volumes written (1 MiB each, sha256 recorded), released; plugin %s", len(vols), id[:12])

	if res := g.run(time.Minute, "docker", "plugin", "disable", dockerPlugin); res.Code == 0 || !strings.Contains(res.Stderr, "in use") {
		t.Fatalf("plugin disable while dockerd knows the plugin's volumes: exit %d %s%s; want refused as in use", res.Code, res.Stdout, res.Stderr)
	}
	dk(g, time.Minute, "plugin", "disable", "-f", dockerPlugin)
	ref := fmt.Sprintf("127.0.0.1:%d/ceph-guest-upgrade:latest", port)
	t0 := time.Now()
	dk(g, 10*time.Minute, "plugin", "upgrade", "--grant-all-permissions", "--skip-remote-check", dockerPlugin, ref)
	upgrade := time.Since(t0)
	enable := enablePlugin(t, g)
	step(t, "plugin disable refused (volumes known), disable -f, `docker plugin upgrade` from %s in %.1fs, enable in %.1fs", ref, upgrade.Seconds(), enable.Seconds())

	if now := dk(g, time.Minute, "plugin", "inspect", "-f", "{{.Id}}", dockerPlugin); now != id {
		t.Fatalf("the plugin's ID changed across the upgrade: %s -> %s", id, now)
	}
	if got := dk(g, time.Minute, "plugin", "inspect", "-f", "{{.PluginReference}}", dockerPlugin); got != ref {
		t.Fatalf("plugin reference after the upgrade: %s, want %s", got, ref)
	}
	if now := dk(g, time.Minute, "plugin", "inspect", "-f", "{{json .Settings.Env}}", dockerPlugin); now != settings {
		t.Fatalf("the plugin's settings changed across the upgrade")
	}
	mark := strings.TrimSpace(g.sh("cat /var/lib/docker/plugins/" + id + "/rootfs/etc/ceph-docker-plugin-upgrade"))
	if !strings.HasPrefix(mark, "upgrade of ") {
		t.Fatalf("the plugin's rootfs is not the upgraded build: %q", mark)
	}
	ls := dk(g, time.Minute, "volume", "ls", "--format", "{{.Name}} {{.Driver}}")
	for _, v := range vols {
		if !strings.Contains(ls, v+" "+dockerPlugin) {
			t.Fatalf("volume ls after the upgrade does not list %s:\n%s", v, ls)
		}
		out := dk(g, 3*time.Minute, "run", "--rm", "--network", "none", "-v", v+":/data", "busybox:lab", "sh", "-c",
			"cd /data && sha256sum -c sum && cat /proc/mounts")
		if !strings.Contains(out, "blob: OK") || !rbdDev.MatchString(dataMount(t, out)) {
			t.Fatalf("%s after the upgrade: %s", v, out)
		}
		step(t, "%s mounts after the upgrade on %s, blob sha256 %s... intact", v, dataMount(t, out), sums[v][:16])
	}
	assertNoRBD(t, g, "after the containers of the upgraded plugin left")
	step(t, "rootfs of the new build (%q), same ID, same settings; total %.1fs", mark, time.Since(total).Seconds())
}
