//go:build integration

package fuse_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"path/filepath"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/rbd"
	"github.com/cephdocker/ceph-docker-plugin/rbd/fuse"
	"github.com/cephdocker/ceph-docker-plugin/rbd/mappertest"
)

// The fuse mapper against the real lab Ceph, as the least-privilege user: the mapper conformance
// suite, with no loop device, FUSE mount or rbd-fuse process of the test left afterwards.
func TestFuseMapperConformance(t *testing.T) {
	cluster, conf, user, keyring, pool := labCeph(t)

	root := filepath.Join(t.TempDir(), "fuse")
	m := fuse.New(root, conf, keyring)
	mappertest.Run(t, mappertest.Harness{
		Mapper: m,
		NewImage: func(t *testing.T, size uint64) driver.ImageSpec {
			b := make([]byte, 4)
			_, _ = rand.Read(b)
			spec := driver.ImageSpec{Pool: pool, Image: "fuse-" + hex.EncodeToString(b)}
			c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := cluster.Create(c, spec, rbd.CreateOptions{Size: size, Features: []string{"layering", "exclusive-lock"}}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				if err := cluster.Remove(c, spec); err != nil {
					t.Errorf("remove %s: %v", spec, err)
				}
			})
			return spec
		},
		Request: func(spec driver.ImageSpec) driver.MapRequest {
			return driver.MapRequest{ImageSpec: spec, User: user}
		},
		Leftovers: m.Leftovers,
	})
}
