//go:build integration

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

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// A real child that SIGKILL cannot end: it puts itself in a frozen cgroup (v1 freezer), where a
// task sleeps uninterruptibly until thawed, as mkfs does on a hung device. Run returns a grace
// period after the deadline, and the reaper collects the child once it is thawed.
func TestRunReturnsWhenAKilledChildCannotDie(t *testing.T) {
	const root = "/sys/fs/cgroup/freezer"
	if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err != nil {
		t.Fatalf("this test needs the cgroup v1 freezer at %s (as root): %v", root, err)
	}
	cg, err := os.MkdirTemp(root, "cdp-execx-")
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(cg, "freezer.state")
	t.Cleanup(func() {
		_ = os.WriteFile(state, []byte("THAWED"), 0)
		deadline := time.Now().Add(10 * time.Second)
		for os.Remove(cg) != nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	})
	pidFile := filepath.Join(t.TempDir(), "pid")
	script := "echo $$ > " + pidFile + "; echo $$ > " + filepath.Join(cg, "cgroup.procs") +
		"; echo FROZEN > " + state + "; sleep 60"
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	_, err = Run(ctx, Cmd{Name: "sh", Args: []string{"-c", script}})
	took := time.Since(start)
	if !errors.Is(err, driver.ErrTimeout) || !strings.Contains(err.Error(), "reaper") {
		t.Fatalf("err = %v, want a timeout that says the child was left to a reaper", err)
	}
	if took > time.Second+killGrace+time.Second {
		t.Fatalf("Run returned after %v: deadline 1s, grace %v", took, killGrace)
	}
	raw, _ := os.ReadFile(pidFile)
	pid := strings.TrimSpace(string(raw))
	if a := Abandoned(); len(a) != 1 || !strings.HasPrefix(a[0], pid+": sh -c") {
		t.Fatalf("Abandoned() = %q, want the frozen sh (pid %s)", a, pid)
	}
	if b, _ := os.ReadFile(state); !strings.Contains(string(b), "FROZEN") {
		t.Fatalf("freezer state %q: the child did not stay frozen, the test proves nothing", b)
	}
	// Thawed, the killed child dies and the reaper collects it (no zombie left).
	if err := os.WriteFile(state, []byte("THAWED"), 0); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(Abandoned()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the thawed child was not reaped: %q", Abandoned())
		}
		time.Sleep(20 * time.Millisecond)
	}
	var n int
	for _, c := range pid {
		n = n*10 + int(c-'0')
	}
	if err := syscall.Kill(n, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("child %d after the reaper: kill 0 = %v, want ESRCH (gone)", n, err)
	}
}
