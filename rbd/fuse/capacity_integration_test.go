//go:build integration

package fuse_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/rbd"
	"github.com/cephdocker/ceph-docker-plugin/rbd/fuse"
)

// labCeph connects to the lab Ceph as the least-privilege user (closed at the test's end).
func labCeph(t *testing.T) (cluster *rbd.Cluster, conf, user, keyring, pool string) {
	t.Helper()
	conf, user, keyring, pool = os.Getenv("CEPH_CONF"), os.Getenv("CEPH_USER"), os.Getenv("CEPH_KEYRING"), os.Getenv("RBD_POOL")
	if conf == "" || user == "" || keyring == "" || pool == "" {
		t.Fatal("CEPH_CONF, CEPH_USER, CEPH_KEYRING and RBD_POOL must be set: run `make test`")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cluster, err := rbd.Connect(ctx, rbd.Config{ConfPath: conf, User: user, Keyring: keyring})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	return cluster, conf, user, keyring, pool
}

// newImage makes an image named prefix-<random> and removes it at the test's end. The removal is
// retried while the image is still watched (a killed rbd-fuse's watch lapses within 30 s), and a
// failure is the test's: nothing may be left in the pool.
func newImage(t *testing.T, cluster *rbd.Cluster, pool, prefix string, size uint64) driver.ImageSpec {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	spec := driver.ImageSpec{Pool: pool, Image: prefix + "-" + hex.EncodeToString(b)}
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cluster.Create(c, spec, rbd.CreateOptions{Size: size, Features: []string{"layering", "exclusive-lock"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for {
			err := cluster.Remove(c, spec)
			if err == nil || errors.Is(err, driver.ErrNotFound) {
				return
			}
			if c.Err() != nil {
				t.Errorf("remove %s: %v", spec, err)
				return
			}
			time.Sleep(time.Second)
		}
	})
	return spec
}

func devSize(t *testing.T, dev string) int64 {
	t.Helper()
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A mapped image resized in Ceph: the loop device keeps its size until Refresh, then shows the
// new one (rbd-fuse follows the image; the kernel's cached file size and the loop's capacity are
// refreshed). An image that is not mapped refreshes as a no-op.
func TestRefreshFollowsResize(t *testing.T) {
	cluster, conf, user, keyring, pool := labCeph(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	spec := newImage(t, cluster, pool, "refresh", 64<<20)
	m := fuse.New(filepath.Join(t.TempDir(), "fuse"), conf, keyring)
	if err := m.Refresh(ctx, spec); err != nil {
		t.Fatalf("Refresh of an image that is not mapped: %v", err)
	}
	mp, err := m.Map(ctx, driver.MapRequest{ImageSpec: spec, User: user})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := m.Unmap(context.Background(), spec); err != nil {
			t.Error(err)
		}
	}()
	if n := devSize(t, mp.Device); n != 64<<20 {
		t.Fatalf("mapped device: %d bytes", n)
	}
	if err := cluster.Resize(ctx, spec, 128<<20); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if n := devSize(t, mp.Device); n != 64<<20 {
		t.Fatalf("the loop device changed size without Refresh: %d bytes", n)
	}
	start := time.Now()
	for devSize(t, mp.Device) != 128<<20 {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("device still %d bytes 20 s after the resize", devSize(t, mp.Device))
		}
		if err := m.Refresh(ctx, spec); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("the loop device showed the new size %s after the resize", time.Since(start).Round(10*time.Millisecond))
}
