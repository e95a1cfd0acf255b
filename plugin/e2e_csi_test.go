//go:build e2e

package plugin

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
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
	plugin := clusterSetup(t)
	name := uniq("cv")
	createClusterVolume(t, plugin, name, "--type", "mount", "--group", "db", "--opt", "fstype=ext4")
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

	removeServiceAndVolume(t, svc, name)
}

// clusterSetup returns the CSI plugin's name, with a single-node swarm up (made for the test if
// there was none). The volume-protocol plugins are disabled for the test: this suite checks the
// CSI plugin alone (the plugin's integration tests check the two front ends on one pool).
func clusterSetup(t *testing.T) string {
	t.Helper()
	plugin := os.Getenv("CDP_CSI_PLUGIN")
	if plugin == "" {
		t.Skip("run by make e2e-csi (Docker 28 and the ceph-csi plugin)")
	}
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
	return plugin
}

// A `--type block` cluster volume: the service's container gets the raw device (a block device
// node) at its mount target, not a filesystem. What is written to that device node (through the
// file the container's mount is bound from: Docker gives a service's container no access to
// block devices in its device cgroup, and a service cannot be given any) is read back by the
// task that `service update --force` starts; after the service, the drained volume is removed
// with its image, and nothing is left mapped.
func TestClusterVolumesBlock(t *testing.T) {
	plugin := clusterSetup(t)
	name := uniq("cvblk")
	createClusterVolume(t, plugin, name, "--type", "block")

	svc := uniq("cvblksvc")
	must(t, "service", "create", "--detach", "--name", svc, "--network", "host",
		"--mount", "type=cluster,src="+name+",dst=/dev/cephvol", "busybox", "sleep", "600")
	t.Cleanup(func() { _, _ = docker(t, time.Minute, "service", "rm", svc) })
	first := serviceTask(t, svc, "", 3*time.Minute)
	if out := waitExec(t, first, "test -b /dev/cephvol && echo block"); strings.TrimSpace(out) != "block" {
		t.Fatalf("the task's /dev/cephvol is not a block device: %q", out)
	}
	// What the container itself may do with it (Docker's device cgroup decides; logged).
	out, err := docker(t, 30*time.Second, "exec", first, "sh", "-c", "dd if=/dev/cephvol of=/dev/null bs=4096 count=1 2>&1")
	t.Logf("reading the device inside the service's container: %v %s", err, strings.TrimSpace(out))

	src := mountSource(t, first, "/dev/cephvol")
	data := []byte(uniq("written-to-the-raw-device"))
	f, err := os.OpenFile(src, os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("open the published device %s: %v", src, err)
	}
	if _, err := f.WriteAt(data, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(src); err != nil || fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
		t.Fatalf("the published path %s is %v, %v; want a block device node", src, fi, err)
	}

	must(t, "service", "update", "--detach", "--force", svc)
	second := serviceTask(t, svc, first, 3*time.Minute)
	src = mountSource(t, second, "/dev/cephvol")
	got := make([]byte, len(data))
	f, err = os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.ReadAt(got, 1<<20)
	f.Close()
	if err != nil || string(got) != string(data) {
		t.Fatalf("the new task's device reads %q, %v; want %q", got, err, data)
	}

	removeServiceAndVolume(t, svc, name)
}

// removeServiceAndVolume removes the services, waits for swarm to unpublish the volume, drains and
// removes it, and checks that its RBD image is gone and nothing maps it any more.
func removeServiceAndVolume(t *testing.T, svc, name string, more ...string) {
	t.Helper()
	must(t, append([]string{"service", "rm", svc}, more...)...)
	waitCluster(t, name, 2*time.Minute, func(st clusterVolume) bool { return len(st.PublishStatus) == 0 || st.PublishStatus[0].State == "" })
	removeVolume(t, name)
}

// removeVolume drains and removes an unpublished cluster volume, and checks that its RBD image is
// gone and nothing maps it any more.
func removeVolume(t *testing.T, name string) {
	t.Helper()
	must(t, "volume", "update", "--availability", "drain", name)
	must(t, "volume", "rm", name)
	deadline := time.Now().Add(2 * time.Minute)
	for rbdImageExists(t, name) || clusterVolumeListed(t, name) {
		if time.Now().After(deadline) {
			t.Fatalf("cluster volume %s still listed or its image still there 2 min after docker volume rm", name)
		}
		time.Sleep(time.Second)
	}
	assertUnmapped(t, name)
}

