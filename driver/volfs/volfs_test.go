package volfs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

func TestSplitMountOptions(t *testing.T) {
	flags, data := splitMountOptions("noatime,discard,nodev,data=ordered,ro")
	if flags != unix.MS_NOATIME|unix.MS_NODEV|unix.MS_RDONLY || data != "discard,data=ordered" {
		t.Fatalf("flags %#x data %q", flags, data)
	}
	if flags, data := splitMountOptions(""); flags != 0 || data != "" {
		t.Fatalf("empty: %#x %q", flags, data)
	}
}

func TestMkfsArgsAreFastAndSafe(t *testing.T) {
	name, args, err := mkfsArgs("ext4", []string{"-L", "data"}, "/dev/rbd0")
	if err != nil || name != "mkfs.ext4" ||
		!reflect.DeepEqual(args, []string{"-q", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1", "-L", "data", "/dev/rbd0"}) {
		t.Fatalf("ext4: %s %q %v", name, args, err)
	}
	name, args, err = mkfsArgs("xfs", nil, "/dev/rbd0")
	if err != nil || name != "mkfs.xfs" || !reflect.DeepEqual(args, []string{"-q", "-K", "/dev/rbd0"}) {
		t.Fatalf("xfs: %s %q %v", name, args, err)
	}
	if _, _, err := mkfsArgs("btrfs", nil, "/dev/x"); err == nil {
		t.Fatal("btrfs accepted")
	}
}

func TestMkfsArgsMergeExtendedOptionsAndSplitClusters(t *testing.T) {
	_, args, err := mkfsArgs("ext4", []string{"-qLdata", "-E", "stride=16,root_owner=1000:1000", "-m0"}, "/dev/rbd0")
	want := []string{"-q", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1,stride=16,root_owner=1000:1000",
		"-q", "-L", "data", "-m", "0", "/dev/rbd0"}
	if err != nil || !reflect.DeepEqual(args, want) {
		t.Fatalf("ext4: %q %v\nwant %q", args, err, want)
	}
	_, args, err = mkfsArgs("xfs", []string{"-m", "crc=1,reflink=1", "-dsu=64k,sw=4"}, "/dev/rbd0")
	want = []string{"-q", "-K", "-m", "crc=1,reflink=1", "-d", "su=64k,sw=4", "/dev/rbd0"}
	if err != nil || !reflect.DeepEqual(args, want) {
		t.Fatalf("xfs: %q %v\nwant %q", args, err, want)
	}
}

// mkfsArgs checks again what the driver checked: a hostile list never reaches mkfs.
func TestMkfsArgsRefuseWhatTheDriverRefuses(t *testing.T) {
	for _, c := range []struct {
		fstype string
		extra  []string
	}{
		{"ext4", []string{"-d", "etc/ceph"}},
		{"ext4", []string{"-qd", "etc"}},
		{"ext4", []string{"-E", "offset=0"}},
		{"xfs", []string{"-l", "logdev=/dev/sdb"}},
		{"xfs", []string{"-r", "rtdev=/dev/sdb"}},
		{"xfs", []string{"/dev/sdb"}},
	} {
		if _, args, err := mkfsArgs(c.fstype, c.extra, "/dev/rbd0"); !errors.Is(err, driver.ErrInvalid) {
			t.Errorf("%s %q: args %q, err %v; want refused", c.fstype, c.extra, args, err)
		}
	}
}

// mkfs runs in an empty directory of its own, removed afterwards: a stand-in mkfs.ext4 on PATH
// records its working directory and what it holds.
func TestFormatRunsMkfsInAnEmptyDirectory(t *testing.T) {
	bin := t.TempDir()
	out := filepath.Join(t.TempDir(), "seen")
	script := "#!/bin/sh\n{ pwd; ls -A; } > " + out + "\n"
	if err := os.WriteFile(filepath.Join(bin, "mkfs.ext4"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	dev := filepath.Join(t.TempDir(), "dev")
	if err := os.WriteFile(dev, make([]byte, 4<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if got, _, err := (FS{}).FormatIfBlank(ctx, dev, "ext4", []string{"-L", "x"}, false); err != nil || got != "ext4" {
		t.Fatalf("FormatIfBlank: %q, %v", got, err)
	}
	seen, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(seen)), "\n")
	cwd, _ := os.Getwd()
	if len(lines) != 1 || lines[0] == cwd || !strings.Contains(lines[0], "cdp-mkfs-") {
		t.Fatalf("mkfs ran in %q (test cwd %s), want an empty cdp-mkfs-* directory and nothing in it", lines, cwd)
	}
	if _, err := os.Stat(lines[0]); !os.IsNotExist(err) {
		t.Fatalf("mkfs's working directory %s is still there: %v", lines[0], err)
	}
}
