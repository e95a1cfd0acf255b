package plugintest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver/volclient"
)

// Process is one plugin binary outside dockerd, standing for one host: its own socket, mount
// root, state directory and NODE_NAME under Dir, driven over its socket with
// docker.volumedriver/1.0 as dockerd drives it.
type Process struct {
	Bin  string // the plugin binary
	Node string // its NODE_NAME
	Dir  string // socket, state, mounts
	Cwd  string // the process's working directory ("": the caller's)
	// Env are settings after the host's own (MAPPER=fuse, MOUNT_ROOT, STATE_DIR, PLUGIN_SOCKET,
	// NODE_NAME) and the caller's environment: a later setting of a key wins.
	Env []string
	// LogFile receives the process's output, appended; "": it is kept in memory. Logs reads both.
	LogFile string
	Client  *volclient.Client

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when the current process has exited
	exitErr error
	started time.Time
	log     bytes.Buffer
}

// NewProcess prepares (but does not start) the plugin bin as host node in dir; each call over
// its socket gives up after callTimeout.
func NewProcess(bin, dir, node string, callTimeout time.Duration, settings ...string) *Process {
	p := &Process{Bin: bin, Node: node, Dir: dir, Env: settings}
	p.Client = volclient.New(p.Sock(), callTimeout)
	return p
}

func (p *Process) Sock() string      { return filepath.Join(p.Dir, "ceph.sock") }
func (p *Process) MountRoot() string { return filepath.Join(p.Dir, "mnt") }
func (p *Process) FuseRoot() string  { return filepath.Join(p.MountRoot(), ".rbd-fuse") }
func (p *Process) StateDir() string  { return filepath.Join(p.Dir, "state") }

// HostSettings are the settings that make the process a host of its own under Dir.
func (p *Process) HostSettings() []string {
	return []string{"MAPPER=fuse", "MOUNT_ROOT=" + p.MountRoot(), "STATE_DIR=" + p.StateDir(),
		"PLUGIN_SOCKET=" + p.Sock(), "NODE_NAME=" + p.Node}
}

// Write appends to the in-memory log (the process's output when LogFile is "").
func (p *Process) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.Write(b)
}

// Logs returns what the process wrote (every start's, in order).
func (p *Process) Logs() string {
	if p.LogFile != "" {
		b, _ := os.ReadFile(p.LogFile)
		return string(b)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// LogTail returns the last n lines of Logs.
func (p *Process) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(p.Logs(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Start runs the binary with the caller's environment, the host's settings, Env and extra, in
// that order. It does not wait for the socket: see WaitReady.
func (p *Process) Start(extra ...string) error {
	if err := os.MkdirAll(p.Dir, 0o755); err != nil {
		return err
	}
	var out io.Writer = p
	var logf *os.File
	if p.LogFile != "" {
		f, err := os.OpenFile(p.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		logf, out = f, f
	}
	p.Client.CloseIdle() // a previous process's connections
	cmd := exec.Command(p.Bin)
	cmd.Dir = p.Cwd
	cmd.Env = append(append(append(os.Environ(), p.HostSettings()...), p.Env...), extra...)
	cmd.Stdout, cmd.Stderr = out, out
	done := make(chan struct{})
	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		if logf != nil {
			logf.Close()
		}
		return fmt.Errorf("start the plugin %s: %w", p.Node, err)
	}
	p.mu.Lock()
	p.cmd, p.done, p.exitErr = cmd, done, nil
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		if logf != nil {
			logf.Close()
		}
		p.mu.Lock()
		p.exitErr = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// Started is when the current process started.
func (p *Process) Started() time.Time { return p.started }

// Pid is the current process's pid (0: none started).
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Exited is closed when the current process has exited (nil: none started).
func (p *Process) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// ExitErr is what the exited process's Wait returned.
func (p *Process) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr
}

// Running says whether a started process has not exited yet.
func (p *Process) Running() bool {
	done := p.Exited()
	return done != nil && !closed(done)
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// ErrExited is returned by WaitReady when the process exits before it is ready.
var ErrExited = errors.New("exited at start")

// WaitReady polls ready every poll until it says true, and returns the time since the start. It
// fails when the process exits first (ErrExited) or within passes.
func (p *Process) WaitReady(within, poll time.Duration, ready func() bool) (time.Duration, error) {
	deadline := p.started.Add(within)
	for {
		if ready() {
			return time.Since(p.started), nil
		}
		select {
		case <-p.Exited():
			return 0, fmt.Errorf("plugin %s %w: %v", p.Node, ErrExited, p.ExitErr())
		default:
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("plugin %s was not ready on %s within %s", p.Node, p.Sock(), within)
		}
		time.Sleep(poll)
	}
}

// Answers says whether the plugin answered a List (with a volume list or a refusal: either
// way it serves the socket).
func (p *Process) Answers() bool {
	err := p.Client.Call("/VolumeDriver.List", struct{}{}, nil)
	var pe *volclient.Error
	return err == nil || errors.As(err, &pe)
}

// Stop sends SIGTERM and waits for the exit; after grace it kills the process. Mounts and
// mappings stay, as after a plugin upgrade.
func (p *Process) Stop(grace time.Duration) {
	if !p.Running() {
		return
	}
	p.signal(syscall.SIGTERM)
	select {
	case <-p.Exited():
	case <-time.After(grace):
		p.signal(syscall.SIGKILL)
		<-p.Exited()
	}
}

// Kill9 kills the process with SIGKILL, as a crash would, and waits up to within for its exit.
func (p *Process) Kill9(within time.Duration) error {
	if !p.Running() {
		return nil
	}
	p.signal(syscall.SIGKILL)
	return p.WaitExit(within)
}

// WaitExit waits up to within for the process to exit.
func (p *Process) WaitExit(within time.Duration) error {
	done := p.Exited()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-time.After(within):
		return fmt.Errorf("plugin %s (pid %d) did not exit within %s", p.Node, p.Pid(), within)
	}
}

func (p *Process) signal(sig syscall.Signal) {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Signal(sig)
	}
}
