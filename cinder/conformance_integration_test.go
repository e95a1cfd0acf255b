//go:build integration

package cinder

import (
	"testing"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/driver/drivertest"
)

func TestProvisionerConformance(t *testing.T) {
	drivertest.Run(t, drivertest.Harness{
		New:     func(t *testing.T, host string) driver.Provisioner { return newProv(t, host) },
		Options: map[string]string{OptVolumeType: "rbd"},
	})
}
