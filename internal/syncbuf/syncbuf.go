// Package syncbuf is a bytes.Buffer that is safe for concurrent use: the output of a process that
// may still be writing it (a command abandoned at its deadline, a plugin under test) while someone
// reads what it wrote so far. It imports only the standard library, so that the static lab agent
// links it without the driver.
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer collects writes; its zero value is an empty buffer ready for use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// Bytes is a copy of what was written so far.
func (s *Buffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// String is what was written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
