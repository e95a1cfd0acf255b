package cinder

import (
	"reflect"
	"regexp"
	"testing"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

func TestInstanceUUID(t *testing.T) {
	id := "53a902c4101d880e80f73c8145e76a2f89d7a44eaab3901326e35bf7251c2974"
	u := InstanceUUID(id)
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(u) {
		t.Fatalf("InstanceUUID = %q, not a version-5 UUID", u)
	}
	if InstanceUUID(id) != u {
		t.Fatal("not deterministic")
	}
	if InstanceUUID(id[:63]+"5") == u {
		t.Fatal("two IDs, one UUID")
	}
	if got := InstanceUUID("A1B2C3D4-0000-4000-8000-000000000001"); got != "a1b2c3d4-0000-4000-8000-000000000001" {
		t.Fatalf("a UUID is kept: %q", got)
	}
}

func TestParseConnection(t *testing.T) {
	spec, mons, err := parseConnection(map[string]any{
		"driver_volume_type": "rbd",
		"data": map[string]any{"name": "volumes/volume-1234", "hosts": []any{"127.0.0.1", "::1"},
			"ports": []any{"6789", float64(6790)}, "auth_username": "cinder"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if spec != (driver.ImageSpec{Pool: "volumes", Image: "volume-1234"}) ||
		!reflect.DeepEqual(mons, []string{"127.0.0.1:6789", "[::1]:6790"}) {
		t.Fatalf("spec %+v mons %v", spec, mons)
	}
	// The attachments API's flat form.
	spec, mons, err = parseConnection(map[string]any{"driver_volume_type": "rbd", "name": "volumes/volume-9",
		"hosts": []any{"127.0.0.1"}, "ports": []any{"6789"}})
	if err != nil || spec.Image != "volume-9" || len(mons) != 1 {
		t.Fatalf("flat form: %+v %v %v", spec, mons, err)
	}
	if _, _, err := parseConnection(map[string]any{"driver_volume_type": "iscsi"}); err == nil {
		t.Fatal("iscsi accepted")
	}
	if _, _, err := parseConnection(map[string]any{"data": map[string]any{"name": "nopool"}}); err == nil {
		t.Fatal("name without pool accepted")
	}
}
