//go:build e2e

package plugin

import (
	"strings"
	"testing"
)

// A non-root image writes to a fresh volume created with -o uid=999 -o gid=999: the volume's
// root belongs to 999:999 (lost+found stays by default, so Docker's copy-up of an empty volume
// does not give the root the image directory's owner); a new container (the volume mounted again)
// reads the data back, owned by 999.
func TestVolumeRootOwnedByNonRootUser(t *testing.T) {
	name := uniq("root")
	volume(t, name, "size=256M", "uid=999", "gid=999")
	if st := inspectStatus(t, name); st["root"] != "uid=999 gid=999" {
		t.Errorf("inspect status root = %v, want uid=999 gid=999", st["root"])
	}
	out := must(t, "run", "--rm", "--network", "none", "--user", "999:999", "-v", name+":/data", "busybox", "sh", "-c",
		`set -e; echo "entries=$(ls -A /data)"; echo "root=$(stat -c %u:%g:%a /data)"; `+
			`dd if=/dev/urandom of=/data/blob bs=64k count=16 2>/dev/null; md5sum /data/blob > /data/blob.md5; sync; echo "whoami=$(id -u)"`)
	for _, want := range []string{"entries=lost+found", "root=999:999:755", "whoami=999"} {
		if !strings.Contains(out, want) {
			t.Fatalf("first container as uid 999: %q lacks %q", out, want)
		}
	}
	out = must(t, "run", "--rm", "--network", "none", "--user", "999:999", "-v", name+":/data", "busybox", "sh", "-c",
		`md5sum -c /data/blob.md5 && stat -c owner=%u:%g /data/blob /data && touch /data/again && ls -A /data`)
	for _, want := range []string{"/data/blob: OK", "owner=999:999\nowner=999:999", "again"} {
		if !strings.Contains(out, want) {
			t.Fatalf("second container as uid 999: %q lacks %q", out, want)
		}
	}
}

// With lost-found=remove the volume is empty, as images that refuse a non-empty data directory
// need; mounted with nocopy (Docker's copy-up would give the root the image directory's owner),
// its root is the plugin's 999:999 0700, and a container running as 999 initialises it.
func TestVolumeRootEmptyForInitdbLikeImages(t *testing.T) {
	name := uniq("rootempty")
	volume(t, name, "size=256M", "uid=999", "gid=999", "mode=0700", "lost-found=remove")
	out := must(t, "run", "--rm", "--network", "none", "--user", "999:999", "--mount", "type=volume,src="+name+",dst=/data,volume-nocopy",
		"busybox", "sh", "-c", `set -e; [ -z "$(ls -A /data)" ] && echo empty; stat -c root=%u:%g:%a /data; echo v1 > /data/PG_VERSION; sync`)
	for _, want := range []string{"empty", "root=999:999:700"} {
		if !strings.Contains(out, want) {
			t.Fatalf("container as uid 999: %q lacks %q", out, want)
		}
	}
	out = must(t, "run", "--rm", "--network", "none", "--user", "999:999", "-v", name+":/data", "busybox", "sh", "-c",
		`cat /data/PG_VERSION; ls -A /data`)
	if strings.TrimSpace(out) != "v1\nPG_VERSION" {
		t.Fatalf("second container: %q", out)
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
