//go:build integration

package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/rbd"
)

// The journal of a read-only volume is replayed at its first read-only use (driver/replay.go):
// these tests make volumes whose ext4 journal needs recovery, as a reader finds them in use, and
// check that readers on two hosts starting at once both read them.

// needsRecovery says whether the ext4 filesystem of image (pool/image) has its journal to replay
// (the needs_recovery feature), from an export of the image.
func needsRecovery(t *testing.T, l lab, image string) bool {
	t.Helper()
	img := filepath.Join(t.TempDir(), "fs.img")
	l.admin(t, "rbd", "export", "--no-progress", image, img)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "dumpe2fs", "-h", img).CombinedOutput()
	if err != nil {
		t.Fatalf("dumpe2fs -h of %s: %v\n%s", image, err, out)
	}
	return strings.Contains(string(out), "needs_recovery")
}

// fsckClean fails t unless e2fsck -f -n finds the ext4 filesystem of image clean.
func fsckClean(t *testing.T, l lab, image string) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "fs.img")
	l.admin(t, "rbd", "export", "--no-progress", image, img)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "e2fsck", "-f", "-n", img).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -f -n of %s: %v\n%s", image, err, out)
	}
}

// mountAtOnce mounts name on every host at the same moment (caller ID "r-" + host) and returns
// their mount points.
func mountAtOnce(t *testing.T, name string, hosts ...*plugin) map[*plugin]string {
	t.Helper()
	paths := make([]string, len(hosts))
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	start := time.Now()
	for i, p := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			paths[i], errs[i] = p.Mount(name, "r-"+p.name)
		}()
	}
	wg.Wait()
	out := map[*plugin]string{}
	for i, p := range hosts {
		if errs[i] != nil {
			t.Fatalf("%s's read-only Mount of %s, started with the others': %v", p.name, name, errs[i])
		}
		out[p] = paths[i]
	}
	t.Logf("%d hosts mounted %s read-only at once in %.1fs", len(hosts), name, time.Since(start).Seconds())
	return out
}

// assertReads fails t unless every host reads file with checksum want and cannot write.
func assertReads(t *testing.T, paths map[*plugin]string, file string, want [32]byte) {
	t.Helper()
	for p, path := range paths {
		got, err := os.ReadFile(filepath.Join(path, file))
		if err != nil || sha256.Sum256(got) != want {
			t.Fatalf("%s reads %s: %v (checksum matches: %v)", p.name, file, err, err == nil && sha256.Sum256(got) == want)
		}
		if err := os.WriteFile(filepath.Join(path, "write.bin"), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
			t.Fatalf("%s writes through its read-only mount: %v, want EROFS", p.name, err)
		}
	}
}

// waitRecords waits up to 60 s for w to have fsynced n records, and returns how many it has.
func waitRecords(t *testing.T, w *fsyncWriter, n int64) int {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); w.synced.Load() < n && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	return int(w.synced.Load())
}

// assertRecords fails t unless every host reads, in the log a fsyncWriter wrote, the first n
// records as they were written.
func assertRecords(t *testing.T, paths map[*plugin]string, n int) {
	t.Helper()
	for p, path := range paths {
		log, err := os.ReadFile(filepath.Join(path, "log"))
		if err != nil || len(log) < n*copyRecord {
			t.Fatalf("%s: the log: %v, %d bytes; want the %d records fsynced before", p.name, err, len(log), n)
		}
		for i := 1; i <= n; i++ {
			if !bytes.Equal(log[(i-1)*copyRecord:i*copyRecord], copyRecordOf(i)) {
				t.Fatalf("%s: record %d differs from what was fsynced", p.name, i)
			}
		}
	}
}

// replays counts the journal replays the hosts' plugins logged, and logs how long each took.
func replays(t *testing.T, hosts ...*plugin) int {
	n := 0
	for _, p := range hosts {
		for _, line := range strings.Split(p.logs(), "\n") {
			if strings.Contains(line, `msg="journal replayed;`) {
				n++
				_, d, _ := strings.Cut(line, "duration=")
				d, _, _ = strings.Cut(d, " ")
				t.Logf("%s replayed the journal in %s", p.name, d)
			}
		}
	}
	return n
}

