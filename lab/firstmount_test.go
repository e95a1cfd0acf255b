//go:build lab && labdocker

package lab

import (
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// firstMountRounds is how many rounds TestDockerFirstMount runs (LAB_ROUNDS, default 10).
func firstMountRounds(t *testing.T) int {
	n := 10
	if s := os.Getenv("LAB_ROUNDS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("LAB_ROUNDS=%q: want a positive number", s)
		}
		n = v
	}
	return n
}

// stepDurations returns, for each "first mount: time per step" line of the plugin for vol in
// dockerd's log (the plugin's line quoted in dockerd's msg="..."), the sum of its steps, and the
// steps of the first line.
func stepDurations(t *testing.T, g *guest, vol string) ([]time.Duration, string) {
	t.Helper()
	volRE := regexp.MustCompile(`volume=\\?"?` + regexp.QuoteMeta(vol) + `([^A-Za-z0-9._-]|$)`)
	stepRE := regexp.MustCompile(`([a-z][a-z_-]*)=\\?"?([0-9][0-9.]*(?:ns|µs|us|ms|s))\b`)
	var sums []time.Duration
	var first string
	for _, l := range strings.Split(g.sh("grep 'first mount: time per step' /var/log/dockerd.log || true"), "\n") {
		if !volRE.MatchString(l) {
			continue
		}
		var sum time.Duration
		var parts []string
		for _, m := range stepRE.FindAllStringSubmatch(l, -1) {
			if d, err := time.ParseDuration(m[2]); err == nil {
				sum += d
				parts = append(parts, m[1]+"="+m[2])
			}
		}
		if sum == 0 {
			t.Fatalf("no step durations in %s", l)
		}
		if first == "" {
			first = strings.Join(parts, " ")
		}
		sums = append(sums, sum)
	}
	if len(sums) == 0 {
		t.Fatalf("no \"first mount: time per step\" line for %s in dockerd's log (LOG_LEVEL=debug)", vol)
	}
	return sums, first
}

// writeInContainer runs a container on the volume or directory src that writes the 16 MiB file
// /tmp/w16 of the guest to /data/w with fsync as its first action; it returns the write's time
// measured in the container (/proc/uptime, 10 ms steps) and the wall time of `docker run`.
func writeInContainer(t *testing.T, g *guest, name, src string) (time.Duration, time.Duration) {
	t.Helper()
	t0 := time.Now()
	out := dk(g, 3*time.Minute, "run", "--name", name, "--network", "none", "-v", src+":/data", "-v", "/tmp/w16:/w16:ro", "busybox:lab",
		"sh", "-c", `read a _ </proc/uptime; dd if=/w16 of=/data/w bs=1M conv=fsync 2>/dev/null || exit 1; read b _ </proc/uptime; echo "$a $b"`)
	wall := time.Since(t0)
	dk(g, 2*time.Minute, "rm", name)
	f := strings.Fields(out)
	if len(f) != 2 {
		t.Fatalf("container %s printed %q", name, out)
	}
	a, err1 := strconv.ParseFloat(f[0], 64)
	b, err2 := strconv.ParseFloat(f[1], 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("container %s printed %q", name, out)
	}
	return time.Duration((b - a) * float64(time.Second)), wall
}

// p50 is the nearest-rank median.
func p50(d []time.Duration) time.Duration {
	d = slices.Clone(d)
	slices.Sort(d)
	return d[(len(d)-1)/2]
}

func p50OrZero(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return p50(d)
}

func msList(d []time.Duration) string {
	var s []string
	for _, x := range d {
		s = append(s, strconv.FormatInt(x.Milliseconds(), 10))
	}
	return strings.Join(s, " ")
}

