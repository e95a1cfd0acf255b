//go:build integration

package fuse_test

import (
	"path/filepath"
	"testing"

	"github.com/cephdocker/ceph-docker-plugin/driver"
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
			return newImage(t, cluster, pool, "fuse", size)
		},
		Request: func(spec driver.ImageSpec) driver.MapRequest {
			return driver.MapRequest{ImageSpec: spec, User: user}
		},
		Leftovers: m.Leftovers,
	})
}
