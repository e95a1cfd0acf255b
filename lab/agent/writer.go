package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/lab/labapi"
)

// writer keeps writing to a mounted volume from the agent's own process, so that it is not
// affected by anything done to the plugin. It stops at its first error (and reports it).
type writer struct {
	mu   sync.Mutex
	st   labapi.WriterStatus
	stop chan struct{}
	done chan struct{}
}

func (a *agent) writerStart(w http.ResponseWriter, r *http.Request) {
	var req labapi.WriterStart
	if !decode(w, r, &req) {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.writer != nil && a.writer.running() {
		fail(w, errors.New("a writer runs already"))
		return
	}
	if req.Size <= 0 {
		req.Size = 4096
	}
	wr := &writer{stop: make(chan struct{}), done: make(chan struct{})}
	wr.st.Running = true
	a.writer = wr
	switch req.Mode {
	case "append":
		f, err := os.OpenFile(req.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			fail(w, err)
			return
		}
		go wr.loop(req, func(n int) (labapi.FileSum, error) {
			rec := make([]byte, req.Size)
			copy(rec, fmt.Sprintf("record %d at %s\n", n, time.Now().UTC().Format(time.RFC3339Nano)))
			rec[len(rec)-1] = '\n'
			if _, err := f.Write(rec); err != nil {
				return labapi.FileSum{}, err
			}
			return labapi.FileSum{}, f.Sync()
		}, func() { f.Close() })
	case "files":
		if err := os.MkdirAll(req.Path, 0o755); err != nil {
			fail(w, err)
			return
		}
		go wr.loop(req, func(n int) (labapi.FileSum, error) { return writeFile(req.Path, n, req.Size) }, func() {})
	default:
		fail(w, fmt.Errorf("unknown writer mode %q", req.Mode))
		return
	}
	reply(w, http.StatusOK, labapi.Error{})
}

// writeFile writes one file of random bytes and makes it durable: the file, then its directory.
func writeFile(dir string, n, size int) (labapi.FileSum, error) {
	data := make([]byte, size)
	_, _ = rand.Read(data)
	name := fmt.Sprintf("f-%06d", n)
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return labapi.FileSum{}, err
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	if err := errors.Join(werr, serr, f.Close()); err != nil {
		return labapi.FileSum{}, err
	}
	d, err := os.Open(dir)
	if err != nil {
		return labapi.FileSum{}, err
	}
	serr = d.Sync()
	if err := errors.Join(serr, d.Close()); err != nil {
		return labapi.FileSum{}, err
	}
	sum := sha256.Sum256(data)
	return labapi.FileSum{Name: name, SHA256: hex.EncodeToString(sum[:])}, nil
}

func (wr *writer) running() bool {
	select {
	case <-wr.done:
		return false
	default:
		return true
	}
}

func (wr *writer) loop(req labapi.WriterStart, write func(n int) (labapi.FileSum, error), closeFn func()) {
	defer close(wr.done)
	defer closeFn()
	interval := time.Duration(req.IntervalMS) * time.Millisecond
	last := time.Now()
	for n := 1; ; n++ {
		sum, err := write(n)
		now := time.Now()
		wr.mu.Lock()
		if err != nil {
			wr.st.Errors++
			wr.st.FirstErr = fmt.Sprintf("write %d: %v", n, err)
			wr.st.ErrAt = now
			wr.st.Running = false
			wr.mu.Unlock()
			return
		}
		wr.st.Count = n
		if gap := now.Sub(last).Milliseconds(); gap > wr.st.MaxGapMS {
			wr.st.MaxGapMS = gap
		}
		last = now
		wr.st.LastOK = now
		if sum.Name != "" {
			wr.st.Fsynced = append(wr.st.Fsynced, sum)
		}
		wr.mu.Unlock()
		select {
		case <-wr.stop:
			wr.mu.Lock()
			wr.st.Running = false
			wr.mu.Unlock()
			return
		case <-time.After(interval):
		}
	}
}

// currentWriter returns the writer; without one it answers an empty status and returns nil.
func (a *agent) currentWriter(w http.ResponseWriter) *writer {
	a.mu.Lock()
	wr := a.writer
	a.mu.Unlock()
	if wr == nil {
		reply(w, http.StatusOK, labapi.WriterStatus{})
	}
	return wr
}

func (a *agent) writerStatus(w http.ResponseWriter, _ *http.Request) {
	wr := a.currentWriter(w)
	if wr == nil {
		return
	}
	wr.mu.Lock()
	st := wr.st
	st.Fsynced = append([]labapi.FileSum(nil), wr.st.Fsynced...)
	wr.mu.Unlock()
	reply(w, http.StatusOK, st)
}

// writerStop stops the writer and waits until its file is closed (so that an Unmount can succeed).
func (a *agent) writerStop(w http.ResponseWriter, _ *http.Request) {
	wr := a.currentWriter(w)
	if wr == nil {
		return
	}
	select {
	case <-wr.stop:
	default:
		close(wr.stop)
	}
	select {
	case <-wr.done:
	case <-time.After(60 * time.Second):
		fail(w, errors.New("the writer did not stop within 60 s (its I/O hangs)"))
		return
	}
	a.writerStatus(w, nil)
}
