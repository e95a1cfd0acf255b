//go:build lab

package lab

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestKRBDCutOffHolder: the holder's kernel mapping has let the image's exclusive lock go (an
// `rbd snap create` from another client, as a backup tool does, makes it release it), and the
// holder is then cut off the network while its VM runs on. Its watch lapses; another host takes
// the volume over with LOCK_BREAK=on. When the holder's link comes back, its kernel asks for the
// lock again: it must have been fenced (it was neither a watcher nor the lock owner at the
// takeover, so only the clients the holder recorded tell who to fence), and nothing it writes
// may land.
func TestKRBDCutOffHolder(t *testing.T) {
	a := boot(t, "lab-a")
	b := boot(t, "lab-b")
	a.startPlugin()
	b.startPlugin("LOCK_BREAK=on")

	vol := uniq("lab-cut")
	// lab-a must be idle (not writing, so not asking for the exclusive lock) when it is cut off.
	// The inode tables and the journal are initialised by mkfs, not by ext4's lazy init thread
	// after the mount, whose pace stretches with the machine's load (under a loaded CI it kept
	// writing, and taking the lock back, for over 3 minutes).
	a.create(vol, map[string]string{"size": "256M", "mkfs-options": "-E lazy_itable_init=0,lazy_journal_init=0"})
	t.Cleanup(func() { _, _ = admin(t, "rbd", "snap", "purge", lab.pool+"/"+vol) })
	mp := a.mount(vol, "a1")
	a.sh("mkdir " + mp + "/w && for i in 1 2 3 4; do dd if=/dev/urandom of=" + mp + "/w/pre-$i bs=64k count=4 2>/dev/null; done && sync && sleep 3 && sync")
	before := a.sh("cd " + mp + "/w && sha256sum *")
	kclient := strings.TrimSpace(a.sh("cat /sys/bus/rbd/devices/*/client_addr"))
	step(t, "lab-a mounted %s (kernel client %s) and fsynced 4 files", vol, kclient)

	// A backup tool snapshots the image: lab-a's kernel gives the exclusive lock up for it and,
	// idle, does not take it back. (Right after the mount, ext4's lazy inode table init still
	// writes now and then, taking the lock back: snapshot again until lab-a stays idle.)
	start := time.Now()
	var locks, status string
	for i := 0; ; i++ {
		mustAdmin(t, "rbd", "snap", "create", fmt.Sprintf("%s/%s@backup-%d", lab.pool, vol, i))
		idle := true
		for _, wait := range []time.Duration{2 * time.Second, 3 * time.Second} {
			time.Sleep(wait)
			if locks = strings.TrimSpace(mustAdmin(t, "rbd", "lock", "ls", lab.pool+"/"+vol)); strings.Contains(locks, "auto ") {
				idle = false
				break
			}
		}
		if idle {
			step(t, "%d snapshot(s) in %.1fs; lab-a's kernel gave the exclusive lock up and stays idle (rbd lock ls: %q)", i+1, time.Since(start).Seconds(), locks)
			break
		}
		if time.Since(start) > 3*time.Minute {
			t.Fatalf("lab-a's kernel kept taking the exclusive lock back for 3 minutes:\n%s", locks)
		}
	}
	status = strings.TrimSpace(mustAdmin(t, "rbd", "status", lab.pool+"/"+vol))
	if !strings.Contains(status, kclient) {
		t.Fatalf("lab-a's kernel client %s does not watch the image: %s", kclient, status)
	}
	step(t, "watchers: %s", strings.Join(strings.Fields(status), " "))

	// lab-a writes on, in the background: the writes start once its link is down.
	a.sh(`(sleep 3; i=0; while [ $i -lt 30 ]; do dd if=/dev/urandom of=` + mp + `/w/late-$i bs=64k count=1 conv=fsync 2>>/tmp/late.err && echo $i >>/tmp/late.ok; i=$((i+1)); sleep 1; done) </dev/null >/dev/null 2>&1 &`)
	a.monitor("set_link n0 off")
	cutAt := time.Now()
	// The case holds only if lab-a's kernel did not own the exclusive lock when it was cut off
	// (cut off, it cannot take it).
	if locks := mustAdmin(t, "rbd", "lock", "ls", lab.pool+"/"+vol); strings.Contains(locks, "auto ") {
		t.Fatalf("lab-a's kernel took the exclusive lock back before it was cut off:\n%s", locks)
	}
	step(t, "lab-a's network link is down (QEMU set_link n0 off), its kernel owning no exclusive lock (rbd lock ls: none); the VM runs on and writes")

	before2 := len(b.pluginLog())
	mpB := b.mount(vol, "b1")
	fenced := fencedOf(b.pluginLog()[before2:])
	bl := blocklist(t)
	step(t, "lab-b (LOCK_BREAK=on) took %s over %.1fs after the cut, fencing %v", vol, time.Since(cutAt).Seconds(), fenced)
	if !slices.Contains(fenced, kclient) {
		t.Fatalf("lab-b did not fence lab-a's kernel client %s (fenced %v)", kclient, fenced)
	}
	for _, f := range fenced {
		if !slices.Contains(bl, f) {
			t.Fatalf("fenced client %s is not on the OSD blocklist %v", f, bl)
		}
	}
	step(t, "lab-a's kernel client %s is on the OSD blocklist (%d entries)", kclient, len(bl))
	b.sh("dd if=/dev/urandom of=" + mpB + "/w/from-b bs=64k count=4 2>/dev/null && sync")
	atTakeover := b.sh("cd " + mpB + "/w && sha256sum *")
	if !containsAll(atTakeover, before) {
		t.Fatalf("lab-b does not read lab-a's files as lab-a wrote them:\nlab-a:\n%s\nlab-b:\n%s", before, atTakeover)
	}
	step(t, "lab-b reads lab-a's 4 files with their checksums and wrote its own; sha256 at the takeover:")
	for _, l := range strings.Split(strings.TrimSpace(atTakeover), "\n") {
		step(t, "  %s", l)
	}

	a.monitor("set_link n0 on")
	step(t, "lab-a's link is up again")
	// Give lab-a's kernel time to reconnect and ask for the lock (its OSD sessions come back
	// within seconds; the writer tries every second).
	var late, lateErr, klog string
	waitFor(t, 90*time.Second, "lab-a's kernel to be refused as blocklisted", func() bool {
		res := a.run(20*time.Second, "sh", "-c", "dmesg | grep -iE 'blocklist|-108' | tail -n 5")
		klog = strings.TrimSpace(res.Stdout)
		return klog != ""
	})
	time.Sleep(5 * time.Second)
	late = strings.TrimSpace(a.run(20*time.Second, "sh", "-c", "cat /tmp/late.ok 2>/dev/null | wc -l").Stdout)
	lateErr = strings.TrimSpace(a.run(20*time.Second, "sh", "-c", "tail -n 2 /tmp/late.err 2>/dev/null").Stdout)
	step(t, "lab-a's kernel: %s", strings.Join(strings.Split(klog, "\n"), " | "))
	step(t, "lab-a's writer since the cut: %s writes completed with fsync; last errors: %q", late, lateErr)

	b.unmount(vol, "b1")
	mpB = b.mount(vol, "b2")
	now := b.sh("cd " + mpB + "/w && sha256sum *")
	ls := b.sh("ls " + mpB + "/w")
	b.unmount(vol, "b2")
	if now != atTakeover {
		t.Fatalf("the volume changed after lab-a came back:\nat the takeover:\n%s\nnow:\n%s", atTakeover, now)
	}
	if strings.Contains(ls, "late-") {
		t.Fatalf("a file lab-a wrote while cut off reached the volume: %s", ls)
	}
	step(t, "lab-b mounted it again: the same %d files with the same checksums as at the takeover, no late-* file of lab-a's",
		len(strings.Split(strings.TrimSpace(now), "\n")))
	assertFsckClean(t, b, vol)
	t.Logf("CASE holder whose kernel let the lock go, cut off, taken over: its kernel client fenced, none of its writes landed, fsck clean: PASS")
}

// containsAll says whether every line of want is a line of got.
func containsAll(got, want string) bool {
	lines := strings.Split(got, "\n")
	for _, l := range strings.Split(strings.TrimSpace(want), "\n") {
		if !slices.Contains(lines, l) {
			return false
		}
	}
	return true
}
