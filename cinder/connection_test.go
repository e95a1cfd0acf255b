package cinder

import (
	"reflect"
	"strings"
	"testing"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

func TestParseConnectionTable(t *testing.T) {
	cases := []struct {
		name string
		ci   map[string]any
		spec driver.ImageSpec
		mons []string
		err  string // part of the error; "" for none
	}{{
		name: "as the attachments API answers (recorded)",
		ci:   fixture("cinder_attachment_create.json")["attachment"].(map[string]any)["connection_info"].(map[string]any),
		spec: driver.ImageSpec{Pool: "cinder", Image: "volume-" + recordedVolume},
		mons: []string{"127.0.0.1:6789"},
	}, {
		name: "as os-initialize_connection answers (recorded): nested under data",
		ci:   fixture("cinder_initialize_connection.json")["connection_info"].(map[string]any),
		spec: driver.ImageSpec{Pool: "cinder", Image: "volume-" + recordedVolume},
		mons: []string{"127.0.0.1:6789"},
	}, {
		name: "nested, with several monitors",
		ci: map[string]any{"driver_volume_type": "rbd", "data": map[string]any{"name": "volumes/volume-1",
			"hosts": []any{"10.0.0.1", "10.0.0.2", "10.0.0.3"}, "ports": []any{"6789", "6789", "3300"}, "auth_username": "cinder"}},
		spec: driver.ImageSpec{Pool: "volumes", Image: "volume-1"},
		mons: []string{"10.0.0.1:6789", "10.0.0.2:6789", "10.0.0.3:3300"},
	}, {
		name: "ports as numbers, IPv6 hosts bracketed once",
		ci: map[string]any{"name": "p/i", "hosts": []any{"::1", "[fd00::2]", "mon.example"},
			"ports": []any{float64(6789), float64(6790), float64(3300)}},
		spec: driver.ImageSpec{Pool: "p", Image: "i"},
		mons: []string{"[::1]:6789", "[fd00::2]:6790", "mon.example:3300"},
	}, {
		name: "fewer ports than hosts: 6789",
		ci:   map[string]any{"name": "p/i", "hosts": []any{"a", "b"}, "ports": []any{"3300"}},
		spec: driver.ImageSpec{Pool: "p", Image: "i"},
		mons: []string{"a:3300", "b:6789"},
	}, {
		name: "empty and non-string hosts skipped",
		ci:   map[string]any{"name": "p/i", "hosts": []any{"", float64(1), "c"}, "ports": []any{"1", "2", "3"}},
		spec: driver.ImageSpec{Pool: "p", Image: "i"},
		mons: []string{"c:3"},
	}, {
		name: "no monitors: the host's ceph.conf has them",
		ci:   map[string]any{"driver_volume_type": "rbd", "name": "p/i"},
		spec: driver.ImageSpec{Pool: "p", Image: "i"},
	}, {
		name: "another backend",
		ci:   map[string]any{"driver_volume_type": "iscsi", "data": map[string]any{"target_iqn": "iqn"}},
		err:  `the volume is on a "iscsi" backend; this plugin maps only rbd`,
	}, {
		name: "no name",
		ci:   map[string]any{"driver_volume_type": "rbd", "hosts": []any{"a"}},
		err:  `connection info without an rbd pool/image (name ""; fields [driver_volume_type hosts])`,
	}, {
		name: "a name without a pool",
		ci:   map[string]any{"data": map[string]any{"name": "volume-1"}},
		err:  `(name "volume-1"; fields [data])`,
	}, {
		name: "an empty pool",
		ci:   map[string]any{"name": "/volume-1"},
		err:  `name "/volume-1"`,
	}, {
		name: "an empty image",
		ci:   map[string]any{"name": "pool/"},
		err:  `name "pool/"`,
	}, {
		name: "nothing",
		err:  "connection info without an rbd pool/image",
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec, mons, err := parseConnection(tc.ci)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if spec != tc.spec || !reflect.DeepEqual(mons, tc.mons) {
				t.Errorf("got %+v %q, want %+v %q", spec, mons, tc.spec, tc.mons)
			}
		})
	}
}
