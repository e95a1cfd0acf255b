package main

import (
	"strings"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// DEFAULT_UID, DEFAULT_GID, DEFAULT_MODE and GROW_INTERVAL: canonical values kept, bad ones
// reported with the others.
func TestRootAndGrowSettings(t *testing.T) {
	c, err := LoadConfig(env(map[string]string{"DEFAULT_UID": "0999", "DEFAULT_GID": "5", "DEFAULT_MODE": "750", "GROW_INTERVAL": "5s"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.DefaultRoot != (driver.RootOptions{UID: "999", GID: "5", Mode: "0750"}) || c.GrowInterval != 5*time.Second {
		t.Errorf("root defaults %+v, grow interval %s", c.DefaultRoot, c.GrowInterval)
	}
	if c, err = LoadConfig(env(nil)); err != nil || !c.DefaultRoot.IsZero() || c.GrowInterval != 30*time.Second {
		t.Errorf("defaults: %+v %s %v", c.DefaultRoot, c.GrowInterval, err)
	}
	if c, err = LoadConfig(env(map[string]string{"GROW_INTERVAL": "off"})); err != nil || c.GrowInterval != 0 {
		t.Errorf("GROW_INTERVAL=off: %s %v", c.GrowInterval, err)
	}
	_, err = LoadConfig(env(map[string]string{"DEFAULT_UID": "-1", "DEFAULT_GID": "wheel", "DEFAULT_MODE": "4755", "GROW_INTERVAL": "1ms"}))
	for _, want := range []string{`DEFAULT_UID="-1"`, `DEFAULT_GID="wheel"`, `DEFAULT_MODE="4755": mode "4755": only permission bits`, `GROW_INTERVAL="1ms"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("bad settings: %v; want it to say %s", err, want)
		}
	}
}
