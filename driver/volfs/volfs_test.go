package volfs

import (
	"reflect"
	"testing"

	"golang.org/x/sys/unix"
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
