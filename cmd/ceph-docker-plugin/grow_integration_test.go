//go:build integration

package main

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// growInterval is GROW_INTERVAL in these tests; growBound is how long after a resize the new size
// must be visible in the mounted filesystem: one interval, the fuse mapper's view of the image
// (rbd-fuse's header refresh and the kernel's FUSE attribute cache), the grow itself, and slack
// for a machine loaded by other tests.
const (
	growInterval = 2 * time.Second
	growBound    = growInterval + 20*time.Second
)

// resizeVolume makes the volume's image gib GiB: rbd resize as client.admin with BACKEND=rbd, an
// extend of the Cinder volume (in use: microversion 3.42) with BACKEND=cinder.
func resizeVolume(t *testing.T, l lab, p *plugin, b backend, name string, gib int) {
	t.Helper()
	if b.name == "rbd" {
		l.admin(t, "rbd", "resize", "--size", fmt.Sprintf("%dG", gib), b.pool+"/"+name)
		return
	}
	id, _ := p.get(name).Volume.Status["cinder-id"].(string)
	cmd := exec.Command("/usr/bin/openstack", "volume", "set", "--size", fmt.Sprint(gib), id)
	cmd.Env = append(os.Environ(), "OS_VOLUME_API_VERSION=3.42")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openstack volume set --size %d %s: %v\n%s", gib, id, err, out)
	}
	// Cinder extends the image asynchronously: wait until the volume says the new size.
	deadline := time.Now().Add(60 * time.Second)
	for {
		var show struct {
			Size   int
			Status string
		}
		openstackCLI(t, &show, "volume", "show", id)
		if show.Size == gib && show.Status != "extending" {
			if show.Status == "error_extending" || show.Status == "error" {
				t.Fatalf("cinder volume %s: status %s after extend", id, show.Status)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cinder volume %s: size %d status %s 60 s after extend to %d GiB", id, show.Size, show.Status, gib)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// fsSize is the size statfs reports for the filesystem at path (without its own overhead).
func fsSize(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * uint64(st.Bsize)
}

// writer appends fsynced records to a file, as a container would, until stopped.
type writer struct {
	stop    chan struct{}
	done    chan struct{}
	records atomic.Int64
	errMu   sync.Mutex
	err     error
	sum     [32]byte
}

func startWriter(t *testing.T, file string) *writer {
	w := &writer{stop: make(chan struct{}), done: make(chan struct{})}
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(w.done)
		defer f.Close()
		h := sha256.New()
		rec := make([]byte, 64<<10)
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				copy(w.sum[:], h.Sum(nil))
				return
			default:
			}
			copy(rec, fmt.Sprintf("record %d\n", i))
			if _, err := f.Write(rec); err == nil {
				err = f.Sync()
			}
			if err != nil {
				w.errMu.Lock()
				w.err = err
				w.errMu.Unlock()
				copy(w.sum[:], h.Sum(nil))
				return
			}
			h.Write(rec)
			w.records.Add(1)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return w
}

func (w *writer) finish(t *testing.T) [32]byte {
	t.Helper()
	close(w.stop)
	<-w.done
	if w.err != nil {
		t.Fatalf("the writer failed after %d records: %v", w.records.Load(), w.err)
	}
	if w.records.Load() == 0 {
		t.Fatal("the writer wrote nothing")
	}
	return w.sum
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// An image grown while its volume is mounted and written to: the plugin grows the filesystem
// within one GROW_INTERVAL (with GROW_INTERVAL=2s here), without a remount, and the writer goes
// on; inspect shows the image and filesystem sizes. An image grown while the volume is not
// mounted: the next Mount grows the filesystem before handing it out. ext4, xfs; rbd, cinder.
//
// ext4 grows while mounted only for a process with CAP_SYS_RESOURCE; this lab's root lacks it
// (its bounding set), so there the plugin must say why in inspect and grow at the next Mount.
func TestGrowVolumes(t *testing.T) {
	t.Parallel()
	l := labEnv(t)
	const gib = uint64(1 << 30)
	eachBackend(t, l, func(t *testing.T, b backend) {
		p := newPlugin(t, l, "host-a", append(b.env, "GROW_INTERVAL="+growInterval.String())...)
		p.start()
		for _, fstype := range []string{"ext4", "xfs"} {
			t.Run(fstype, func(t *testing.T) {
				name := uniq("grow-" + fstype)
				p.create(name, map[string]string{"size": "1G", "fstype": fstype})
				t.Cleanup(func() { _ = p.try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil) })
				path := p.mount(name, "c1")
				if s := fsSize(t, path); s > gib {
					t.Fatalf("new 1G volume: statfs says %d bytes", s)
				}
				w := startWriter(t, filepath.Join(path, "log"))
				time.Sleep(300 * time.Millisecond)

				// Timed from the request: with Cinder the extend itself is asynchronous.
				resized := time.Now()
				resizeVolume(t, l, p, b, name, 2)
				t.Logf("%s: the backend reported the new size %s after the request", b.name, time.Since(resized).Round(100*time.Millisecond))
				online := FSOnline(fstype)
				var waited time.Duration
				for {
					if fsSize(t, path) > 3*gib/2 {
						waited = time.Since(resized)
						break
					}
					if !online {
						st := p.get(name).Volume.Status
						if r, _ := st["resize"].(string); strings.Contains(r, "CAP_SYS_RESOURCE") && strings.Contains(r, "next first Mount") {
							waited = time.Since(resized)
							t.Logf("%s/%s: grow while mounted reported impossible after %s: %s", b.name, fstype, waited.Round(100*time.Millisecond), r)
							break
						}
					}
					if time.Since(resized) > growBound {
						t.Fatalf("%s/%s: the filesystem still has %d bytes %s after the image grew to 2G; status %v",
							b.name, fstype, fsSize(t, path), growBound, p.get(name).Volume.Status)
					}
					time.Sleep(100 * time.Millisecond)
				}
				if online {
					t.Logf("%s/%s: grown while mounted %s after the resize request (GROW_INTERVAL %s), writer at %d records",
						b.name, fstype, waited.Round(100*time.Millisecond), growInterval, w.records.Load())
					time.Sleep(300 * time.Millisecond) // the writer goes on past the grow
					st := p.get(name).Volume.Status
					if st["size"] != "2G" || st["filesystem-size"] != "2G" || st["device-size"] != "2G" ||
						!strings.Contains(fmt.Sprint(st["resize"]), "grown from 1G to 2G while mounted") {
						t.Errorf("inspect after the grow: %v", st)
					}
				}
				sum := w.finish(t)

				// Grown while not mounted: the next Mount grows it.
				p.unmount(name, "c1")
				resizeVolume(t, l, p, b, name, 3)
				start := time.Now()
				path = p.mount(name, "c2")
				took := time.Since(start)
				if s := fsSize(t, path); s < 5*gib/2 {
					t.Fatalf("%s/%s: after the image grew to 3G while unmounted, the Mount gave a filesystem of %d bytes; status %v",
						b.name, fstype, s, p.get(name).Volume.Status)
				}
				if got := fileSum(t, filepath.Join(path, "log")); got != sum {
					t.Fatalf("the writer's file changed across the grow and remount")
				}
				st := p.get(name).Volume.Status
				if st["filesystem-size"] != "3G" || !strings.Contains(fmt.Sprint(st["resize"]), "grown from") {
					t.Errorf("inspect after the Mount grew it: %v", st)
				}
				t.Logf("%s/%s: Mount that grew 2G -> 3G took %s; %v", b.name, fstype, took.Round(10*time.Millisecond), st["resize"])
				p.unmount(name, "c2")
				b.assertReleased(p, name)
			})
		}
		p.assertClean()
	})
}

// FSOnline says whether this process (and so the plugin it starts) can grow fstype while mounted.
func FSOnline(fstype string) bool {
	if fstype != "ext4" {
		return true
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	return unix.Capget(&hdr, &data[0]) == nil && data[0].Effective&(1<<24) != 0
}

// An image shrunk under its filesystem is refused at Mount, saying what to do, and nothing is
// mounted.
func TestShrunkImageRefused(t *testing.T) {
	t.Parallel()
	l := labEnv(t)
	p := newPlugin(t, l, "host-a")
	p.start()
	name := uniq("shrunk")
	p.create(name, map[string]string{"size": "512M"})
	t.Cleanup(func() { _ = p.try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil) })
	path := p.mount(name, "c1")
	data := randomData(t, 1<<20)
	writeFile(t, filepath.Join(path, "f"), data)
	p.unmount(name, "c1")
	l.admin(t, "rbd", "resize", "--allow-shrink", "--size", "256M", l.pool+"/"+name)
	msg := p.fail("/VolumeDriver.Mount", map[string]string{"Name": name, "ID": "c2"})
	for _, want := range []string{name, "smaller than its filesystem", "never shrinks", "rbd resize --size 512M"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Mount of a shrunk image: %q lacks %q", msg, want)
		}
	}
	if isMounted(t, filepath.Join(p.mountRoot(), name)) {
		t.Fatal("a shrunk volume was mounted")
	}
	p.unmount(name, "c2") // dockerd calls Unmount after a failed Mount
	if r, _ := p.get(name).Volume.Status["resize"].(string); !strings.HasPrefix(r, "refused:") {
		t.Errorf("inspect after the refusal: resize = %q", r)
	}
	p.assertClean()
}
