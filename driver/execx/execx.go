// Package execx is the one way this project runs external commands: bound by a context (the
// whole process group is killed when it expires, and a child that does not die is left to a
// reaper instead of holding the caller), stdout and stderr kept apart, secrets redacted from
// everything that can reach a log or an error, errors that carry the command and its stderr, and
// a minimal environment: children inherit nothing of the plugin's own.
package execx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/internal/syncbuf"
)

// Cmd describes one command to run.
type Cmd struct {
	Name string
	Args []string
	// Env is the command's environment besides PATH. Nothing else of the plugin's environment is
	// passed on: a child never sees a setting it was not given (Keystone secrets included).
	Env []string
	// Stdin, when set, is written to the command's standard input (keys go here, not in Args).
	Stdin []byte
	// Secrets are strings that must never appear in errors or logs; they are replaced by "<redacted>".
	Secrets []string
	// Dir is the working directory ("": the parent's).
	Dir string
}

// Result is a finished command's output.
type Result struct {
	Stdout, Stderr []byte
}

// Error is returned when a command fails, times out or cannot start.
type Error struct {
	Cmd      string // the command line, redacted
	Stderr   string // the last lines of stderr, redacted
	ExitCode int    // -1 when the command did not exit by itself
	Err      error
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("%s: %v", e.Cmd, e.Err)
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// waitDelay bounds how long Run waits for output pipes after the process group was killed
// (a grandchild that escaped the group could otherwise keep them open forever).
const waitDelay = 2 * time.Second

// killGrace bounds how long Run waits for a killed command to exit. A process in uninterruptible
// sleep (mkfs writing to a device whose I/O hangs) dies only when the kernel lets it, perhaps
// never: Run returns after killGrace and a reaper goroutine waits for it instead.
var killGrace = 2 * time.Second

// defaultPath is the children's PATH when the plugin has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// environ is a child's whole environment: PATH and what the command was given.
func environ(extra []string) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = defaultPath
	}
	return append([]string{"PATH=" + path}, extra...)
}

// Run runs c and waits for it or for ctx. When ctx ends first, the command's whole process group
// is killed and the returned error wraps ctx.Err(); Run then waits at most killGrace for the
// command to exit (see Abandoned).
func Run(ctx context.Context, c Cmd) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, &Error{Cmd: c.String(), ExitCode: -1, Err: err}
	}
	cmd := exec.CommandContext(ctx, c.Name, c.Args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// Negative pid: the process group, so children (e.g. a forking daemon) die too.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = waitDelay
	cmd.Dir = c.Dir
	cmd.Env = environ(c.Env)
	if c.Stdin != nil {
		cmd.Stdin = bytes.NewReader(c.Stdin)
	}
	// An abandoned command may still write them while they are read.
	var stdout, stderr syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return Result{}, &Error{Cmd: c.String(), ExitCode: -1, Err: err}
	}
	err, gone := waitBounded(ctx, cmd.Wait, killGrace, c.String(), cmd.Process.Pid)
	res := Result{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	if err == nil && gone {
		return res, nil
	}
	e := &Error{Cmd: c.String(), Stderr: c.redact(tail(string(res.Stderr), 5)), ExitCode: -1, Err: err}
	var exitErr *exec.ExitError
	switch {
	case !gone:
		e.Err = fmt.Errorf("%w: killed after its deadline, but it has not exited %v later (stuck in the kernel, e.g. on a hung device); "+
			"a reaper waits for it: %w", driver.ErrTimeout, killGrace, ctx.Err())
	case ctx.Err() != nil:
		e.Err = fmt.Errorf("%w: killed after its deadline: %w", driver.ErrTimeout, ctx.Err())
	case errors.As(err, &exitErr):
		e.ExitCode = exitErr.ExitCode()
		e.Err = fmt.Errorf("exit status %d", e.ExitCode)
	}
	return res, e
}

// waitBounded runs wait (a started command's Wait) and returns its error with gone=true, or, once
// ctx has ended (the command was killed then) and grace has passed as well, gone=false: wait then
// goes on in a reaper goroutine, and the process is listed by Abandoned until it returns.
func waitBounded(ctx context.Context, wait func() error, grace time.Duration, what string, pid int) (err error, gone bool) {
	done := make(chan error, 1)
	go func() { done <- wait() }()
	select {
	case err := <-done:
		return err, true
	case <-ctx.Done():
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case err := <-done:
		return err, true
	case <-t.C:
	}
	abandon(pid, what)
	log := logrus.WithFields(logrus.Fields{"cmd": what, "pid": pid})
	log.WithField("grace", grace).Warn("a command killed at its deadline has not exited: left to a reaper (it may be stuck on a hung device)")
	go func() {
		<-done
		release(pid)
		log.Info("a command left to the reaper has exited")
	}()
	return nil, false
}

var (
	abandonedMu sync.Mutex
	abandoned   = map[int]string{}
)

func abandon(pid int, what string) {
	abandonedMu.Lock()
	defer abandonedMu.Unlock()
	abandoned[pid] = what
}

func release(pid int) {
	abandonedMu.Lock()
	defer abandonedMu.Unlock()
	delete(abandoned, pid)
}

// Abandoned lists the commands killed at their deadline that have not exited yet ("pid: command"):
// the reaper waits for each, and drops it from this list when it exits.
func Abandoned() []string {
	abandonedMu.Lock()
	defer abandonedMu.Unlock()
	out := make([]string, 0, len(abandoned))
	for pid, what := range abandoned {
		out = append(out, fmt.Sprintf("%d: %s", pid, what))
	}
	sort.Strings(out)
	return out
}

// String is the command line with secrets redacted, for logs and errors.
func (c Cmd) String() string {
	return c.redact(strings.TrimSpace(c.Name + " " + strings.Join(c.Args, " ")))
}

func (c Cmd) redact(s string) string {
	for _, sec := range c.Secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "<redacted>")
		}
	}
	return s
}

func tail(s string, lines int) string {
	s = strings.TrimSpace(s)
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, " | ")
}

// Bounded runs fn, which may block in the kernel (a mount(2), or I/O on a stuck FUSE server),
// and returns its error, or an error wrapping ctx.Err() as soon as ctx ends. fn then goes on in
// the background: use it only for calls whose late completion is harmless or undone by fn itself.
func Bounded(ctx context.Context, fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: gave up waiting: %w", driver.ErrTimeout, ctx.Err())
	}
}
