//go:build integration

package fuse

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
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