// A `--scope multi --sharing readonly` cluster volume (MULTI_NODE_READER_ONLY) read by two
// services at once. Swarm fixes a cluster volume's access mode when it creates it, and a volume
// read by many nodes is mapped read-only, so it is never formatted or written through itself: it
// is made with its data. As a user would with BACKEND=rbd: a `--sharing none` volume filled by a
// service, its service removed (the plugin unmounts it cleanly at the last unpublish), an RBD
// snapshot of it (rbd snap create), and the readonly volume made from that snapshot with
// `--opt from-snapshot=SRC@SNAP` (a clone). Both services' tasks read the payload's checksum,
// their writes fail, the volume's device is mapped read-only; everything is removed after,
// snapshot included, and nothing is left mapped.
func TestClusterVolumesReadOnly(t *testing.T) {
	plugin := clusterSetup(t)
	src := uniq("cvsrc")
	createClusterVolume(t, plugin, src, "--type", "mount", "--opt", "fstype=ext4")
	fill := uniq("cvfill")
	must(t, "service", "create", "--detach", "--name", fill, "--network", "host",
		"--mount", "type=cluster,src="+src+",dst=/data", "busybox",
		"sh", "-c", "head -c 4194304 /dev/urandom > /data/payload && md5sum /data/payload | cut -d' ' -f1 > /data/sum && sync; sleep 600")
	t.Cleanup(func() { _, _ = docker(t, time.Minute, "service", "rm", fill) })
	sum := strings.TrimSpace(waitExec(t, serviceTask(t, fill, "", 3*time.Minute), "cat /data/sum"))
	if len(sum) != 32 {
		t.Fatalf("the filling task wrote the checksum %q", sum)
	}
	must(t, "service", "rm", fill)
	waitCluster(t, src, 2*time.Minute, func(st clusterVolume) bool { return len(st.PublishStatus) == 0 || st.PublishStatus[0].State == "" })

	ceph := plugintest.MustCeph(t)
	snap := "volumes/" + src + "@ro"
	if out, err := ceph.Admin("rbd", "snap", "create", snap); err != nil {
		t.Fatalf("rbd snap create %s: %v %s", snap, err, out)
	}
	// After a failure: removed (best effort) after the readonly volume's clean-up and before the
	// source volume's (cleanups run in reverse). The test itself removes it and checks.
	t.Cleanup(func() {
		_, _ = ceph.Admin("rbd", "snap", "unprotect", snap)
		_, _ = ceph.Admin("rbd", "snap", "rm", snap)
	})
	ro := uniq("cvro")
	createClusterVolumeAs(t, plugin, ro, "multi", "readonly", "--type", "mount", "--opt", "from-snapshot="+src+"@ro")

	var svcs, tasks []string
	for i := 0; i < 2; i++ {
		svc := uniq("cvrosvc")
		must(t, "service", "create", "--detach", "--name", svc, "--network", "host",
			"--mount", "type=cluster,src="+ro+",dst=/data,readonly", "busybox", "sleep", "600")
		t.Cleanup(func() { _, _ = docker(t, time.Minute, "service", "rm", svc) })
		svcs = append(svcs, svc)
	}
	for _, svc := range svcs {
		task := serviceTask(t, svc, "", 3*time.Minute)
		tasks = append(tasks, task)
		if got := strings.TrimSpace(waitExec(t, task, "md5sum /data/payload | cut -d' ' -f1")); got != sum {
			t.Errorf("service %s reads a payload with the checksum %q; want %q", svc, got, sum)
		}
		if got := strings.TrimSpace(waitExec(t, task, "cat /data/sum")); got != sum {
			t.Errorf("service %s reads the recorded checksum %q; want %q", svc, got, sum)
		}
		out, err := docker(t, 30*time.Second, "exec", task, "sh", "-c", "echo x > /data/new")
		if err == nil || !strings.Contains(out, "Read-only file system") {
			t.Errorf("a write in service %s's task: %v %q; want it refused (read-only file system)", svc, err, out)
		}
	}
	if !mappedReadOnly(t, ro) {
		t.Errorf("the readonly volume %s is not mapped read-only on the host", ro)
	}
	removeServiceAndVolume(t, svcs[0], ro, svcs[1])
	if out, err := ceph.Admin("rbd", "snap", "unprotect", snap); err != nil {
		t.Fatalf("rbd snap unprotect %s after the clone's removal: %v %s", snap, err, out)
	}
	if out, err := ceph.Admin("rbd", "snap", "rm", snap); err != nil {
		t.Fatalf("rbd snap rm %s: %v %s", snap, err, out)
	}
	removeVolume(t, src)
}

// mappedReadOnly says whether a loop device of the host backed by the image (the fuse mapper's
// mapping) is read-only, from sysfs; false when none is.
func mappedReadOnly(t *testing.T, image string) bool {
	t.Helper()
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil || !strings.HasSuffix(strings.TrimSpace(string(b)), "/"+image) {
			continue
		}
		ro, err := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(f)), "ro"))
		return err == nil && strings.TrimSpace(string(ro)) == "1"
	}
	return false
}

