//go:build integration

package fuse

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// 32 Maps at once each get their own loop device: make bench's 32 clients ran some out of
// attempts when every one of them raced for the same free device.
func TestAttachLoopConcurrently(t *testing.T) {
	dir := t.TempDir()
	const n = 32
	paths := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{}) // all at once
	for i := 0; i < n; i++ {
		f := filepath.Join(dir, fmt.Sprintf("img%d", i))
		if err := os.WriteFile(f, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			paths[i], errs[i] = attachLoop("/dev", f, fmt.Sprintf("test:%s", f), false)
		}()
	}
	close(start)
	wg.Wait()
	seen := map[string]bool{}
	for i := 0; i < n; i++ {
		if errs[i] != nil {
			t.Errorf("attach %d: %v", i, errs[i])
			continue
		}
		t.Cleanup(func() { _ = detachLoop(paths[i]) })
		if seen[paths[i]] {
			t.Errorf("%s attached twice", paths[i])
		}
		seen[paths[i]] = true
	}
}

// A loop device still open elsewhere (a stale loop mounted in a container) is refused by
// detachLoop (EBUSY) and marked by detachLoopLazy: still attached while open, detached by the
// kernel at its last close.
func TestDetachLoopLazyAtLastClose(t *testing.T) {
	f := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(f, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	dev, err := attachLoop("/dev", f, "test:lazy", false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = detachLoop(dev) })
	attached := func() bool {
		_, err := os.Stat(filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file"))
		return err == nil
	}
	user, err := os.OpenFile(dev, os.O_RDONLY|unix.O_EXCL, 0) // as a mount holds it
	if err != nil {
		t.Fatal(err)
	}
	if err := detachLoop(dev); !errors.Is(err, unix.EBUSY) {
		t.Fatalf("detachLoop of a device open elsewhere: %v; want EBUSY", err)
	}
	if err := detachLoopLazy(dev); err != nil {
		t.Fatalf("detachLoopLazy: %v", err)
	}
	if !attached() {
		t.Fatal("detached under its user")
	}
	_ = user.Close()
	deadline := time.Now().Add(5 * time.Second)
	for attached() {
		if time.Now().After(deadline) {
			t.Fatalf("%s still attached 5 s after its last close", dev)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
