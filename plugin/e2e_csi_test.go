//go:build e2e

package plugin

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/plugin/plugintest"
)

// Swarm cluster volumes on Ceph through the CSI plugin (make e2e-csi, Docker 28): a volume made
// with `docker volume create --type mount --group`, a service that mounts it with type=cluster and
// writes, `docker service update --force` that replaces the task (the new one reads the data
// back), the service removed, the volume drained and removed with its RBD image, nothing left.
func TestClusterVolumes(t *testing.T) {
	plugin := os.Getenv("CDP_CSI_PLUGIN")
	if plugin == "" {
		t.Skip("run by make e2e-csi (Docker 28 and the ceph-csi plugin)")
	}
	// The volume-protocol plugins see the same pool: with them enabled, `docker volume rm NAME`
	// would go to them rather than to the cluster volume. (See docs/CSI.md.)
	for _, p := range []string{"ceph:latest", "ceph-cinder:latest"} {
		if out, err := docker(t, time.Minute, "plugin", "inspect", "-f", "{{.Enabled}}", p); err == nil && out == "true" {
			must(t, "plugin", "disable", "-f", p)
			t.Cleanup(func() { _, _ = docker(t, time.Minute, "plugin", "enable", "--timeout", "120", p) })
		}
	}
	if out, _ := docker(t, 30*time.Second, "info", "-f", "{{.Swarm.LocalNodeState}}"); out != "active" {
		must(t, "swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", swarmListenAddr())
		t.Cleanup(func() { _, _ = docker(t, time.Minute, "swarm", "leave", "--force") })
	}

	name := uniq("cv")
	must(t, "volume", "create", "--driver", plugin, "--type", "mount", "--scope", "single", "--sharing", "none",
		"--availability", "active", "--group", "db", "--required-bytes", "1G", "--opt", "fstype=ext4", name)
	t.Cleanup(func() {
		_, _ = docker(t, time.Minute, "volume", "update", "--availability", "drain", name)
		_, _ = docker(t, time.Minute, "volume", "rm", "-f", name)
	})
	waitCluster(t, name, 90*time.Second, func(st clusterVolume) bool { return st.ID != "" && st.Info.VolumeID != "" })
	if !rbdImageExists(t, name) {
		t.Fatalf("cluster volume %s: no RBD image volumes/%s", name, name)
	}

	svc := uniq("cvsvc")
	must(t, "service", "create", "--detach", "--name", svc, "--network", "host",
		"--mount", "type=cluster,src="+name+",dst=/data", "busybox",
		"sh", "-c", "[ -f /data/first ] || (head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /data/first; sync); sleep 600")
	t.Cleanup(func() { _, _ = docker(t, time.Minute, "service", "rm", svc) })
	first := serviceTask(t, svc, "", 3*time.Minute)
	data := strings.TrimSpace(waitExec(t, first, "cat /data/first"))
	if len(data) != 32 {
		t.Fatalf("the task wrote %q", data)
	}
	st := waitCluster(t, name, time.Minute, func(st clusterVolume) bool {
		return len(st.PublishStatus) == 1 && st.PublishStatus[0].State == "published"
	})
	t.Logf("volume %s published on node %s", name, st.PublishStatus[0].NodeID)

	must(t, "service", "update", "--detach", "--force", svc)
	second := serviceTask(t, svc, first, 3*time.Minute)
	if got := strings.TrimSpace(waitExec(t, second, "cat /data/first")); got != data {
		t.Fatalf("after service update --force the new task reads %q, want %q", got, data)
	}

	must(t, "service", "rm", svc)
	waitCluster(t, name, 2*time.Minute, func(st clusterVolume) bool { return len(st.PublishStatus) == 0 || st.PublishStatus[0].State == "" })
	must(t, "volume", "update", "--availability", "drain", name)
	must(t, "volume", "rm", name)
	deadline := time.Now().Add(2 * time.Minute)
	for rbdImageExists(t, name) || clusterVolumeListed(t, name) {
		if time.Now().After(deadline) {
			t.Fatalf("cluster volume %s still listed or its image still there 2 min after docker volume rm", name)
		}
		time.Sleep(time.Second)
	}
}

type clusterVolume struct {
	ID   string
	Info struct {
		VolumeID string
	}
	PublishStatus []struct {
		NodeID string
		State  string
	}
}

// waitCluster waits until the cluster volume's status satisfies ok and returns it.
func waitCluster(t *testing.T, name string, d time.Duration, ok func(clusterVolume) bool) clusterVolume {
	t.Helper()
	deadline := time.Now().Add(d)
	var last string
	for {
		out, err := docker(t, 30*time.Second, "volume", "inspect", "-f", "{{json .ClusterVolume}}", name)
		last = out
		var cv clusterVolume
		if err == nil && json.Unmarshal([]byte(out), &cv) == nil && ok(cv) {
			return cv
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster volume %s: not in the expected state after %s: %s", name, d, last)
		}
		time.Sleep(time.Second)
	}
}

func clusterVolumeListed(t *testing.T, name string) bool {
	out, _ := docker(t, 30*time.Second, "volume", "ls", "--cluster", "-q")
	for _, n := range strings.Fields(out) {
		if n == name {
			return true
		}
	}
	return false
}

// serviceTask waits for the service's running container other than not and returns its ID.
func serviceTask(t *testing.T, svc, not string, d time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		for _, id := range strings.Fields(must(t, "ps", "-q", "--no-trunc", "--filter", "label=com.docker.swarm.service.name="+svc)) {
			if id != not {
				return id
			}
		}
		if time.Now().After(deadline) {
			ps, _ := docker(t, 30*time.Second, "service", "ps", "--no-trunc", svc)
			t.Fatalf("service %s has no new running task after %s:\n%s", svc, d, ps)
		}
		time.Sleep(time.Second)
	}
}

// waitExec runs a shell command in the container until it succeeds (the task may still be
// writing) and returns its output.
func waitExec(t *testing.T, id, script string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := docker(t, 30*time.Second, "exec", id, "sh", "-c", script)
		if err == nil && strings.TrimSpace(out) != "" {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("docker exec %s %q: %v %s", id, script, err, out)
		}
		time.Sleep(time.Second)
	}
}

// rbdImageExists asks Ceph (as client.admin) whether volumes/<name> exists.
func rbdImageExists(t *testing.T, name string) bool {
	t.Helper()
	out, err := plugintest.MustCeph(t).Admin("rbd", "ls", "volumes")
	if err != nil {
		t.Fatalf("rbd ls: %v", err)
	}
	for _, n := range strings.Fields(out) {
		if n == name {
			return true
		}
	}
	return false
}
