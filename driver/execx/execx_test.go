package execx

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRunKeepsStdoutAndStderrApart(t *testing.T) {
	res, err := Run(context.Background(), Cmd{Name: "sh", Args: []string{"-c", "echo out; echo err >&2"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(res.Stdout); got != "out\n" {
		t.Errorf("stdout = %q", got)
	}
	if got := string(res.Stderr); got != "err\n" {
		t.Errorf("stderr = %q", got)
	}
}

func TestRunErrorCarriesCommandExitCodeAndStderr(t *testing.T) {
	_, err := Run(context.Background(), Cmd{Name: "sh", Args: []string{"-c", "echo boom >&2; exit 3"}})
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v, want *Error", err)
	}
	if e.ExitCode != 3 || !strings.Contains(e.Error(), "boom") || !strings.Contains(e.Error(), "sh -c") {
		t.Errorf("error = %q (exit %d)", e.Error(), e.ExitCode)
	}
}

func TestRunRedactsSecrets(t *testing.T) {
	const key = "AQBsecretkey=="
	_, err := Run(context.Background(), Cmd{
		Name: "sh", Args: []string{"-c", "echo using " + key + " >&2; exit 1"}, Secrets: []string{key},
	})
	if err == nil {
		t.Fatal("want an error")
	}
	if strings.Contains(err.Error(), key) {
		t.Errorf("secret leaked into error: %q", err.Error())
	}
	if !strings.Contains(err.Error(), "<redacted>") {
		t.Errorf("error does not show the redaction: %q", err.Error())
	}
}

func TestRunStdin(t *testing.T) {
	res, err := Run(context.Background(), Cmd{Name: "cat", Stdin: []byte("secret-in")})
	if err != nil || string(res.Stdout) != "secret-in" {
		t.Fatalf("got %q, %v", res.Stdout, err)
	}
}

// A command that outlives its deadline is killed together with the children it started, and Run
// returns promptly with an error that wraps context.DeadlineExceeded.
func TestRunKillsProcessGroupOnDeadline(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Run(ctx, Cmd{Name: "sh", Args: []string{"-c", "sleep 60 & echo $! > " + pidFile + "; wait"}})
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Fatalf("Run returned after %v, want about 300ms", elapsed)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	raw, rerr := os.ReadFile(pidFile)
	if rerr != nil {
		t.Fatal(rerr)
	}
	pid := 0
	for _, c := range strings.TrimSpace(string(raw)) {
		pid = pid*10 + int(c-'0')
	}
	deadline := time.Now().Add(2 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("child %d still alive after the deadline", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRunRefusesExpiredContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Run(ctx, Cmd{Name: "true"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

// Children get PATH and what the command gives them, nothing else of the parent's environment
// (the plugin's held Keystone secrets at start).
func TestRunPassesAMinimalEnvironment(t *testing.T) {
	t.Setenv("CDP_TEST_SECRET", "do-not-inherit-4711")
	res, err := Run(context.Background(), Cmd{Name: "env", Env: []string{"CEPH_ARGS=--id docker"}})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSpace(string(res.Stdout)), "\n")
	if len(got) != 2 || !strings.HasPrefix(got[0], "PATH=/") || got[1] != "CEPH_ARGS=--id docker" {
		t.Fatalf("child's environment = %q, want PATH and CEPH_ARGS only", got)
	}
	if strings.Contains(string(res.Stdout), "do-not-inherit-4711") {
		t.Fatal("the child inherited the parent's secret")
	}
}

// A child that does not die when killed (in uninterruptible sleep on a hung device) does not hold
// its caller: the wait gives up a grace period after the deadline, the process is listed as
// abandoned, and the reaper drops it once it exits. (A fake Wait stands for the stuck child here;
// frozen_integration_test.go does it with a real process the kernel keeps from dying.)
func TestWaitBoundedLeavesAStuckChildToAReaper(t *testing.T) {
	exit := make(chan struct{})
	waited := make(chan struct{})
	wait := func() error { <-exit; close(waited); return errors.New("signal: killed") }
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	const pid = 999999 // never a real process here: only a key in the list
	start := time.Now()
	err, gone := waitBounded(ctx, wait, 200*time.Millisecond, "mkfs.ext4 /dev/rbd0", pid)
	took := time.Since(start)
	if gone || err != nil {
		t.Fatalf("waitBounded = %v, gone=%v; want the stuck child abandoned", err, gone)
	}
	if took < 300*time.Millisecond || took > 2*time.Second {
		t.Errorf("waitBounded returned after %v, want deadline (100ms) + grace (200ms)", took)
	}
	if a := Abandoned(); len(a) != 1 || a[0] != "999999: mkfs.ext4 /dev/rbd0" {
		t.Fatalf("Abandoned() = %q", a)
	}
	close(exit) // the kernel lets it go at last
	<-waited
	deadline := time.Now().Add(2 * time.Second)
	for len(Abandoned()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the reaper did not drop the exited child: %q", Abandoned())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A child that exits within the grace period after its kill is waited for, not abandoned.
func TestWaitBoundedWaitsOutTheGracePeriod(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	wait := func() error { time.Sleep(150 * time.Millisecond); return errors.New("signal: killed") }
	err, gone := waitBounded(ctx, wait, time.Second, "sleep", 999998)
	if !gone || err == nil {
		t.Fatalf("waitBounded = %v, gone=%v; want the child's own exit", err, gone)
	}
	if a := Abandoned(); len(a) != 0 {
		t.Fatalf("Abandoned() = %q, want none", a)
	}
}
