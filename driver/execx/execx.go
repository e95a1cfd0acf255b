// Package execx is the one way this project runs external commands: bound by a context (the
// whole process group is killed when it expires), stdout and stderr kept apart, secrets redacted
// from everything that can reach a log or an error, and errors that carry the command and its
// stderr.
package execx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// Cmd describes one command to run.
type Cmd struct {
	Name string
	Args []string
	// Env is added to the parent's environment.
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

// Run runs c and waits for it or for ctx. When ctx ends first, the command's whole process group
// is killed and the returned error wraps ctx.Err().
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
	if len(c.Env) > 0 {
		cmd.Env = append(cmd.Environ(), c.Env...)
	}
	if c.Stdin != nil {
		cmd.Stdin = bytes.NewReader(c.Stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := Result{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	if err == nil {
		return res, nil
	}
	e := &Error{Cmd: c.String(), Stderr: c.redact(tail(stderr.String(), 5)), ExitCode: -1, Err: err}
	var exitErr *exec.ExitError
	if ctx.Err() != nil {
		e.Err = fmt.Errorf("%w: killed after its deadline: %w", driver.ErrTimeout, ctx.Err())
	} else if errors.As(err, &exitErr) {
		e.ExitCode = exitErr.ExitCode()
		e.Err = fmt.Errorf("exit status %d", e.ExitCode)
	}
	return res, e
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
