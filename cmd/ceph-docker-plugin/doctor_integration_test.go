//go:build integration

package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The doctor, run as operators run it (the binary with `doctor`), against the lab Ceph: a sound
// set-up passes; each broken condition is reported with its fix, and fails the run.
func TestDoctorReportsEachBrokenCondition(t *testing.T) {
	t.Parallel()
	l := labEnv(t)
	shared := t.TempDir()
	if err := unix.Mount(shared, shared, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(shared, unix.MNT_DETACH) })
	if err := unix.Mount("", shared, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	base := []string{"CEPH_CONF=" + l.conf, "CEPH_USER=" + l.user, "CEPH_KEYRING=" + l.keyring, "RBD_POOL=" + l.pool,
		"NODE_NAME=doctor-test", "MAPPER=fuse", "MOUNT_ROOT=" + shared, "STATE_DIR=" + filepath.Join(shared, ".state"), "CEPH_TIMEOUT=5s"}
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		base = append(base, "DOCKER_HOST="+h)
	}

	// A keyring of a user without the right to blocklist.
	nobl := filepath.Join(t.TempDir(), "nobl.keyring")
	l.admin(t, "ceph", "auth", "get-or-create", "client.cdp-doctor-nobl", "mon", "allow r", "osd", "profile rbd pool="+l.pool, "-o", nobl)
	t.Cleanup(func() { l.admin(t, "ceph", "auth", "rm", "client.cdp-doctor-nobl") })
	// A cluster whose monitor does not answer.
	deadConf := filepath.Join(t.TempDir(), "dead.conf")
	if err := os.WriteFile(deadConf, []byte("[global]\nmon_host = 127.0.0.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name     string
		env      []string
		exit     int
		want     []string // lines (substrings) the report must hold
		mustNot  []string
		tookLess time.Duration
	}{
		{"sound", nil, 0, []string{"[ OK ] ceph", "[ OK ] pool", "[ OK ] blocklist", "[ OK ] clock", "[ OK ] mount-root", "no check failed"}, []string{"FAIL"}, 0},
		{"no kernel rbd driver", []string{"MAPPER=krbd"}, 1, []string{"[FAIL] krbd", "modprobe rbd failed", "fix: install the kernel's modules package"}, nil, 0},
		{"caps without blocklist", []string{"CEPH_USER=cdp-doctor-nobl", "CEPH_KEYRING=" + nobl, "LOCK_BREAK=on"}, 1,
			[]string{"[FAIL] blocklist", "client.cdp-doctor-nobl may not blocklist", "fix: ceph auth caps client.cdp-doctor-nobl mon 'profile rbd'"}, nil, 0},
		{"caps without blocklist, no takeovers", []string{"CEPH_USER=cdp-doctor-nobl", "CEPH_KEYRING=" + nobl}, 0,
			[]string{"[WARN] blocklist", "no check failed"}, nil, 0},
		{"ceph down", []string{"CEPH_CONF=" + deadConf}, 1, []string{"[FAIL] ceph", "cannot connect as client." + l.user, "fix: check mon_host in " + deadConf}, nil, 30 * time.Second},
		{"mount root not shared", []string{"MOUNT_ROOT=" + t.TempDir()}, 1, []string{"[FAIL] mount-root", "is not a shared mount point", "fix: leave MOUNT_ROOT at config.json's propagatedMount"}, nil, 0},
		{"bad setting", []string{"MAPPER=nbd"}, 1, []string{"[FAIL] settings", `MAPPER="nbd"`, "docker plugin set"}, nil, 0},
	}
	if os.Getenv("DOCKER_HOST") == "" {
		t.Log("DOCKER_HOST is not set: the Docker check reports SKIP")
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, pluginBin, "doctor")
			cmd.Env = append(append([]string{"PATH=" + os.Getenv("PATH")}, base...), c.env...)
			start := time.Now()
			out, err := cmd.CombinedOutput()
			took := time.Since(start)
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != c.exit {
				t.Errorf("exit %d, want %d", code, c.exit)
			}
			for _, w := range c.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("report lacks %q", w)
				}
			}
			for _, w := range c.mustNot {
				if strings.Contains(string(out), w) {
					t.Errorf("report holds %q", w)
				}
			}
			if c.tookLess > 0 && took > c.tookLess {
				t.Errorf("took %s, want under %s", took, c.tookLess)
			}
			if t.Failed() {
				t.Logf("report:\n%s", out)
			}
		})
	}
}

// A running plugin answers the doctor on its socket, with its own settings: here MOUNT_ROOT is
// the harness's temporary directory, not a shared mount point, so the report says so (HTTP 500).
func TestDoctorOnThePluginSocket(t *testing.T) {
	t.Parallel()
	l := labEnv(t)
	p := newPlugin(t, l, "host-a")
	p.start()
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", p.sock())
	}}}
	resp, err := client.Get("http://plugin/Plugin.Doctor")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	report := string(raw)
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("HTTP %d, want 500 (a failed check)", resp.StatusCode)
	}
	for _, w := range []string{"[ OK ] settings   BACKEND=rbd MAPPER=fuse", "[ OK ] ceph       connected as client." + l.user,
		"[FAIL] mount-root MOUNT_ROOT " + p.mountRoot() + " is not a shared mount point", "1 check(s) failed"} {
		if !strings.Contains(report, w) {
			t.Errorf("report lacks %q:\n%s", w, report)
		}
	}
	// The plugin serves on.
	p.call("/VolumeDriver.List", struct{}{}, nil)
}
