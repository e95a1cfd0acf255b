//go:build e2e

package plugin

import (
	"strings"
	"testing"
)

// A non-root image writes to a fresh volume created with -o uid=999 -o gid=999: the volume's
// root belongs to 999:999 and is empty (no lost+found, which images like postgres refuse); a new
// container (the volume mounted again) reads the data back, owned by 999.
func TestVolumeRootOwnedByNonRootUser(t *testing.T) {
	name := uniq("root")
	volume(t, name, "size=256M", "uid=999", "gid=999")
	if st := inspectStatus(t, name); st["root"] != "uid=999 gid=999" {
		t.Errorf("inspect status root = %v, want uid=999 gid=999", st["root"])
	}
	out := must(t, "run", "--rm", "--network", "none", "--user", "999:999", "-v", name+":/data", "busybox", "sh", "-c",
		`set -e; echo "entries=$(ls -A /data | wc -l)"; echo "root=$(stat -c %u:%g:%a /data)"; `+
			`dd if=/dev/urandom of=/data/blob bs=64k count=16 2>/dev/null; md5sum /data/blob > /data/blob.md5; sync; echo "whoami=$(id -u)"`)
	for _, want := range []string{"entries=0", "root=999:999:755", "whoami=999"} {
		if !strings.Contains(out, want) {
			t.Fatalf("first container as uid 999: %q lacks %q", out, want)
		}
	}
	out = must(t, "run", "--rm", "--network", "none", "--user", "999:999", "-v", name+":/data", "busybox", "sh", "-c",
		`md5sum -c /data/blob.md5 && stat -c owner=%u:%g /data/blob && touch /data/again && ls -A /data`)
	for _, want := range []string{"/data/blob: OK", "owner=999:999", "again"} {
		if !strings.Contains(out, want) {
			t.Fatalf("second container as uid 999: %q lacks %q", out, want)
		}
	}
	if strings.Contains(out, "lost+found") {
		t.Errorf("lost+found came back: %q", out)
	}
}

// Hostile root options are refused by docker volume create with the plugin's message.
func TestVolumeRootOptionsRefused(t *testing.T) {
	for opt, want := range map[string]string{
		"uid=-1":     "uid",
		"mode=4755":  "setuid",
		"gid=root":   "numeric",
		"uid=1e9999": "uid",
	} {
		name := uniq("badroot")
		record(name)
		out := mustFail(t, "volume", "create", "--driver", pluginName(), "-o", opt, name)
		if !strings.Contains(out, want) {
			t.Errorf("volume create -o %s: %q lacks %q", opt, out, want)
		}
	}
}
