// Package plugintest is what the tests and the tools that drive the real plugin share: the lab's
// coordinates (environment variables and the env files the lab scripts write), a plugin process
// standing for one host (start, readiness, stop, and the host's cleanup in the order that cannot
// hang), unique names and deadlines. The cmd integration tests, the plugin e2e suite, the QEMU lab
// tests, the backends' integration tests and cmd/cdp-bench use it.
//
// It does not import package testing: what fails a test takes a TB, which *testing.T satisfies,
// so that cdp-bench can link it.
package plugintest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/internal/syncbuf"
)

// TB is the part of testing.TB the helpers use.
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// Uniq returns prefix-<8 random hex digits>: a volume, image, user or host name no other run of
// any suite on the shared lab uses.
func Uniq(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// Context returns a context that ends after d or when the test ends, whichever comes first.
func Context(t TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// WriteFileSync writes data to a new file at path and fsyncs it before closing: what a test
// writes through a volume is on the device before the test unmaps, kills or fences anything.
func WriteFileSync(t TB, path string, data []byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// SyncBuffer collects a process's output while a test may read it.
type SyncBuffer = syncbuf.Buffer
