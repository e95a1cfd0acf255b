package plugintest

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestUniq(t *testing.T) {
	a, b := Uniq("vol"), Uniq("vol")
	if !regexp.MustCompile(`^vol-[0-9a-f]{8}$`).MatchString(a) || a == b {
		t.Fatalf("Uniq: %q, %q", a, b)
	}
}

func TestContextEndsWithTheTest(t *testing.T) {
	var ctx interface{ Err() error }
	t.Run("inner", func(t *testing.T) {
		c := Context(t, time.Hour)
		if _, ok := c.Deadline(); !ok || c.Err() != nil {
			t.Fatalf("Context: deadline set %v, err %v", ok, c.Err())
		}
		ctx = c
	})
	if ctx.Err() == nil {
		t.Fatal("the context outlived its test")
	}
}

func TestReadEnvFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "env")
	raw := "CEPH_CONF=/etc/ceph/ceph.conf\n# a comment\n\nVERSIONS=\"a 1;b 2;\"\n  RBD_POOL=volumes  \nnot a setting\n"
	if err := os.WriteFile(path, []byte(raw), 0o600); err != nil {
		t.Fatal(err)
	}
	e := MustEnvFile(t, path)
	want := []string{"CEPH_CONF=/etc/ceph/ceph.conf", "RBD_POOL=volumes", "VERSIONS=a 1;b 2;"}
	if got := e.List(); !slices.Equal(got, want) {
		t.Fatalf("List() = %q, want %q", got, want)
	}
	if _, err := ReadEnvFile(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "scripts/") {
		t.Fatalf("a missing env file: %v, want an error naming the lab scripts", err)
	}
}

func TestOpenStackDefaultsAndMissing(t *testing.T) {
	env := map[string]string{"OS_AUTH_URL": "http://127.0.0.1:5000/v3", "OS_USERNAME": "demo", "OS_PASSWORD": "pw", "OS_PROJECT_NAME": "demo"}
	o, err := openStackFrom(func(k string) string { return env[k] }, "test")
	if err != nil || o.UserDomain != "Default" || o.ProjectDomain != "Default" {
		t.Fatalf("openStackFrom = %+v, %v", o, err)
	}
	a := o.AuthOptions()
	if a.IdentityEndpoint != env["OS_AUTH_URL"] || a.Scope == nil || a.Scope.ProjectName != "demo" || a.Scope.DomainName != "Default" {
		t.Fatalf("AuthOptions = %+v", a)
	}
	if !slices.Contains(o.Settings(), "OS_USER_DOMAIN_NAME=Default") {
		t.Fatalf("Settings = %q", o.Settings())
	}
	delete(env, "OS_PASSWORD")
	if _, err := openStackFrom(func(k string) string { return env[k] }, "test"); err == nil || !strings.Contains(err.Error(), "OS_PASSWORD") {
		t.Fatalf("without OS_PASSWORD: %v", err)
	}
}

// fakePlugin writes a script that prints its NODE_NAME and STATE_DIR, then sleeps (ignoring
// SIGTERM when told to), standing in for the plugin binary.
func fakePlugin(t *testing.T, ignoreTerm bool) string {
	trap := ""
	if ignoreTerm {
		trap = "trap '' TERM\n"
	}
	path := filepath.Join(t.TempDir(), "fake-plugin")
	script := "#!/bin/sh\n" + trap + "echo node=$NODE_NAME state=$STATE_DIR\nwhile :; do sleep 0.05; done\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestProcessStartStopAndSettings(t *testing.T) {
	dir := t.TempDir()
	p := NewProcess(fakePlugin(t, false), dir, "host-a", time.Second, "STATE_DIR="+filepath.Join(dir, "elsewhere"))
	if p.Running() {
		t.Fatal("running before Start")
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	want := "node=host-a state=" + filepath.Join(dir, "elsewhere")
	if _, err := p.WaitReady(5*time.Second, 10*time.Millisecond, func() bool { return strings.Contains(p.Logs(), want) }); err != nil {
		t.Fatalf("%v; log %q (a later setting must win)", err, p.Logs())
	}
	if !p.Running() || p.Pid() == 0 {
		t.Fatal("not running after Start")
	}
	start := time.Now()
	p.Stop(5 * time.Second)
	if p.Running() || time.Since(start) > 4*time.Second {
		t.Fatalf("Stop: running %v after %v", p.Running(), time.Since(start))
	}
	p.Stop(time.Second) // stopping a stopped process is a no-op
}

func TestProcessStopKillsAfterGraceAndLogsToFile(t *testing.T) {
	dir := t.TempDir()
	p := NewProcess(fakePlugin(t, true), dir, "host-b", time.Second)
	p.LogFile = filepath.Join(dir, "plugin.log")
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitReady(5*time.Second, 10*time.Millisecond, func() bool { return strings.Contains(p.Logs(), "node=host-b") }); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the trap is set before the first line
	start := time.Now()
	p.Stop(300 * time.Millisecond)
	if d := time.Since(start); p.Running() || d < 300*time.Millisecond {
		t.Fatalf("Stop of a process ignoring SIGTERM: running %v after %v, want killed after the grace", p.Running(), d)
	}
	if b, _ := os.ReadFile(p.LogFile); !strings.Contains(string(b), "node=host-b") || p.LogTail(1) != strings.TrimSpace(string(b)) {
		t.Fatalf("log file %q, tail %q", b, p.LogTail(1))
	}
}

func TestProcessWaitReadyFailsWhenTheProcessExits(t *testing.T) {
	p := NewProcess("/bin/false", t.TempDir(), "host-c", time.Second)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	_, err := p.WaitReady(5*time.Second, 10*time.Millisecond, func() bool { return false })
	if err == nil || !strings.Contains(err.Error(), "exited at start") || p.ExitErr() == nil {
		t.Fatalf("WaitReady on an exiting process: %v (exit %v)", err, p.ExitErr())
	}
	if err := p.Kill9(time.Second); err != nil {
		t.Fatalf("Kill9 of an exited process: %v", err)
	}
}

func TestProcsSeesThisProcessAndItsParent(t *testing.T) {
	procs, err := Procs()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		if p.PID == os.Getpid() {
			if p.PPID != os.Getppid() || len(p.Args) == 0 || p.Args[0] != os.Args[0] {
				t.Fatalf("this process as Procs sees it: %+v (ppid %d, args %q)", p, os.Getppid(), os.Args)
			}
			return
		}
	}
	t.Fatalf("Procs did not list this process (%d) among %d", os.Getpid(), len(procs))
}
