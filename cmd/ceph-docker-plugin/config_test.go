package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadConfigDefaults(t *testing.T) {
	c, err := LoadConfig(env(map[string]string{"NODE_NAME": "n1"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Backend != "rbd" || c.CephConf != "/etc/ceph/ceph.conf" || c.CephUser != "admin" || c.Pool != "volumes" ||
		c.DefaultSize != 10<<30 || c.DefaultFSType != "ext4" || c.Mapper != "auto" || c.MountRoot != "/mnt/volumes" ||
		c.StateDir != "/mnt/volumes/.state" || c.Socket != "/run/docker/plugins/ceph.sock" ||
		c.RemoveAction != driver.RemoveDelete || c.LockBreak || c.LogLevel != logrus.InfoLevel || c.LogFormat != "text" ||
		c.CallTimeout != 50*time.Second || c.CephTimeout != 20*time.Second || c.NodeName != "n1" ||
		strings.Join(c.Features, ",") != "layering,exclusive-lock,object-map,fast-diff,deep-flatten" {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestLoadConfigReportsEveryBadSettingTogether(t *testing.T) {
	_, err := LoadConfig(env(map[string]string{
		"BACKEND": "nfs", "DEFAULT_FSTYPE": "btrfs", "MAPPER": "nbd", "MOUNT_ROOT": "relative/path",
		"REMOVE_ACTION": "shred", "LOCK_BREAK": "maybe", "LOG_LEVEL": "loud", "LOG_FORMAT": "xml",
		"CALL_TIMEOUT": "forever", "DEFAULT_SIZE": "big", "RBD_FEATURES": "layering,warp", "RBD_POOL": "a b",
		"CEPH_KEYRING": "keyring",
	}))
	if err == nil {
		t.Fatal("bad settings accepted")
	}
	for _, want := range []string{
		`BACKEND="nfs": allowed are rbd, cinder`, `DEFAULT_FSTYPE="btrfs"`, `MAPPER="nbd"`, `MOUNT_ROOT="relative/path": an absolute path`,
		`REMOVE_ACTION="shred": allowed are delete, trash, keep`, `LOCK_BREAK="maybe": on or off`, `LOG_LEVEL="loud"`,
		`LOG_FORMAT="xml"`, `CALL_TIMEOUT="forever"`, `DEFAULT_SIZE="big"`, `RBD_FEATURES="layering,warp"`, "warp",
		`RBD_POOL="a b"`, `CEPH_KEYRING="keyring"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
}

func TestLoadConfigValues(t *testing.T) {
	c, err := LoadConfig(env(map[string]string{
		"CEPH_USER": "client.docker", "LOCK_BREAK": "on", "REMOVE_ACTION": "trash", "DEFAULT_SIZE": "512M",
		"LOG_LEVEL": "debug", "CALL_TIMEOUT": "30s", "NODE_NAME": "h", "RBD_FEATURES": "layering, exclusive-lock",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.CephUser != "docker" || !c.LockBreak || c.RemoveAction != driver.RemoveTrash || c.DefaultSize != 512<<20 ||
		c.LogLevel != logrus.DebugLevel || c.CallTimeout != 30*time.Second || strings.Join(c.Features, ",") != "layering,exclusive-lock" {
		t.Fatalf("%+v", c)
	}
}

// plugin/config.json declares every setting, settable, with the same default and description.
func TestPluginConfigDeclaresEverySetting(t *testing.T) {
	raw, err := os.ReadFile("../../plugin/config.json")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		PropagatedMount string
		Interface       struct {
			Socket string
			Types  []string
		}
		Env []struct {
			Name, Description, Value string
			Settable                 []string
		}
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Interface.Socket != "ceph.sock" || len(cfg.Interface.Types) != 1 || cfg.Interface.Types[0] != "docker.volumedriver/1.0" {
		t.Errorf("interface = %+v", cfg.Interface)
	}
	env := map[string]int{}
	for i, e := range cfg.Env {
		env[e.Name] = i
	}
	for _, s := range Settings {
		i, ok := env[s.Name]
		if !ok {
			t.Errorf("config.json lacks %s", s.Name)
			continue
		}
		e := cfg.Env[i]
		if e.Value != s.Default || e.Description != s.Help || len(e.Settable) != 1 || e.Settable[0] != "value" {
			t.Errorf("config.json %s = %+v; want default %q, help %q, settable value", s.Name, e, s.Default, s.Help)
		}
		if s.Name == "MOUNT_ROOT" && s.Default != cfg.PropagatedMount {
			t.Errorf("MOUNT_ROOT default %s != propagatedMount %s", s.Default, cfg.PropagatedMount)
		}
	}
	if len(cfg.Env) != len(Settings) {
		t.Errorf("config.json has %d env entries, Settings %d", len(cfg.Env), len(Settings))
	}
}

// A DEFAULT_SIZE below what a volume may be would fail every Create without -o size: start-up
// refuses it, with the minimum (larger for xfs).
func TestLoadConfigRefusesADefaultSizeNoVolumeCanHave(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"DEFAULT_SIZE": "8M"}, `DEFAULT_SIZE="8M": size 8M is below the minimum of 16M`},
		{map[string]string{"DEFAULT_SIZE": "100M", "DEFAULT_FSTYPE": "xfs"}, `DEFAULT_SIZE="100M": size 100M is too small for xfs (minimum 300M)`},
	} {
		_, err := LoadConfig(env(c.env))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("LoadConfig(%v) = %v, want an error saying %q", c.env, err, c.want)
		}
	}
	if _, err := LoadConfig(env(map[string]string{"DEFAULT_SIZE": "300M", "DEFAULT_FSTYPE": "xfs"})); err != nil {
		t.Errorf("DEFAULT_SIZE=300M with xfs: %v", err)
	}
}

// METRICS_ADDR: off by default, loopback when just "on", any IP and port when given.
func TestLoadConfigMetricsAddr(t *testing.T) {
	for v, want := range map[string]string{"": "", "off": "", "on": "127.0.0.1:9380", "0.0.0.0:9999": "0.0.0.0:9999", ":9380": ":9380", "[::1]:9380": "[::1]:9380"} {
		c, err := LoadConfig(env(map[string]string{"NODE_NAME": "n", "METRICS_ADDR": v}))
		if err != nil || c.MetricsAddr != want {
			t.Errorf("METRICS_ADDR=%q: %q, %v; want %q", v, c.MetricsAddr, err, want)
		}
	}
	for _, v := range []string{"yes", "9380", "host.example:9380", "127.0.0.1:0", "127.0.0.1:http", "127.0.0.1:70000"} {
		_, err := LoadConfig(env(map[string]string{"NODE_NAME": "n", "METRICS_ADDR": v}))
		if err == nil || !strings.Contains(err.Error(), `METRICS_ADDR="`+v+`"`) {
			t.Errorf("METRICS_ADDR=%q: %v, want a refusal naming it", v, err)
		}
	}
}
