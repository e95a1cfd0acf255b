package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver/volclient"
)

// plugin is one running plugin binary, driven over its unix socket with the
// docker.volumedriver/1.0 protocol, exactly as dockerd drives it.
type plugin struct {
	name    string // also its NODE_NAME
	dir     string // socket, state, mounts, log
	env     []string
	cmd     *exec.Cmd
	started time.Time
	exited  chan error
	client  *volclient.Client
}

func newPlugin(bin, work, name string, env ...string) *plugin {
	dir := filepath.Join(work, name)
	p := &plugin{name: name, dir: dir}
	p.env = append([]string{
		"MAPPER=fuse", "MOUNT_ROOT=" + p.mountRoot(), "STATE_DIR=" + filepath.Join(dir, "state"),
		"PLUGIN_SOCKET=" + p.sock(), "NODE_NAME=" + name, "LOG_LEVEL=info", "DEFAULT_SIZE=1G",
		"CALL_TIMEOUT=100s",
	}, env...)
	p.cmd = exec.Command(bin)
	p.client = volclient.New(p.sock(), 120*time.Second)
	return p
}

func (p *plugin) sock() string      { return filepath.Join(p.dir, "ceph.sock") }
func (p *plugin) mountRoot() string { return filepath.Join(p.dir, "mnt") }
func (p *plugin) fuseRoot() string  { return filepath.Join(p.mountRoot(), ".rbd-fuse") }
func (p *plugin) logPath() string   { return filepath.Join(p.dir, "plugin.log") }

// start runs the binary and returns the time from the process's start to the first answered
// request (a List, as dockerd sends after enabling a plugin).
func (p *plugin) start(bin string) (time.Duration, error) {
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return 0, err
	}
	logf, err := os.OpenFile(p.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	p.client.CloseIdle() // a previous process's connections
	p.cmd = exec.Command(bin)
	p.cmd.Env = append(os.Environ(), p.env...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.exited = make(chan error, 1)
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return 0, err
	}
	go func(c *exec.Cmd, ch chan error) { ch <- c.Wait(); logf.Close() }(p.cmd, p.exited)
	deadline := p.started.Add(60 * time.Second)
	for {
		err := p.call("/VolumeDriver.List", struct{}{}, nil)
		var pe *volclient.Error
		if err == nil || errors.As(err, &pe) {
			return time.Since(p.started), nil
		}
		select {
		case err := <-p.exited:
			p.cmd = nil
			return 0, fmt.Errorf("plugin %s exited at start: %v; log %s:\n%s", p.name, err, p.logPath(), tail(p.logPath(), 20))
		default:
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("plugin %s did not answer within 60s; log %s:\n%s", p.name, p.logPath(), tail(p.logPath(), 20))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits (mounts and mappings stay, as after a plugin upgrade).
func (p *plugin) stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	p.cmd = nil
}

func (p *plugin) pid() int {
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// call posts one request; a refusal comes back as *volclient.Error.
func (p *plugin) call(path string, req, resp any) error { return p.client.Call(path, req, resp) }

func (p *plugin) create(name string, opts map[string]string) error {
	if err := p.call("/VolumeDriver.Create", map[string]any{"Name": name, "Opts": opts}, nil); err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	return nil
}

func (p *plugin) mount(name, id string) (string, error) {
	var r struct{ Mountpoint string }
	if err := p.call("/VolumeDriver.Mount", map[string]string{"Name": name, "ID": id}, &r); err != nil {
		return "", fmt.Errorf("mount %s: %w", name, err)
	}
	if r.Mountpoint == "" {
		return "", fmt.Errorf("mount %s: empty mountpoint", name)
	}
	return r.Mountpoint, nil
}

func (p *plugin) unmount(name, id string) error {
	if err := p.call("/VolumeDriver.Unmount", map[string]string{"Name": name, "ID": id}, nil); err != nil {
		return fmt.Errorf("unmount %s: %w", name, err)
	}
	return nil
}

func (p *plugin) remove(name string) error {
	if err := p.call("/VolumeDriver.Remove", map[string]string{"Name": name}, nil); err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	return nil
}

func (p *plugin) get(name string) error {
	var r struct{ Volume struct{ Name string } }
	if err := p.call("/VolumeDriver.Get", map[string]string{"Name": name}, &r); err != nil {
		return fmt.Errorf("get %s: %w", name, err)
	}
	if r.Volume.Name != name {
		return fmt.Errorf("get %s: answered %q", name, r.Volume.Name)
	}
	return nil
}

func (p *plugin) list() (int, error) {
	var r struct{ Volumes []struct{ Name string } }
	if err := p.call("/VolumeDriver.List", struct{}{}, &r); err != nil {
		return 0, fmt.Errorf("list: %w", err)
	}
	return len(r.Volumes), nil
}

// reconciles returns the durations of the start-up reconciles the plugin has logged, in order.
func (p *plugin) reconciles() []time.Duration {
	f, err := os.Open(p.logPath())
	if err != nil {
		return nil
	}
	defer f.Close()
	re := regexp.MustCompile(`duration=(\S+)`)
	var out []time.Duration
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "msg=reconciled") {
			if m := re.FindStringSubmatch(line); m != nil {
				if v, err := time.ParseDuration(m[1]); err == nil {
					out = append(out, v)
				}
			}
		}
	}
	return out
}

// rssKiB reads VmRSS and VmHWM of a process, in KiB.
func rssKiB(pid int) (rss, hwm int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v
		case "VmHWM:":
			hwm = v
		}
	}
	return rss, hwm
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
