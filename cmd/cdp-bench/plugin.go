package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver/volclient"
	"github.com/cephdocker/ceph-docker-plugin/plugin/plugintest"
)

// plugin is one running plugin binary, driven over its unix socket with the
// docker.volumedriver/1.0 protocol, exactly as dockerd drives it.
type plugin struct {
	*plugintest.Process
	name   string // also its NODE_NAME
	dir    string // socket, state, mounts, log
	client *volclient.Client
}

func newPlugin(bin, work, name string, env ...string) *plugin {
	dir := filepath.Join(work, name)
	p := &plugin{name: name, dir: dir}
	p.Process = plugintest.NewProcess(bin, dir, name, 120*time.Second,
		append([]string{"LOG_LEVEL=info", "DEFAULT_SIZE=1G", "CALL_TIMEOUT=100s"}, env...)...)
	p.LogFile = p.logPath()
	p.client = p.Client
	return p
}

func (p *plugin) sock() string      { return p.Sock() }
func (p *plugin) mountRoot() string { return p.MountRoot() }
func (p *plugin) fuseRoot() string  { return p.FuseRoot() }
func (p *plugin) logPath() string   { return filepath.Join(p.dir, "plugin.log") }

// start runs the binary and returns the time from the process's start to the first answered
// request (a List, as dockerd sends after enabling a plugin).
func (p *plugin) start(bin string) (time.Duration, error) {
	p.Bin = bin
	if err := p.Start(); err != nil {
		return 0, err
	}
	d, err := p.WaitReady(60*time.Second, 2*time.Millisecond, p.Answers)
	if err != nil {
		return 0, fmt.Errorf("%w; log %s:\n%s", err, p.logPath(), p.LogTail(20))
	}
	return d, nil
}

// stop sends SIGTERM and waits (mounts and mappings stay, as after a plugin upgrade).
func (p *plugin) stop() { p.Stop(15 * time.Second) }

func (p *plugin) pid() int { return p.Pid() }

// call posts one request; a refusal comes back as *volclient.Error.
func (p *plugin) call(path string, req, resp any) error { return p.Call(path, req, resp) }

func (p *plugin) create(name string, opts map[string]string) error { return p.Create(name, opts) }

func (p *plugin) mount(name, id string) (string, error) { return p.Mount(name, id) }

func (p *plugin) unmount(name, id string) error { return p.Unmount(name, id) }

func (p *plugin) remove(name string) error { return p.Remove(name) }

func (p *plugin) get(name string) error {
	_, err := p.Get(name)
	return err
}

func (p *plugin) list() (int, error) {
	vs, err := p.List()
	return len(vs), err
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

// pssKiB is a process's proportional set size (Pss in /proc/PID/smaps_rollup): its private pages
// plus its share of the pages it shares, such as the Ceph libraries every rbd-fuse maps. Summed
// over processes it counts the memory they take, where summed RSS counts shared pages once per
// process. 0 when it cannot be read.
func pssKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "Pss:" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}
