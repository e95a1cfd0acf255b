//go:build integration

package cinder

import (
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/driver/drivertest"
)

func TestProvisionerConformance(t *testing.T) {
	drivertest.Run(t, drivertest.Harness{
		New:     func(t *testing.T, host string) driver.Provisioner { return newProv(t, host) },
		Options: map[string]string{OptVolumeType: "rbd"},
		Kept: func(t *testing.T, name string) []string {
			p := newProv(t, "host-a")
			c, err := p.client(tctx(t, 30*time.Second), "")
			if err != nil {
				t.Fatal(err)
			}
			pages, err := volumes.List(c, volumes.ListOpts{}).AllPages(tctx(t, 30*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			all, err := volumes.ExtractVolumes(pages)
			if err != nil {
				t.Fatal(err)
			}
			var kept []string
			for _, v := range all {
				if strings.HasPrefix(v.Name, name+"~removed-") {
					kept = append(kept, v.Name)
					id := v.ID
					t.Cleanup(func() { _ = volumes.Delete(tctx(t, 30*time.Second), c, id, volumes.DeleteOpts{}).ExtractErr() })
				}
			}
			return kept
		},
	})
}
