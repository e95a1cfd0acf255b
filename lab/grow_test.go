//go:build lab && labdocker

package lab

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// growInterval is GROW_INTERVAL in TestDockerGrowExt4; growSlack is what the test allows beyond
// it for the grow itself and for seeing it (resize2fs under TCG, a docker exec of df).
const (
	growInterval = 10 * time.Second
	growSlack    = 30 * time.Second
)

// containerDfKiB is the size df reports for /data inside a container of the guest.
func containerDfKiB(t *testing.T, g *guest, id string) int {
	t.Helper()
	f := strings.Fields(dk(g, time.Minute, "exec", id, "sh", "-c", "df -k /data | tail -1"))
	if len(f) < 2 {
		t.Fatalf("df in %s: %v", id, f)
	}
	n, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatalf("df in %s: %v", id, f)
	}
	return n
}

// TestDockerGrowExt4 (make lab-grow): an ext4 volume grows while mounted, as the managed plugin
// installed from the shipped config.json does it under a dockerd that can grant CAP_SYS_RESOURCE
// (this lab's host dockerd cannot; see scripts/plugin-build.sh). A container writes with fsync;
// the image is grown with `rbd resize` from the host; the container's df shows the new size
// within GROW_INTERVAL plus the grow, without a restart, and it goes on writing; the filesystem
// is clean and every record is there afterwards.
func TestDockerGrowExt4(t *testing.T) {
	e := dockerGuestEnvOf(t)
	total := time.Now()
	g, start := startDocker(t, e, "lab-grow", dockerBoot{root: bakedRoot(t, e), format: "qcow2"})
	agentUp, dockerUp := waitDockerGuest(t, g, start)
	uploadCephFiles(t, g)
	dk(g, time.Minute, "plugin", "set", dockerPlugin, "NODE_NAME="+g.name, "GROW_INTERVAL="+growInterval.String())
	enable := enablePlugin(t, g)
	step(t, "guest up: agent %.1fs, dockerd %.1fs; plugin enabled (GROW_INTERVAL=%s) in %.1fs", agentUp.Seconds(), dockerUp.Seconds(), growInterval, enable.Seconds())

	// The plugin runs with CAP_SYS_RESOURCE (config.json asks for it; this dockerd grants it), and
	// its start-up log does not warn that a mounted ext4 cannot grow.
	caps := g.sh("grep -E '^Cap(Eff|Bnd):' /proc/$(pidof ceph-docker-plugin)/status")
	var eff uint64
	for _, l := range strings.Split(caps, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "CapEff:" {
			eff, _ = strconv.ParseUint(f[1], 16, 64)
		}
	}
	if eff&(1<<24) == 0 {
		t.Fatalf("the plugin lacks CAP_SYS_RESOURCE (bit 24) in the guest: %s\nplugin inspect: %s", caps,
			dk(g, time.Minute, "plugin", "inspect", "-f", "{{json .Config.Linux.Capabilities}}", dockerPlugin))
	}
	if log := g.sh("cat /var/log/dockerd.log"); strings.Contains(log, "cannot grow while mounted") {
		t.Errorf("the plugin's start-up log says a mounted ext4 cannot grow, though it has CAP_SYS_RESOURCE")
	}
	step(t, "the plugin's capabilities: %s", strings.ReplaceAll(strings.TrimSpace(caps), "\n", ", "))

	vol := dockerVolume(t, g, "gw")
	// Records "<n> <uptime>", each appended and fsynced, ten a second.
	id := dk(g, 3*time.Minute, "run", "-d", "--network", "none", "--name", "gw", "-v", vol+":/data", "busybox:lab", "sh", "-c",
		`i=0; while :; do i=$((i+1)); read up _ </proc/uptime; echo "$i $up" | dd of=/data/log oflag=append conv=notrunc,fsync 2>/dev/null; sleep 0.1; done`)
	dev, mp := assertMapped(t, g, vol)
	if fs := strings.TrimSpace(g.sh("findmnt -n -f -o FSTYPE " + mp)); fs != "ext4" {
		t.Fatalf("the volume is %q, want ext4", fs)
	}
	records := func() int { return strings.Count(g.run(10*time.Second, "cat", mp+"/log").Stdout, "\n") }
	waitFor(t, time.Minute, "the writer's first records", func() bool { return records() >= 10 })
	before := containerDfKiB(t, g, id)
	if before > 256<<10 {
		t.Fatalf("a new 256M volume: df says %d KiB", before)
	}
	startedAt := dk(g, time.Minute, "inspect", "-f", "{{.State.StartedAt}} {{.RestartCount}}", id)

	mustAdmin(t, "rbd", "resize", "--no-progress", "--size", "512M", lab.pool+"/"+vol)
	resized := time.Now()
	var after int
	for {
		after = containerDfKiB(t, g, id)
		if after > 384<<10 {
			break
		}
		if time.Since(resized) > growInterval+growSlack {
			t.Fatalf("the container still sees %d KiB %s after rbd resize to 512M (GROW_INTERVAL %s); device %s: %s sectors; inspect: %s",
				after, time.Since(resized).Round(time.Second), growInterval, dev, g.sh("cat /sys/block/"+filepath.Base(dev)+"/size"),
				dk(g, time.Minute, "volume", "inspect", "-f", "{{json .Status}}", vol))
		}
		time.Sleep(500 * time.Millisecond)
	}
	took := time.Since(resized)
	step(t, "rbd resize 256M -> 512M from the host: the container's df went from %d KiB to %d KiB %.1fs later (GROW_INTERVAL %s, bound %s)",
		before, after, took.Seconds(), growInterval, growInterval+growSlack)

	// Without a restart, and the writer carries on.
	if now := dk(g, time.Minute, "inspect", "-f", "{{.State.StartedAt}} {{.RestartCount}}", id); now != startedAt {
		t.Errorf("the container was restarted: %q, was %q", now, startedAt)
	}
	n := records()
	waitFor(t, time.Minute, "the writer to go on after the grow", func() bool { return records() >= n+10 })
	var st map[string]any
	if err := json.Unmarshal([]byte(dk(g, time.Minute, "volume", "inspect", "-f", "{{json .Status}}", vol)), &st); err != nil {
		t.Fatal(err)
	}
	if st["filesystem-size"] != "512M" || !strings.Contains(strings.ToLower(st["resize"].(string)), "while mounted") {
		t.Errorf("docker volume inspect after the grow: %v", st)
	}
	_, grownLine := dockerdLogTime(t, g, "filesystem grown to its device's size", 0)
	if grownLine == "" {
		t.Errorf("dockerd's log has no \"filesystem grown to its device's size\" from the plugin")
	}
	step(t, "inspect: size %v, device-size %v, filesystem-size %v, resize %q", st["size"], st["device-size"], st["filesystem-size"], st["resize"])

	// The filesystem is clean and holds every record, checked from the host.
	dk(g, 2*time.Minute, "rm", "-f", id)
	assertNoRBD(t, g, "after the writer was removed")
	exp := filepath.Join(t.TempDir(), "vol.img")
	mustAdmin(t, "rbd", "export", "--no-progress", lab.pool+"/"+vol, exp)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "e2fsck", "-f", "-n", exp).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -f -n of %s after the grow: %v\n%s", vol, err, out)
	}
	recs := strings.Split(strings.TrimSpace(debugfsCat(t, exp, "/log")), "\n")
	for i, r := range recs {
		if f := strings.Fields(r); len(f) != 2 || f[0] != strconv.Itoa(i+1) {
			t.Fatalf("record %d is %q: records lost or reordered", i+1, r)
		}
	}
	step(t, "e2fsck -f -n clean (%s); %d records in order; total %.1fs", lastLine(string(out)), len(recs), time.Since(total).Seconds())
}