// (a) A -o from-snapshot clone, made readonly, of a volume mounted and written on host-a (its
// snapshot taken with the filesystem mounted: the journal needs recovery) is mounted by host-b
// and host-c at the same moment: one of them replays the journal, both read what host-a had
// fsynced, neither can write, and the clone is clean for e2fsck afterwards.
func TestReadOnlyCloneOfAMountedVolume(t *testing.T) {
	t.Parallel()
	l := labEnv(t)
	a, b, c := newPlugin(t, l, "host-a"), newPlugin(t, l, "host-b"), newPlugin(t, l, "host-c")
	for _, p := range []*plugin{a, b, c} {
		p.start()
	}
	src, cl := uniq("rpsrc"), uniq("rpclone")
	a.create(src, map[string]string{"size": "256M"})
	t.Cleanup(func() { _ = a.try("/VolumeDriver.Remove", map[string]string{"Name": src}, nil) })
	snap := l.pool + "/" + src + "@s1"
	t.Cleanup(func() {
		// The clone's parent snapshot (protected by the clone's Create): once the clone is gone.
		_ = b.try("/VolumeDriver.Remove", map[string]string{"Name": cl}, nil)
		l.admin(t, "rbd", "snap", "unprotect", snap)
		l.admin(t, "rbd", "snap", "purge", l.pool+"/"+src)
	})
	pathA := a.mount(src, "a1")
	t.Cleanup(func() { _ = a.try("/VolumeDriver.Unmount", map[string]string{"Name": src, "ID": "a1"}, nil) })
	data := randomData(t, 1<<20)
	writeFile(t, filepath.Join(pathA, "data.bin"), data)
	w := startFsyncWriter(pathA)
	before := waitRecords(t, w, 50)
	l.admin(t, "rbd", "snap", "create", snap)
	if err := w.end(); err != nil {
		t.Fatalf("the fsyncWriter on host-a: %v", err)
	}
	if before < 50 {
		t.Fatalf("the fsyncWriter fsynced only %d records in 60 s", before)
	}
	if !needsRecovery(t, l, snap) {
		t.Fatal("the snapshot of the mounted volume does not need recovery: the test would prove nothing")
	}

	b.create(cl, map[string]string{"from-snapshot": src + "@s1", "access": driver.AccessReadOnly})
	paths := mountAtOnce(t, cl, b, c)
	assertReads(t, paths, "data.bin", sha256.Sum256(data))
	assertRecords(t, paths, before)
	n := replays(t, b, c)
	t.Logf("host-b and host-c read the clone (every one of the %d records fsynced before the snapshot); %d journal replay(s)", before, n)
	if n < 1 || n > 2 {
		t.Errorf("%d journal replays logged; want one (or two, one after the other)", n)
	}
	for p := range paths {
		p.unmount(cl, "r-"+p.name)
		p.assertClean()
	}
	if needsRecovery(t, l, l.pool+"/"+cl) {
		t.Error("the clone still needs recovery after its replay")
	}
	fsckClean(t, l, l.pool+"/"+cl)
}

// (b) A volume whose writer's host died (host-a: its plugin and rbd-fuse killed -9 while a
// fsyncWriter wrote; it restarts as after a reboot and releases the volume), then switched to
// readonly, is mounted by host-b and host-c at the same moment: its journal, left to replay,
// is replayed once, and both read every record fsynced before the crash. With each backend
// (Cinder: a multiattach type, for two readers).
func TestReadOnlyAfterWriterCrash(t *testing.T) {
	t.Parallel()
	l := labEnv(t)
	eachBackend(t, l, func(t *testing.T, be backend) { testReadOnlyAfterWriterCrash(t, l, be) })
}

