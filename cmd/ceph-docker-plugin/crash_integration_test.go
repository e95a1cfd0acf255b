//go:build integration

package main

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/driver/volclient"
	"github.com/cephdocker/ceph-docker-plugin/rbd/fuse"
)

// Crash tests: the plugin kills itself with SIGKILL at each step boundary of Mount, Unmount,
// Create and Remove (TEST_FAULT_KILL_AT); it is restarted; after its reconcile nothing is leaked
// or mapped twice, the references are right, and the data is intact. With each backend.
func TestCrashAtEachStep(t *testing.T) {
	t.Parallel()
	eachBackend(t, labEnv(t), testCrashAtEachStep)
}

func testCrashAtEachStep(t *testing.T, b backend) {
	l := labEnv(t)
	steps := []struct {
		step driver.FaultStep
		op   string // which call dies
	}{
		{driver.FaultMountAttached, "mount"},
		{driver.FaultMountMapped, "mount"},
		{driver.FaultMountFormatted, "mount"},
		{driver.FaultMountMounted, "mount"},
		{driver.FaultUnmountUnmounted, "unmount"},
		{driver.FaultUnmountUnmapped, "unmount"},
		{driver.FaultUnmountDetached, "unmount"},
		{driver.FaultCreateCreated, "create"},
		{driver.FaultRemoveRemoved, "remove"},
	}
	for _, s := range steps {
		t.Run(strings.ReplaceAll(string(s.step), ":", "-"), func(t *testing.T) {
			t.Parallel() // each step has a plugin and a volume of its own
			p := newPlugin(t, l, "host-a", b.env...)
			name := uniq("crash")
			data := randomData(t, 1<<20)
			sum := sha256.Sum256(data)

			p.start()
			if s.op != "create" {
				// A volume with data on it, cleanly released.
				p.create(name, map[string]string{"size": "1G"})
				path := p.mount(name, "setup")
				writeFile(t, filepath.Join(path, "data.bin"), data)
				p.unmount(name, "setup")
			}
			t.Cleanup(func() { _ = p.try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil) })
			if s.op == "unmount" {
				p.mount(name, "c1")
				p.mount(name, "c2")
				p.unmount(name, "c2") // a reference dropped before the crash
			}
			p.stop()

			// The call that dies.
			p.start("TEST_FAULT_KILL_AT=" + string(s.step))
			var err error
			switch s.op {
			case "mount":
				err = p.try("/VolumeDriver.Mount", map[string]string{"Name": name, "ID": "c1"}, nil)
			case "unmount":
				err = p.try("/VolumeDriver.Unmount", map[string]string{"Name": name, "ID": "c1"}, nil)
			case "create":
				err = p.try("/VolumeDriver.Create", map[string]any{"Name": name, "Opts": map[string]string{"size": "1G"}}, nil)
			case "remove":
				err = p.try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil)
			}
			if err == nil {
				t.Fatalf("the %s call survived a kill at %s", s.op, s.step)
			}
			if _, isAnswer := err.(*volclient.Error); isAnswer {
				t.Fatalf("the plugin answered instead of dying at %s: %v", s.step, err)
			}
			p.waitExit(10 * 1e9)

			// Restart; reconcile runs before calls are served.
			p.start()
			switch s.op {
			case "mount":
				// Docker saw the Mount fail and calls Unmount for it.
				p.unmount(name, "c1")
				p.assertClean()
				if n := p.mappingsOf(b.pool, b.image(p, name)); n != 0 {
					t.Fatalf("%d mappings after the failed mount", n)
				}
				b.assertReleased(p, name)
			case "unmount":
				// The interrupted last Unmount was completed by the reconcile.
				p.assertClean()
				// (Volume states are <name>.json; known-volumes is the list of names seen.)
				if st, _ := filepath.Glob(filepath.Join(p.dir, "state", "*.json")); len(st) != 0 {
					t.Fatalf("state left: %v\n%s", st, p.logs())
				}
				p.unmount(name, "c1") // Docker may retry: harmless
				b.assertReleased(p, name)
			case "create":
				// The image exists; Docker retries Create (compatible): accepted.
				p.create(name, map[string]string{"size": "1G"})
			case "remove":
				msg := p.fail("/VolumeDriver.Get", map[string]string{"Name": name})
				if !strings.Contains(msg, "not found") {
					t.Fatalf("get after a remove that crashed after removing: %q", msg)
				}
				p.assertClean()
				return
			}
			// The volume works and its data is intact; mounted once, mapped once.
			path := p.mount(name, "after")
			p.mount(name, "after2")
			if n := p.mappingsOf(b.pool, b.image(p, name)); n != 1 {
				t.Fatalf("%d mappings, want 1", n)
			}
			if s.op != "create" {
				got, err := os.ReadFile(filepath.Join(path, "data.bin"))
				if err != nil || sha256.Sum256(got) != sum {
					t.Fatalf("data after the crash at %s: %v", s.step, err)
				}
			}
			p.unmount(name, "after")
			p.unmount(name, "after2")
			p.assertClean()
			b.assertReleased(p, name)
			p.remove(name)
		})
	}
}

