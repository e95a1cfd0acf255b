//go:build integration

package fuse_test

import (
	"context"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/rbd/fuse"
)

// A List (here a restarted plugin's: a new mapper without records) does not wait for an rbd-fuse
// that does not answer: a daemon whose process runs under its one mount is not asked at all, so a
// stopped one (SIGSTOP: every FUSE request to it hangs) costs the List nothing, and its image
// stays listed as mapped. Asking it took the old List a 2 s timeout per question.
func TestListDoesNotWaitForAStoppedDaemon(t *testing.T) {
	cluster, conf, user, keyring, pool := labCeph(t)
	root := filepath.Join(t.TempDir(), "fuse")
	m := fuse.New(root, conf, keyring)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var specs []driver.ImageSpec
	for i := 0; i < 2; i++ {
		spec := newImage(t, cluster, pool, "fuselist", 16<<20)
		if _, err := m.Map(ctx, driver.MapRequest{ImageSpec: spec, User: user}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := m.Unmap(context.Background(), spec); err != nil {
				t.Errorf("unmap %s: %v", spec, err)
			}
		})
		specs = append(specs, spec)
	}
	stopped := fuse.Daemons(filepath.Join(root, specs[0].Pool, specs[0].Image))
	if len(stopped) != 1 {
		t.Fatalf("rbd-fuse daemons of %s: %v, want one", specs[0], stopped)
	}
	if err := syscall.Kill(stopped[0], syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(stopped[0], syscall.SIGCONT) }) // before the unmaps above
	time.Sleep(1500 * time.Millisecond)                                 // past the kernel's cached attributes (1 s)

	start := time.Now()
	listed, err := fuse.New(root, conf, keyring).List(ctx)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	var got []driver.ImageSpec
	for _, l := range listed {
		got = append(got, l.ImageSpec)
	}
	for _, s := range specs {
		if !slices.Contains(got, s) {
			t.Fatalf("List = %v, want both %v (the stopped daemon's image counts as mapped)", got, specs)
		}
	}
	if took > 1500*time.Millisecond {
		t.Fatalf("List took %s with one rbd-fuse stopped: it waited for it", took)
	}
	t.Logf("List with one rbd-fuse stopped: %s", took)
}