func testReadOnlyAfterWriterCrash(t *testing.T, l lab, be backend) {
	a := newPlugin(t, l, "host-a", be.env...)
	b, c := newPlugin(t, l, "host-b", be.env...), newPlugin(t, l, "host-c", be.env...)
	a.start("TEST_BOOT_ID=boot-1")
	b.start()
	c.start()
	name := uniq("rpcrash")
	opts := map[string]string{"size": "256M"}
	if be.name == "cinder" {
		opts["volume-type"] = "rbd-multiattach"
	}
	a.create(name, opts)
	t.Cleanup(func() { _ = b.try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil) })
	image := be.pool + "/" + be.image(a, name)
	switchAccess := func(access string) {
		if be.name == "cinder" {
			setAccess(t, blockStorage(t), strings.TrimPrefix(be.image(a, name), "volume-"), access)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := adminCluster(t, l).SetMetas(ctx, rbd.Spec{Pool: l.pool, Image: name}, map[string]string{driver.MetaAccess: access}); err != nil {
			t.Fatal(err)
		}
	}

	path := a.mount(name, "w1")
	data := randomData(t, 1<<20)
	writeFile(t, filepath.Join(path, "data.bin"), data)
	w := startFsyncWriter(path)
	waitRecords(t, w, 50)
	// host-a dies mid-write: its plugin and its rbd-fuse daemons.
	a.kill9()
	killFuseUnder(t, a.fuseRoot())
	before := int(w.synced.Load())
	_ = w.end() // its writes fail now
	if before < 50 {
		t.Fatalf("the fsyncWriter fsynced only %d records in 60 s", before)
	}
	// host-a comes back (a new boot): it releases the volume. The dead client's watch lapses.
	a.start("TEST_BOOT_ID=boot-2")
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(time.Second) {
		h, _ := a.get(name).Volume.Status["holder"].(string)
		if h == "" && strings.Contains(l.admin(t, "rbd", "status", image), "Watchers: none") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after host-a's crash and restart the volume is still held: %q", h)
		}
	}
	a.assertClean()
	if !needsRecovery(t, l, image) {
		t.Fatal("the volume does not need recovery after its writer's crash: the test would prove nothing")
	}

	switchAccess(driver.AccessReadOnly)
	paths := mountAtOnce(t, name, b, c)
	assertReads(t, paths, "data.bin", sha256.Sum256(data))
	assertRecords(t, paths, before)
	n := replays(t, b, c)
	t.Logf("%s: host-b and host-c read the volume after its writer's crash (all %d records fsynced before it); %d journal replay(s)", be.name, before, n)
	if n < 1 || n > 2 {
		t.Errorf("%d journal replays logged; want one (or two, one after the other)", n)
	}
	for p := range paths {
		p.unmount(name, "r-"+p.name)
		p.assertClean()
	}
	be.assertReleased(b, name)
	fsckClean(t, l, image)
}

// The CSI node's stage for MULTI_NODE_READER_ONLY (through the binary, BACKEND=rbd) of a volume
// made with --opt from-snapshot from a snapshot of a staged, written volume: the stage replays the
// journal and the reader reads what the writer fsynced.
func TestCSIReadersStageReplaysTheJournal(t *testing.T) {
	t.Parallel()
	l := labEnv(t)
	n := newCSINode(t, l, "csi-rp")
	n.startCSI(n.endpoint)
	src, cl := uniq("csirpsrc"), uniq("csirpclone")
	n.createVolume(t, src, 256<<20, swarmCap)
	must(t, "stage and publish for the writer", n.stageAs(t, src, swarmCap, false))
	data := randomData(t, 1<<20)
	writeFile(t, filepath.Join(n.target(), "data"), data)
	snap := l.pool + "/" + src + "@s1"
	l.admin(t, "rbd", "snap", "create", snap) // while the writer's filesystem is mounted
	t.Cleanup(func() {
		_, _ = n.ctrl.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: cl})
		l.admin(t, "rbd", "snap", "unprotect", snap)
		l.admin(t, "rbd", "snap", "purge", l.pool+"/"+src)
	})
	n.release(t, src)
	if !needsRecovery(t, l, snap) {
		t.Fatal("the snapshot of the staged volume does not need recovery: the test would prove nothing")
	}
	_, err := n.ctrl.CreateVolume(cctx(t), &csi.CreateVolumeRequest{Name: cl, VolumeCapabilities: []*csi.VolumeCapability{readersCap},
		Parameters: map[string]string{"from-snapshot": src + "@s1"}})
	must(t, "CreateVolume "+cl+" from the snapshot", err)
	must(t, "stage and publish the clone for readers", n.stageAs(t, cl, readersCap, true))
	got, err := os.ReadFile(filepath.Join(n.target(), "data"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the reader reads %d bytes, %v; want what the writer wrote", len(got), err)
	}
	if err := os.WriteFile(filepath.Join(n.target(), "new"), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("a write at the reader's target: %v; want EROFS", err)
	}
	if r := replays(t, n.plugin); r != 1 {
		t.Errorf("%d journal replays logged; want 1", r)
	}
	n.release(t, cl)
	n.assertClean()
}
