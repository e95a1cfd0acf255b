package fuse

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// Every rbd-fuse gets the mapper's client options after the identity options (in CEPH_ARGS, so
// that they win over ceph.conf) and the malloc arena cap; a mapper with none passes none.
func TestStartFusePassesTheClientOptions(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "env")
	bin := filepath.Join(dir, "rbd-fuse")
	// A stand-in that records its environment and fails, as an rbd-fuse that cannot connect.
	script := "#!/bin/sh\necho \"$CEPH_ARGS|$MALLOC_ARENA_MAX\" > " + out + "\nexit 1\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	req := driver.MapRequest{ImageSpec: driver.ImageSpec{Pool: "volumes", Image: "v"}, User: "docker"}
	for _, tc := range []struct {
		opts []string
		want string
	}{
		{ClientOptionsDefault, "--id docker --keyring /k " + strings.Join(ClientOptionsDefault, " ") + "|" + fuseMallocArenas},
		{nil, "--id docker --keyring /k|" + fuseMallocArenas},
	} {
		f := New(filepath.Join(dir, "root"), "", "/k")
		f.Binary, f.ClientOptions = bin, tc.opts
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := f.startFuse(ctx, req, filepath.Join(dir, "mnt"))
		cancel()
		if err == nil || !strings.Contains(err.Error(), "rbd-fuse failed") {
			t.Fatalf("err = %v, want the stand-in's failure", err)
		}
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if s := strings.TrimSpace(string(got)); s != tc.want {
			t.Errorf("rbd-fuse's CEPH_ARGS|MALLOC_ARENA_MAX = %q, want %q", s, tc.want)
		}
	}
	if !strings.Contains(strings.Join(New("/r", "", "").ClientOptions, " "), "--rbd_cache_size=8388608") {
		t.Error("New does not set ClientOptionsDefault")
	}
}
