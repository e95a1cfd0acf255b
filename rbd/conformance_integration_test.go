//go:build integration

package rbd_test

import (
	"strings"
	"testing"
	"time"

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
		Kept: func(t *testing.T, name string) []string {
			c := e.connect(t)
			names, err := c.List(ctxFor(t, 30*time.Second), e.pool, "")
			if err != nil {
				t.Fatal(err)
			}
			var kept []string
			for _, n := range names {
				if strings.HasPrefix(n, name+"~removed-") {
					kept = append(kept, n)
					t.Cleanup(func() { _ = c.Remove(ctxFor(t, 30*time.Second), rbd.Spec{Pool: e.pool, Image: n}) })
				}
			}
			return kept
		},
	})
}