// The plugin dies together with its rbd-fuse processes (as when its container is killed): the
// restarted plugin finds the mapping dead, maps and mounts the volume again, and the data is
// intact. (With krbd the mapping lives in the kernel and survives; see the lab suite.)
func TestFuseMappingRecoveredAfterPluginDeath(t *testing.T) {
	t.Parallel()
	l := labEnv(t)
	p := newPlugin(t, l, "host-a")
	p.start()
	name := uniq("revive")
	p.create(name, map[string]string{"size": "64M"})
	t.Cleanup(func() { _ = p.try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil) })
	path := p.mount(name, "c1")
	data := randomData(t, 1<<20)
	writeFile(t, filepath.Join(path, "data.bin"), data)

	p.kill9()
	killFuseUnder(t, p.fuseRoot())
	if _, err := os.ReadFile(filepath.Join(path, "data.bin")); err == nil {
		t.Log("note: the page cache still served the file after rbd-fuse died")
	}

	p.start() // reconcile: the dead mapping is replaced
	if n := p.mappingsOf(l.pool, name); n != 1 {
		t.Fatalf("%d live mappings after the restart, want 1\n%s", n, p.logs())
	}
	got, err := os.ReadFile(filepath.Join(path, "data.bin"))
	if err != nil || sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("data after recovery: %v\n%s", err, p.logs())
	}
	if g := p.get(name); g.Volume.Mountpoint != path {
		t.Fatalf("get after recovery: %+v", g.Volume)
	}
	p.mount(name, "c2") // a new container joins
	p.unmount(name, "c1")
	p.unmount(name, "c2")
	p.assertClean()
}

func killFuseUnder(t *testing.T, root string) {
	n := 0
	for _, pid := range fuse.Daemons(root) {
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			n++
		}
	}
	if n == 0 {
		t.Fatal("no rbd-fuse process to kill")
	}
	time.Sleep(200 * time.Millisecond)
}

// A host reboot ends every container: the restarted plugin (a new boot ID) releases the volumes
// recorded before it rather than mapping them again, so another host can take them at once and
// none stays claimed by containers that no longer exist. A container that starts again mounts
// the volume anew, data intact. With each backend.
func TestRebootReleasesVolumes(t *testing.T) {
	t.Parallel()
	eachBackend(t, labEnv(t), testRebootReleasesVolumes)
}

func testRebootReleasesVolumes(t *testing.T, b backend) {
	l := labEnv(t)
	p := newPlugin(t, l, "host-a", b.env...)
	p.start("TEST_BOOT_ID=boot-1")
	name := uniq("reboot")
	p.create(name, map[string]string{"size": "64M"})
	t.Cleanup(func() { _ = p.try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil) })
	path := p.mount(name, "c1")
	p.mount(name, "c2")
	data := randomData(t, 1<<20)
	writeFile(t, filepath.Join(path, "data.bin"), data)
	syscall.Sync()

	// The reboot: the plugin and its rbd-fuse processes die; the restarted plugin sees a new boot.
	p.kill9()
	killFuseUnder(t, p.fuseRoot())
	p.start("TEST_BOOT_ID=boot-2")
	if n := p.mappingsOf(b.pool, b.image(p, name)); n != 0 {
		t.Fatalf("%d mappings after the reboot, want 0\n%s", n, p.logs())
	}
	p.assertClean()
	// The claim (host lock, Cinder attachment) is gone at once; the dead rbd-fuse client's watch
	// lapses within 30 s (a real host takes longer than that to reboot).
	if h, _ := p.get(name).Volume.Status["holder"].(string); strings.Contains(h, "host-a") {
		t.Fatalf("after the reboot the volume is still claimed: %q\n%s", h, p.logs())
	}
	image := b.pool + "/" + b.image(p, name)
	for deadline := time.Now().Add(45 * time.Second); ; time.Sleep(time.Second) {
		h, _ := p.get(name).Volume.Status["holder"].(string)
		st := l.admin(t, "rbd", "status", image)
		if h == "" && strings.Contains(st, "Watchers: none") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the reboot the volume is still held: %q; %s: %s", h, image, st)
		}
	}
	b.assertReleased(p, name)
	if !strings.Contains(p.logs(), "recorded before the host rebooted") {
		t.Fatalf("the plugin did not say why it released the volume:\n%s", p.logs())
	}
	// dockerd's Unmount for the dead containers: harmless.
	p.unmount(name, "c1")
	p.unmount(name, "c2")

	path = p.mount(name, "c3")
	got, err := os.ReadFile(filepath.Join(path, "data.bin"))
	if err != nil || sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("data after the reboot: %v\n%s", err, p.logs())
	}
	p.unmount(name, "c3")
	p.assertClean()
}
