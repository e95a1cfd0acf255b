//go:build integration

package rbd_test

import (
	"testing"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/driver/drivertest"
	"github.com/cephdocker/ceph-docker-plugin/rbd"
)

func TestProvisionerConformance(t *testing.T) {
	e := lab(t)
	drivertest.Run(t, drivertest.Harness{
		New: func(t *testing.T, host string) driver.Provisioner {
			// Each host has its own connection (its own cephx client instance).
			return rbd.NewProvisioner(e.connect(t), rbd.ProvisionerConfig{Pool: e.pool, Host: host,
				Features: []string{"layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten"}})
		},
	})
}
