//go:build integration

package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A copy (-o from-volume) of a volume that a fsyncWriter on host-a keeps writing, made and mounted on
// host-b: it mounts (its journal replayed, as after a power cut), e2fsck -f -n finds it clean,
// and it holds every record fsynced before the copy was asked for. With each backend.
func TestCopyOfAVolumeInUse(t *testing.T) {
	eachBackend(t, labEnv(t), testCopyInUse)
}

// copyRecord is one record of the fsyncWriter: its sequence number, then data derived from it.
const copyRecord = 4096

// record is the content of record n.
func copyRecordOf(n int) []byte {
	b := make([]byte, copyRecord)
	binary.BigEndian.PutUint64(b, uint64(n))
	for i := 8; i < copyRecord; i += sha256.Size {
		sum := sha256.Sum256(b[:8+i%64])
		copy(b[i:], sum[:])
	}
	return b
}

// fsyncWriter appends records to log in dir, fsyncing each, and every 16th record also makes a file
// rec-N (fsynced, with its directory): synced is how many records are fsynced.
type fsyncWriter struct {
	synced atomic.Int64
	stop   chan struct{}
	done   chan error
}

func startFsyncWriter(dir string) *fsyncWriter {
	w := &fsyncWriter{stop: make(chan struct{}), done: make(chan error, 1)}
	go func() { w.done <- w.run(dir) }()
	return w
}

func (w *fsyncWriter) run(dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	for n := 1; ; n++ {
		select {
		case <-w.stop:
			return nil
		default:
		}
		if _, err := f.Write(copyRecordOf(n)); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		if n%16 == 0 {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("rec-%d", n)), copyRecordOf(n), 0o644); err != nil {
				return err
			}
			g, err := os.Open(filepath.Join(dir, fmt.Sprintf("rec-%d", n)))
			if err != nil {
				return err
			}
			err = g.Sync()
			g.Close()
			if err == nil {
				err = d.Sync()
			}
			if err != nil {
				return err
			}
		}
		w.synced.Store(int64(n))
	}
}

func (w *fsyncWriter) end() error {
	close(w.stop)
	return <-w.done
}

func testCopyInUse(t *testing.T, be backend) {
	l := labEnv(t)
	a := newPlugin(t, l, "host-a", be.env...)
	b := newPlugin(t, l, "host-b", be.env...)
	a.start()
	b.start()
	src, cp := uniq("copysrc"), uniq("copydst")
	a.create(src, map[string]string{"size": "1G", "mount-options": "noatime"})
	t.Cleanup(func() {
		_ = b.try("/VolumeDriver.Remove", map[string]string{"Name": cp}, nil)
		_ = a.try("/VolumeDriver.Unmount", map[string]string{"Name": src, "ID": "a1"}, nil)
		_ = a.try("/VolumeDriver.Remove", map[string]string{"Name": src}, nil)
	})
	pathA := a.mount(src, "a1")
	w := startFsyncWriter(pathA)
	var once sync.Once
	endWriter := func() {
		once.Do(func() {
			if err := w.end(); err != nil {
				t.Errorf("the fsyncWriter on host-a: %v", err)
			}
		})
	}
	t.Cleanup(endWriter)
	deadline := time.Now().Add(60 * time.Second)
	for w.synced.Load() < 100 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}

	// host-b copies the volume while host-a writes to it.
	before := int(w.synced.Load())
	if before < 100 {
		t.Fatalf("the fsyncWriter fsynced only %d records in 60 s", before)
	}
	start := time.Now()
	b.create(cp, map[string]string{"from-volume": src})
	took := time.Since(start)
	after := int(w.synced.Load())
	t.Logf("%s: copy of %s made in %.1fs while host-a wrote: %d records fsynced before it was asked for, %d when it was made",
		be.name, src, took.Seconds(), before, after)
	if after <= before {
		t.Errorf("the fsyncWriter made no progress during the copy (%d records before, %d after): the copy was not made while the source was in use", before, after)
	}
	st := b.get(cp).Volume.Status
	if st["from-volume"] != src {
		t.Errorf("inspect of the copy: from-volume %v, want %s", st["from-volume"], src)
	}
	if be.name == "rbd" {
		if p, ok := st["parent"]; ok {
			t.Errorf("the copy still depends on %v: it is not flattened", p)
		}
		if snaps := l.admin(t, "rbd", "snap", "ls", be.pool+"/"+src); strings.Contains(snaps, "docker-plugin-copy-") {
			t.Errorf("the copy's snapshot stays on the source:\n%s", snaps)
		}
	}

	// The copy mounts on host-b while host-a still writes to the source.
	pathB := b.mount(cp, "b1")
	endWriter()
	logB, err := os.ReadFile(filepath.Join(pathB, "log"))
	if err != nil {
		t.Fatalf("the copy's log: %v", err)
	}
	if len(logB) < before*copyRecord {
		t.Fatalf("the copy's log holds %d bytes, want at least the %d records fsynced before the copy (%d bytes)", len(logB), before, before*copyRecord)
	}
	for n := 1; n <= before; n++ {
		if got := logB[(n-1)*copyRecord : n*copyRecord]; !bytes.Equal(got, copyRecordOf(n)) {
			t.Fatalf("record %d of the copy differs from what was fsynced", n)
		}
		if n%16 != 0 {
			continue
		}
		got, err := os.ReadFile(filepath.Join(pathB, fmt.Sprintf("rec-%d", n)))
		if err != nil || !bytes.Equal(got, copyRecordOf(n)) {
			t.Fatalf("file rec-%d of the copy: %v (%d bytes)", n, err, len(got))
		}
	}
	t.Logf("%s: the copy holds all %d records fsynced before it was asked for (its log has %d records)", be.name, before, len(logB)/copyRecord)
	b.unmount(cp, "b1")
	b.assertClean()

	// e2fsck -f -n of the copy's image, as mounting and unmounting it left it.
	img := filepath.Join(t.TempDir(), "copy.img")
	l.admin(t, "rbd", "export", "--no-progress", be.pool+"/"+be.image(b, cp), img)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "e2fsck", "-f", "-n", img).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -f -n of the copy: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	t.Logf("%s: e2fsck -f -n of the copy: clean (%s)", be.name, lines[len(lines)-1])

	// The source is not tied to its copy: once released, it is removed.
	a.unmount(src, "a1")
	a.remove(src)
	b.remove(cp)
}
