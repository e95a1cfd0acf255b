package main

import (
	"os"
	"testing"
)

// An empty CEPH_KEYRING in the environment would be librados' keyring option: it must go.
func TestUnsetEmpty(t *testing.T) {
	t.Setenv("CEPH_KEYRING", "")
	t.Setenv("CEPH_CONF", "/etc/ceph/ceph.conf")
	unsetEmpty("CEPH_KEYRING", "CEPH_CONF")
	if _, ok := os.LookupEnv("CEPH_KEYRING"); ok {
		t.Error("CEPH_KEYRING=\"\" is still in the environment")
	}
	if got := os.Getenv("CEPH_CONF"); got != "/etc/ceph/ceph.conf" {
		t.Errorf("CEPH_CONF became %q; a set value must stay", got)
	}
}