// TestDockerFirstMount (must-show 4): the first Mount of a new volume through dockerd (the
// managed plugin, MAPPER=krbd) against map + mkfs + mount by hand in the same guest, and the first
// 16 MiB write + fsync into the freshly mounted filesystem, written by a container as its first
// action in both cases. The hand-made rows differ only by mkfs's options: the plugin's own
// (nodiscard, lazy inode-table and journal init), mke2fs's defaults, and the plugin's plus
// assume_storage_prezeroed=1 (the inode tables marked zeroed: no ext4lazyinit after the mount).
// Rounds interleave the rows, in a rotating order.
func TestDockerFirstMount(t *testing.T) {
	e := dockerGuestEnvOf(t)
	rounds := firstMountRounds(t)
	g, start := startDocker(t, e, "lab-fm", dockerBoot{root: bakedRoot(t, e), format: "qcow2"})
	waitDockerGuest(t, g, start)
	uploadCephFiles(t, g)
	dk(g, time.Minute, "plugin", "set", dockerPlugin, "NODE_NAME="+g.name)
	enablePlugin(t, g)
	g.sh("head -c 16777216 /dev/urandom >/tmp/w16 && mkdir -p /mnt/raw")
	const size = "1G"
	var coldMounts []int
	var second []time.Duration

	type row struct {
		name, mkfs   string // mkfs: "" = the plugin's Mount
		mount, write []time.Duration
		wall         []time.Duration
		lastSteps    string
	}
	rows := []*row{
		{name: "plugin Mount through dockerd"},
		{name: "by hand, the plugin's mkfs options", mkfs: "mkfs.ext4 -q -E nodiscard,lazy_itable_init=1,lazy_journal_init=1"},
		{name: "by hand, mke2fs defaults", mkfs: "mkfs.ext4 -q"},
		{name: "by hand, the plugin's options + assume_storage_prezeroed=1", mkfs: "mkfs.ext4 -q -E nodiscard,lazy_itable_init=1,lazy_journal_init=1,assume_storage_prezeroed=1"},
	}
	for i := 0; i < rounds; i++ {
		for k := range rows {
			r := rows[(i+k)%len(rows)]
			vol := uniq("lab-fm")
			t.Cleanup(func() { removeImage(t, vol) })
			dk(g, 3*time.Minute, "volume", "create", "--driver", dockerPlugin, "-o", "size="+size, vol)
			if r.mkfs == "" {
				w, wall := writeInContainer(t, g, "fm", vol)
				// dockerd 28 mounts a new container's volume, unmounts it and mounts it again
				// to start the container: two cold Mounts, the first one with mkfs.
				ms, steps := stepDurations(t, g, vol)
				r.mount, r.write, r.wall, r.lastSteps = append(r.mount, ms[0]), append(r.write, w), append(r.wall, wall), steps
				coldMounts = append(coldMounts, len(ms))
				if len(ms) > 1 {
					second = append(second, ms[1])
				}
				assertNoRBD(t, g, "after the plugin's container left")
			} else {
				t0 := time.Now()
				dev, errMsg := g.krbdMap(vol, false)
				if errMsg != "" {
					t.Fatalf("map %s by hand: %s", vol, errMsg)
				}
				g.sh(r.mkfs + " " + dev + " && mount -o nosuid,nodev -t ext4 " + dev + " /mnt/raw")
				m := time.Since(t0)
				w, wall := writeInContainer(t, g, "fm", "/mnt/raw")
				g.sh("umount /mnt/raw")
				g.krbdUnmap(vol)
				r.mount, r.write, r.wall = append(r.mount, m), append(r.write, w), append(r.wall, wall+m)
			}
			dk(g, 2*time.Minute, "volume", "rm", vol)
		}
	}
	base := rows[1]
	for _, r := range rows {
		step(t, "%s: first Mount p50 %d ms (%.2fx the hand-made with the plugin's options), first 16 MiB write+fsync p50 %d ms (%.2fx), mount+docker run p50 %d ms; mounts ms [%s]; writes ms [%s]",
			r.name, p50(r.mount).Milliseconds(), float64(p50(r.mount))/float64(p50(base.mount)),
			p50(r.write).Milliseconds(), float64(p50(r.write))/float64(p50(base.write)), p50(r.wall).Milliseconds(),
			msList(r.mount), msList(r.write))
	}
	step(t, "plugin's steps, last first Mount: %s; cold Mounts per docker run: %v; the second one's p50 %d ms", rows[0].lastSteps, coldMounts, p50OrZero(second).Milliseconds())
	if len(rows[0].mount) != rounds {
		t.Fatalf("%d plugin rounds, want %d", len(rows[0].mount), rounds)
	}
}
