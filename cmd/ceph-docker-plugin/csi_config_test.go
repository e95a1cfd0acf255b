package main

import (
	"encoding/json"
	"os"
	"reflect"
	"testing"
)

// plugin/config-csi.json is config.json for swarm's cluster volumes: the same settings and
// mounts, the CSI interface types on csi.sock, swarm's fixed propagated mount, and the settings
// that select CSI and keep the volumes and the state under that mount.
func TestPluginConfigCSI(t *testing.T) {
	read := func(name string) map[string]any {
		raw, err := os.ReadFile("../../plugin/" + name)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return m
	}
	vol, csi := read("config.json"), read("config-csi.json")
	wantIface := map[string]any{"socket": "csi.sock", "types": []any{"docker.csicontroller/1.0", "docker.csinode/1.0"}}
	if !reflect.DeepEqual(csi["interface"], wantIface) {
		t.Errorf("interface = %v, want %v", csi["interface"], wantIface)
	}
	if csi["propagatedMount"] != "/data/published" {
		t.Errorf("propagatedMount = %v: swarm publishes under /data/published", csi["propagatedMount"])
	}
	over := map[string]string{"PROTOCOL": "csi", "MOUNT_ROOT": "/data/published/.ceph", "STATE_DIR": "/data/published/.ceph/.state",
		"CSI_ENDPOINT": "unix:///run/docker/plugins/csi.sock"}
	venv, cenv := vol["env"].([]any), csi["env"].([]any)
	if len(venv) != len(cenv) {
		t.Fatalf("config-csi.json has %d settings, config.json %d", len(cenv), len(venv))
	}
	for i := range venv {
		v, c := venv[i].(map[string]any), cenv[i].(map[string]any)
		name := v["name"].(string)
		if want, ok := over[name]; ok {
			if c["value"] != want {
				t.Errorf("config-csi.json %s = %v, want %s", name, c["value"], want)
			}
			c["value"] = v["value"]
		}
		if !reflect.DeepEqual(v, c) {
			t.Errorf("setting %d: config-csi.json %v, config.json %v", i, c, v)
		}
	}
	for _, k := range []string{"interface", "propagatedMount", "env", "description"} {
		delete(vol, k)
		delete(csi, k)
	}
	if !reflect.DeepEqual(vol, csi) {
		t.Errorf("config-csi.json differs from config.json beyond interface, propagatedMount and env:\n%v\n%v", csi, vol)
	}
}
