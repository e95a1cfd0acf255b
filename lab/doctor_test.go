//go:build lab

package lab

import (
	"strings"
	"testing"
	"time"
)

// The doctor on a real host kernel: with the rbd module installed but not loaded it loads it,
// reaches the lab Ceph as the plugin's user, may blocklist, and finds the guest's clock close to
// the cluster's; with the module gone (modprobe cannot find it) and MAPPER=krbd it fails the
// check and says how to fix it.
func TestDoctorInTheGuest(t *testing.T) {
	g := boot(t, "lab-doctor")
	// MOUNT_ROOT as a managed plugin has it: a shared mount point.
	g.sh("mkdir -p /mnt/volumes && mount --bind /mnt/volumes /mnt/volumes && mount --make-rshared /mnt/volumes")
	g.sh("rmmod rbd && [ ! -e /sys/bus/rbd ]")
	env := append([]string{"env"}, g.pluginEnv...)
	env = append(env, "STATE_DIR=/mnt/volumes/.state")
	doctor := func(extra ...string) (string, int) {
		argv := append(append(append([]string{}, env...), extra...), "/usr/bin/ceph-docker-plugin", "doctor")
		res := g.run(2*time.Minute, argv...)
		if res.Err != "" {
			t.Fatalf("doctor: %s", res.Err)
		}
		return res.Stdout + res.Stderr, res.Code
	}

	report, code := doctor()
	step(t, "doctor with the rbd module unloaded:\n%s", report)
	for _, w := range []string{"[ OK ] krbd       the kernel's rbd driver was not loaded; modprobe rbd loaded it", "[ OK ] mount-root",
		"[ OK ] ceph", "[ OK ] pool", "[ OK ] blocklist", "[ OK ] clock", "no check failed"} {
		if !strings.Contains(report, w) {
			t.Errorf("report lacks %q", w)
		}
	}
	if code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	g.sh("[ -e /sys/bus/rbd/add_single_major ]")

	// The module gone: unloaded, and modprobe finds no rbd.ko.
	g.sh("rmmod rbd && for f in $(find /lib/modules -name 'rbd.ko*'); do mv $f $f.hidden; done")
	report, code = doctor("MAPPER=krbd")
	step(t, "doctor with the rbd module missing, MAPPER=krbd:\n%s", report)
	for _, w := range []string{"[FAIL] krbd", "modprobe rbd failed", "MAPPER=krbd cannot map", "fix: install the kernel's modules package", "1 check(s) failed"} {
		if !strings.Contains(report, w) {
			t.Errorf("report lacks %q", w)
		}
	}
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	g.sh("for f in $(find /lib/modules -name 'rbd.ko*.hidden'); do mv $f ${f%.hidden}; done")
}
