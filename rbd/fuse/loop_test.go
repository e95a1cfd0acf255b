package fuse

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// An open of the backing file that hangs (a FUSE server that does not answer) holds up only its
// own Map: the loop allocation lock is free meanwhile. A FIFO opened read-only stands for the
// hung file: the open waits until a writer comes.
func TestAttachLoopDoesNotHoldTheAllocationLockAcrossOpen(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "image")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// A stand-in loop-control: it opens, and its ioctls fail (ENOTTY), ending the attach there.
	dev := filepath.Join(dir, "dev")
	if err := os.MkdirAll(dev, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dev, "loop-control"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := attachLoop(dev, fifo, "rbd-fuse:volumes/image", true)
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("attachLoop returned before its backing file opened: %v", err)
	default:
	}
	if !loopAlloc.TryLock() {
		t.Fatal("the loop allocation lock is held while the backing file's open hangs")
	}
	loopAlloc.Unlock()
	// The "server" answers: the open completes, and the attach goes on to loop-control.
	w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "find a free loop device") {
			t.Fatalf("attachLoop = %v, want it to reach loop-control's GET_FREE", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("attachLoop did not go on once the open completed")
	}
}