// The volume plugin and the CSI plugin side by side on one pool (Docker 28's real daemon, both
// plugins built from this tree): the volume plugin refuses the cluster volume, so that `docker
// volume inspect` shows the cluster volume, `docker volume create --driver <volume plugin>` of
// its name is refused naming the front end that made it, and `docker volume rm` of the drained
// cluster volume reaches swarm, which deletes it through the CSI plugin (before the front ends
// were recorded, the volume plugin took the rm and deleted the image under swarm).
func TestClusterVolumesBesideVolumePlugin(t *testing.T) {
	volPlugin := os.Getenv("CDP_PLUGIN")
	if volPlugin == "" {
		t.Skip("run by make e2e-csi (it builds the volume plugin too)")
	}
	plugin := clusterSetup(t)
	if out, _ := docker(t, time.Minute, "plugin", "inspect", "-f", "{{.Enabled}}", volPlugin); out != "true" {
		must(t, "plugin", "enable", "--timeout", "120", volPlugin)
	}
	name := uniq("cvfe")
	createClusterVolume(t, plugin, name, "--type", "mount")

	// A listing first: dockerd may then know the name under the volume plugin too (its List is
	// not filtered), and must still turn to the cluster volume.
	for _, l := range strings.Fields(must(t, "volume", "ls", "--format", "{{.Driver}}/{{.Name}}")) {
		if strings.HasSuffix(l, "/"+name) {
			t.Logf("docker volume ls: %s", l)
		}
	}
	if out := must(t, "volume", "inspect", "-f", "{{.Driver}} {{if .ClusterVolume}}cluster{{end}}", name); out != plugin+" cluster" {
		t.Errorf("docker volume inspect %s: %q; want the cluster volume of %s", name, out, plugin)
	}
	msg := mustFail(t, "volume", "create", "--driver", volPlugin, name)
	for _, want := range []string{"volume " + name + " belongs to the plugin's other front end", "swarm cluster volumes"} {
		if !strings.Contains(msg, want) {
			t.Errorf("docker volume create --driver %s %s: %q; want it to say %q", volPlugin, name, msg, want)
		}
	}
	if !rbdImageExists(t, name) {
		t.Fatalf("the cluster volume's image is gone after the volume plugin's create was refused")
	}
	must(t, "volume", "update", "--availability", "drain", name)
	must(t, "volume", "rm", name)
	deadline := time.Now().Add(2 * time.Minute)
	for rbdImageExists(t, name) || clusterVolumeListed(t, name) {
		if time.Now().After(deadline) {
			t.Fatalf("2 min after docker volume rm: image there %t, cluster volume listed %t; want swarm to have deleted both",
				rbdImageExists(t, name), clusterVolumeListed(t, name))
		}
		time.Sleep(time.Second)
	}
}

// createClusterVolume makes a 1 GiB single-node cluster volume with the extra flags given, and
// waits until swarm has created it through the plugin; it is drained and removed at cleanup.
func createClusterVolume(t *testing.T, plugin, name string, extra ...string) {
	t.Helper()
	createClusterVolumeAs(t, plugin, name, "single", "none", extra...)
}

// createClusterVolumeAs is createClusterVolume with the given --scope and --sharing.
func createClusterVolumeAs(t *testing.T, plugin, name, scope, sharing string, extra ...string) {
	t.Helper()
	args := append([]string{"volume", "create", "--driver", plugin, "--scope", scope, "--sharing", sharing,
		"--availability", "active", "--required-bytes", "1G"}, extra...)
	record(name) // its image is volumes/<name>: the leftovers check looks for its loop device
	must(t, append(args, name)...)
	t.Cleanup(func() {
		_, _ = docker(t, time.Minute, "volume", "update", "--availability", "drain", name)
		_, _ = docker(t, time.Minute, "volume", "rm", "-f", name)
	})
	waitCluster(t, name, 90*time.Second, func(st clusterVolume) bool { return st.ID != "" && st.Info.VolumeID != "" })
}

// mountSource is the host path a container's mount at dst is bound from.
func mountSource(t *testing.T, id, dst string) string {
	t.Helper()
	var mounts []struct{ Source, Destination string }
	if err := json.Unmarshal([]byte(must(t, "inspect", "-f", "{{json .Mounts}}", id)), &mounts); err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		if m.Destination == dst {
			return m.Source
		}
	}
	t.Fatalf("container %s has no mount at %s: %+v", id, dst, mounts)
	return ""
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

// assertUnmapped fails if a loop device of the host is still backed by the image (the fuse
// mapper's mapping), read from sysfs (losetup may hang on a loop device of a dead FUSE server).
func assertUnmapped(t *testing.T, image string) {
	t.Helper()
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.HasSuffix(strings.TrimSpace(string(b)), "/"+image) {
			t.Errorf("%s: the image %s is still mapped (%s)", f, image, strings.TrimSpace(string(b)))
		}
	}
}
