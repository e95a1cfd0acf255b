//go:build e2e

package plugin

import (
	"strings"
	"testing"
	"time"
)

// Through the docker CLI: a read-only copy (-o from-volume -o access=readonly) of a volume that a
// container keeps writing is made while it writes; two containers read the copy at once and see
// the source's data as it was fsynced before the copy; their writes fail (the mapping and the
// mount are read-only); `docker volume inspect` shows the copy's access and source.
func TestReadOnlyCopyOfAVolumeInUse(t *testing.T) {
	src, cp := uniq("cpsrc"), uniq("cpro")
	volume(t, src, "size=256M")
	run(t, src, "dd if=/dev/urandom of=/data/blob bs=64k count=16 2>/dev/null; md5sum /data/blob > /data/blob.md5; sync")
	w := uniq("writer")
	must(t, "run", "-d", "--name", w, "--network", "none", "-v", src+":/data", "busybox", "sh", "-c",
		"i=0; while :; do i=$((i+1)); echo $i >> /data/log; sync; sleep 0.1; done")
	t.Cleanup(func() { _, _ = docker(t, time.Minute, "rm", "-f", w) })
	time.Sleep(2 * time.Second) // the writer is under way

	volume(t, cp, "from-volume="+src, "access=readonly")
	st := inspectStatus(t, cp)
	if st["access"] != "readonly" || st["from-volume"] != src {
		t.Errorf("inspect of the copy: access %v, from-volume %v; want readonly, %s", st["access"], st["from-volume"], src)
	}
	r1, r2 := uniq("r1"), uniq("r2")
	for _, c := range []string{r1, r2} {
		must(t, "run", "-d", "--name", c, "--network", "none", "-v", cp+":/data", "busybox", "sleep", "600")
		t.Cleanup(func() { _, _ = docker(t, time.Minute, "rm", "-f", c) })
	}
	for _, c := range []string{r1, r2} {
		if out := must(t, "exec", c, "sh", "-c", "cd /data && md5sum -c blob.md5 && test -s log && echo log-ok"); !strings.Contains(out, "blob: OK") || !strings.Contains(out, "log-ok") {
			t.Errorf("%s reads the copy: %q", c, out)
		}
		out, err := docker(t, time.Minute, "exec", c, "sh", "-c", "echo x > /data/new")
		if err == nil || !strings.Contains(out, "Read-only file system") {
			t.Errorf("%s wrote to the read-only copy: %q, %v", c, out, err)
		}
	}
	if st := inspectStatus(t, cp); st["mapped"] != "read-only" {
		t.Errorf("copy in use: mapped %v, want read-only", st["mapped"])
	}
	// The source kept being written meanwhile: the copy did not stop it.
	before := must(t, "exec", w, "sh", "-c", "wc -l < /data/log")
	time.Sleep(time.Second)
	if after := must(t, "exec", w, "sh", "-c", "wc -l < /data/log"); after == before {
		t.Errorf("the source's writer stopped at %s lines", after)
	}
}

// Hostile or wrong access and from-volume values are refused by docker volume create with the
// plugin's message, and leave no volume behind.
func TestCopyAndAccessOptionsRefused(t *testing.T) {
	for opt, want := range map[string]string{
		"access=ro":                  "access",
		"access=readonly;reboot":     "access",
		"from-volume=../etc":         "from-volume",
		"from-volume=nosuch-volume0": "nosuch-volume0",
	} {
		name := uniq("badcopy")
		record(name)
		out := mustFail(t, "volume", "create", "--driver", pluginName(), "-o", opt, name)
		if !strings.Contains(out, want) {
			t.Errorf("volume create -o %s: %q lacks %q", opt, out, want)
		}
	}
}
