//go:build e2e

package plugin

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/plugin/plugintest"
)

// growVolume makes the volume's image gib GiB, as an operator would: rbd resize as client.admin,
// or an extend of the Cinder volume (in use: microversion 3.42).
func growVolume(t *testing.T, name string, gib int) {
	t.Helper()
	var script string
	if cinderMode() {
		id, _ := inspectStatus(t, name)["cinder-id"].(string)
		script = fmt.Sprintf("set -a; . %s; exec env OS_VOLUME_API_VERSION=3.42 /usr/bin/openstack volume set --size %d %s",
			filepath.Join(plugintest.LabDir(), "openstack", "env"), gib, id)
	} else {
		script = fmt.Sprintf(`set -a; . %s; exec rbd -c "$CEPH_CONF" -n client.admin -k "$CEPH_ADMIN_KEYRING" resize --size %dG volumes/%s`,
			filepath.Join(plugintest.LabDir(), "ceph", "env"), gib, name)
	}
	if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("grow %s to %d GiB: %v\n%s", name, gib, err, out)
	}
}

// dfKiB is the size df reports inside the container for /data.
func dfKiB(t *testing.T, id string) int {
	t.Helper()
	f := strings.Fields(must(t, "exec", id, "sh", "-c", "df -k /data | tail -1"))
	if len(f) < 2 {
		t.Fatalf("df in the container: %v", f)
	}
	n, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatalf("df in the container: %v", f)
	}
	return n
}

// A volume grown while a container writes to it: the container sees the bigger filesystem within
// GROW_INTERVAL (30 s, the installed plugin's default) plus the grow, without a restart, and
// goes on writing. xfs: this lab cannot grow a mounted ext4 (no CAP_SYS_RESOURCE; see README).
func TestVolumeGrowsWhileContainerWrites(t *testing.T) {
	name := uniq("grow")
	volume(t, name, "size=1G", "fstype=xfs")
	id := must(t, "run", "-d", "--network", "none", "-v", name+":/data", "busybox", "sh", "-c",
		"i=0; while true; do i=$((i+1)); echo record $i >> /data/log; sync; sleep 0.2; done")
	t.Cleanup(func() { _, _ = docker(t, time.Minute, "rm", "-f", id) })
	before := dfKiB(t, id)
	if before > 1<<20 {
		t.Fatalf("a new 1G volume: df says %d KiB", before)
	}
	start := time.Now()
	growVolume(t, name, 2)
	const bound = 30*time.Second + 45*time.Second // GROW_INTERVAL, then Cinder's extend, the fuse refresh and the grow
	for dfKiB(t, id) < 3<<19 {
		if time.Since(start) > bound {
			t.Fatalf("the container still sees %d KiB %s after the volume grew to 2G; status %v", dfKiB(t, id), bound, inspectStatus(t, name))
		}
		time.Sleep(time.Second)
	}
	took := time.Since(start)
	n1 := must(t, "exec", id, "sh", "-c", "wc -l < /data/log")
	time.Sleep(time.Second)
	if n2 := must(t, "exec", id, "sh", "-c", "wc -l < /data/log"); n2 == n1 {
		t.Fatalf("the container stopped writing after the grow (%s records)", n1)
	}
	st := inspectStatus(t, name)
	if st["filesystem-size"] != "2G" || !strings.Contains(fmt.Sprint(st["resize"]), "while mounted") {
		t.Errorf("inspect after the grow: %v", st)
	}
	t.Logf("the container saw %d KiB -> %d KiB %s after the grow request; inspect: size %v, filesystem-size %v",
		before, dfKiB(t, id), took.Round(time.Second), st["size"], st["filesystem-size"])
}
