package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Counting a Ceph client's OSD requests. A librados client given an `admin socket` in its config
// serves one; the bench gives the plugins it counts a copy of the lab's config that asks for
// <run dir>/<cluster>-<name>.<pid>.<cctid>.asok (countingConf). Its `perf dump` carries the
// client's objecter counters: "op" counts the requests it sent to OSDs
// (a compound request counts once, whatever the number of steps in it). Other processes on the
// same Ceph (the other helpers' tests) do not move these counters, unlike the OSD's own.

// countingConf writes a copy of the Ceph config conf under dir with an admin socket for every
// client, and returns its path.
func countingConf(conf, dir string) (string, error) {
	b, err := os.ReadFile(conf)
	if err != nil {
		return "", err
	}
	rd, err := runDir(conf)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	s := strings.Replace(string(b), "[client]\n", "[client]\nadmin socket = "+rd+"/$cluster-$name.$pid.$cctid.asok\n", 1)
	if !strings.Contains(s, "admin socket") {
		s += "\n[client]\nadmin socket = " + rd + "/$cluster-$name.$pid.$cctid.asok\n"
	}
	out := filepath.Join(dir, "ceph-counting.conf")
	return out, os.WriteFile(out, []byte(s), 0o644)
}

// runDir reads `run dir` from the Ceph config (where the admin sockets are).
func runDir(conf string) (string, error) {
	f, err := os.Open(conf)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok && strings.Join(strings.Fields(k), " ") == "run dir" {
			return strings.TrimSpace(v), nil
		}
	}
	return "/var/run/ceph", sc.Err()
}

// clientAsok finds the admin socket of the Ceph client in process pid: the newest one of that pid
// made since the process started (a socket left by an earlier process that had the same pid is
// older), waiting up to 10 s for it.
func clientAsok(conf string, pid int) (string, error) {
	dir, err := runDir(conf)
	if err != nil {
		return "", err
	}
	started := procStart(pid)
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, _ := filepath.Glob(filepath.Join(dir, fmt.Sprintf("*-client.*.%d.*.asok", pid)))
		best, bestTime := "", time.Time{}
		for _, f := range m {
			st, err := os.Stat(f)
			if err == nil && !st.ModTime().Before(started) && st.ModTime().After(bestTime) {
				best, bestTime = f, st.ModTime()
			}
		}
		if best != "" {
			return best, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no admin socket of process %d in %s", pid, dir)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// procStart is when process pid started, to the second (field 22 of /proc/PID/stat, in clock
// ticks since boot, and the boot time from /proc/stat); the zero time when it cannot be read.
func procStart(pid int) time.Time {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return time.Time{}
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 20 { // f[0] is field 3 (state): starttime, field 22, is f[19]
		return time.Time{}
	}
	ticks, err := strconv.ParseInt(f[19], 10, 64)
	if err != nil {
		return time.Time{}
	}
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}
	}
	for _, l := range strings.Split(string(stat), "\n") {
		if v, ok := strings.CutPrefix(l, "btime "); ok {
			boot, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}
			}
			return time.Unix(boot+ticks/userHZ, 0)
		}
	}
	return time.Time{}
}

// objecterCounters reads the objecter section of a client's perf dump.
func objecterCounters(sock string) (map[string]float64, error) {
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(`{"prefix": "perf dump"}` + "\x00")); err != nil {
		return nil, err
	}
	var n uint32
	if err := binary.Read(c, binary.BigEndian, &n); err != nil {
		return nil, fmt.Errorf("perf dump from %s: %w", sock, err)
	}
	raw := make([]byte, n)
	if _, err := io.ReadFull(c, raw); err != nil {
		return nil, err
	}
	var dump map[string]json.RawMessage
	if err := json.Unmarshal(raw, &dump); err != nil {
		return nil, fmt.Errorf("perf dump from %s: %w", sock, err)
	}
	var section map[string]json.RawMessage
	if err := json.Unmarshal(dump["objecter"], &section); err != nil {
		return nil, fmt.Errorf("perf dump from %s: objecter: %w", sock, err)
	}
	out := map[string]float64{}
	for k, v := range section {
		var f float64
		if json.Unmarshal(v, &f) == nil { // plain counters; averages are objects
			out[k] = f
		}
	}
	return out, nil
}

// clientCounter is a snapshot of what a plugin process has cost so far: OSD requests sent by its
// Ceph client (reads, writes) and CPU time (user + system, all threads).
type clientCounter struct {
	ops, reads, writes float64
	cpuMS              float64
}

func readClientCounter(sock string, pid int) (clientCounter, error) {
	m, err := objecterCounters(sock)
	if err != nil {
		return clientCounter{}, err
	}
	self, _ := procCPU(pid)
	return clientCounter{ops: m["op"], reads: m["op_r"], writes: m["op_w"] + m["op_rmw"], cpuMS: self}, nil
}

func (c clientCounter) sub(o clientCounter) clientCounter {
	return clientCounter{ops: c.ops - o.ops, reads: c.reads - o.reads, writes: c.writes - o.writes, cpuMS: c.cpuMS - o.cpuMS}
}

func (c clientCounter) add(o clientCounter) clientCounter {
	return clientCounter{ops: c.ops + o.ops, reads: c.reads + o.reads, writes: c.writes + o.writes, cpuMS: c.cpuMS + o.cpuMS}
}

func (c clientCounter) div(n float64) clientCounter {
	return clientCounter{ops: c.ops / n, reads: c.reads / n, writes: c.writes / n, cpuMS: c.cpuMS / n}
}
