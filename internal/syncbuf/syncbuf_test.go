package syncbuf

import (
	"strings"
	"sync"
	"testing"
)

// Writers and readers at once (the race detector checks the locking); every write is kept
// whole, and Bytes is a copy the buffer does not change afterwards.
func TestBufferConcurrentWritesAndReads(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range 100 {
				_, _ = b.Write([]byte("line\n"))
			}
		}()
		go func() {
			defer wg.Done()
			for range 100 {
				_ = b.String()
				_ = b.Bytes()
			}
		}()
	}
	wg.Wait()
	if got := b.String(); got != strings.Repeat("line\n", 400) {
		t.Fatalf("got %d bytes, want 400 whole lines", len(got))
	}
	snap := b.Bytes()
	snap[0] = 'X'
	if got := b.String(); !strings.HasPrefix(got, "line\n") {
		t.Errorf("a change to what Bytes returned changed the buffer: %q", got[:5])
	}
}
