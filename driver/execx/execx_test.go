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
