//go:build integration

package main

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/plugin/plugintest"
)

// labMonitor returns the pid of the lab's ceph-mon (the one started with the lab's ceph.conf).
func labMonitor(t *testing.T, l lab) int {
	t.Helper()
	procs, err := plugintest.Procs()
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, p := range procs {
		if len(p.Args) > 0 && filepath.Base(p.Args[0]) == "ceph-mon" && strings.Contains(strings.Join(p.Args, " "), l.conf) {
			pids = append(pids, p.PID)
		}
	}
	if len(pids) != 1 {
		t.Fatalf("want the lab's one ceph-mon (started with %s), found pids %v", l.conf, pids)
	}
	return pids[0]
}

// stopMonitor stops the lab's monitor (SIGSTOP: the OSDs stay up, clients get no answer from
// the monitor) and returns the func that resumes it, also registered with t.Cleanup: other
// tests share this Ceph, so the monitor always comes back, and soon.
func stopMonitor(t *testing.T, l lab) (resume func()) {
	t.Helper()
	pid := labMonitor(t, l)
	resume = func() {
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Errorf("resuming ceph-mon %d: %v", pid, err)
		}
	}
	t.Cleanup(resume)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("stopping ceph-mon %d: %v", pid, err)
	}
	return resume
}

// With the monitors stopped (OSDs up), a Create in a pool the plugin has not opened (one missing
// from its OSD map: librados waits for a newer map from the monitors, with no timeout of its own)
// answers within CALL_TIMEOUT with a message naming the pool, and meanwhile calls on volumes of
// the default pool answer at once: the wait holds nothing shared.
// Not parallel: stopping the monitor stalls every other test's Ceph client (serial tests run
// before the parallel ones start).
func TestCreateInUnopenedPoolWhileMonitorsStopped(t *testing.T) {
	l := labEnv(t)
	const callTimeout = 8 * time.Second
	p := newPlugin(t, l, "host-a", "CALL_TIMEOUT=8s", "CEPH_TIMEOUT=5s")
	p.start()
	known := uniq("monstop")
	p.create(known, map[string]string{"size": "64M"})
	t.Cleanup(func() { _ = p.try("/VolumeDriver.Remove", map[string]string{"Name": known}, nil) })
	p.get(known) // the default pool is open
	pool := uniq("cdp-unopened")
	name := uniq("inpool")

	resume := stopMonitor(t, l)
	stopped := time.Now()
	type answer struct {
		err  error
		took time.Duration
	}
	created := make(chan answer, 1)
	go func() {
		start := time.Now()
		err := p.try("/VolumeDriver.Create", map[string]any{"Name": name, "Opts": map[string]string{"pool": pool, "size": "64M"}}, nil)
		created <- answer{err, time.Since(start)}
	}()
	var gets []time.Duration
	var create answer
	tick := time.NewTicker(500 * time.Millisecond)
wait:
	for {
		select {
		case create = <-created:
			break wait
		case <-tick.C:
			start := time.Now()
			g := p.get(known)
			took := time.Since(start)
			gets = append(gets, took)
			if g.Volume.Name != known {
				t.Errorf("get %s while the create waits = %+v", known, g)
			}
			if took > time.Second {
				t.Errorf("get %s took %v while a create waited on the monitors; want it at once", known, took)
			}
		case <-time.After(callTimeout + 10*time.Second):
			resume()
			t.Fatalf("create in pool %s did not answer %v after the monitors stopped (CALL_TIMEOUT %v)", pool, time.Since(stopped), callTimeout)
		}
	}
	tick.Stop()
	resume()
	t.Logf("monitor stopped for %v; create in %s answered after %v: %v; %d gets meanwhile took %v",
		time.Since(stopped).Round(time.Millisecond), pool, create.took.Round(time.Millisecond), create.err, len(gets), gets)
	if create.err == nil {
		t.Fatalf("create in the pool %s that does not exist succeeded", pool)
	}
	if create.took > callTimeout+2*time.Second {
		t.Errorf("create answered after %v; CALL_TIMEOUT is %v", create.took, callTimeout)
	}
	msg := create.err.Error()
	if !strings.Contains(msg, pool) || !strings.Contains(msg, name) || !strings.Contains(msg, "monitor") {
		t.Errorf("create's error %q does not name the volume, the pool and the monitors", msg)
	}
	if len(gets) < 3 {
		t.Errorf("only %d gets ran while the create waited", len(gets))
	}
	// Back to normal: the same create now fails at once, saying the pool does not exist.
	start := time.Now()
	err := p.try("/VolumeDriver.Create", map[string]any{"Name": name, "Opts": map[string]string{"pool": pool, "size": "64M"}}, nil)
	if err == nil || !strings.Contains(err.Error(), pool) {
		t.Errorf("create in a missing pool with the monitors back = %v", err)
	}
	t.Logf("with the monitors back, create in %s answered after %v: %v", pool, time.Since(start).Round(time.Millisecond), err)
}
