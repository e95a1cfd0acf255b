//go:build integration

package volfs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// A new filesystem reports made; its root takes the owner and mode and loses lost+found; its
// sizes read the same mounted and unmounted; after the device grows (the loop's backing file
// extended, LOOP_SET_CAPACITY) Grow takes the mounted filesystem to the device's size while a
// file stays open for writing on it.
func TestRootAndGrowOnRealFilesystems(t *testing.T) {
	const mib = 1 << 20
	for _, fstype := range []string{"ext4", "xfs"} {
		t.Run(fstype, func(t *testing.T) {
			ctx := testCtx(t)
			var file string
			dev := loopDevice(t, 320*mib, func(f *os.File) { file = f.Name() })
			fs := FS{}
			got, made, err := fs.FormatIfBlank(ctx, dev, fstype, nil, false)
			if err != nil || got != fstype || !made {
				t.Fatalf("FormatIfBlank of a blank device: %q, made=%v, %v", got, made, err)
			}
			if got, made, err = fs.FormatIfBlank(ctx, dev, fstype, nil, false); err != nil || got != fstype || made {
				t.Fatalf("FormatIfBlank of a formatted device: %q, made=%v, %v", got, made, err)
			}
			before, err := fs.Sizes(ctx, dev, "", fstype)
			if err != nil || before.Device != 320*mib || before.FS > before.Device || before.FS < before.Device-growSlackTest {
				t.Fatalf("sizes unmounted: %+v, %v", before, err)
			}

			mnt := filepath.Join(t.TempDir(), "m")
			if err := fs.Mount(ctx, dev, mnt, fstype, driver.ForcedMountFlags); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = fs.Unmount(testCtx(t), mnt) })
			spec := driver.RootOptions{UID: "999", GID: "998", Mode: "0750", LostFound: "remove"}.Spec()
			if err := fs.SetRoot(ctx, mnt, spec); err != nil {
				t.Fatal(err)
			}
			info, err := fs.RootOf(ctx, mnt)
			if err != nil || info != (driver.RootInfo{UID: 999, GID: 998, Mode: 0o750}) {
				t.Fatalf("root after SetRoot: %+v, %v", info, err)
			}
			entries, err := os.ReadDir(mnt)
			if err != nil || len(entries) != 0 {
				t.Fatalf("root entries after SetRoot: %v, %v (want none: lost+found removed)", entries, err)
			}
			mounted, err := fs.Sizes(ctx, dev, mnt, fstype)
			if err != nil || mounted != before {
				t.Fatalf("sizes mounted %+v, unmounted %+v, %v", mounted, before, err)
			}

			w, err := os.Create(filepath.Join(mnt, "data"))
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if _, err := w.Write(make([]byte, mib)); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(file, 640*mib); err != nil {
				t.Fatal(err)
			}
			lf, err := os.Open(dev)
			if err != nil {
				t.Fatal(err)
			}
			err = unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_SET_CAPACITY, 0)
			lf.Close()
			if err != nil {
				t.Fatal(err)
			}
			grown, err := fs.Sizes(ctx, dev, mnt, fstype)
			if err != nil || grown.Device != 640*mib || grown.FS != before.FS {
				t.Fatalf("sizes after the device grew: %+v, %v", grown, err)
			}
			if why := fs.OnlineGrowError(fstype); why != nil {
				// ext4 without CAP_SYS_RESOURCE (this lab's root lacks it): the kernel refuses an
				// online resize, and the filesystem grows offline instead.
				if fstype != "ext4" || !strings.Contains(why.Error(), "CAP_SYS_RESOURCE") {
					t.Fatalf("OnlineGrowError(%s) = %v", fstype, why)
				}
				if err := fs.Grow(ctx, dev, mnt, fstype); err == nil || !strings.Contains(err.Error(), "Permission denied") {
					t.Fatalf("online resize2fs without CAP_SYS_RESOURCE: %v", err)
				}
				w.Close()
				if err := fs.Unmount(ctx, mnt); err != nil {
					t.Fatal(err)
				}
				if err := fs.Grow(ctx, dev, "", fstype); err != nil {
					t.Fatal(err)
				}
				if err := fs.Mount(ctx, dev, mnt, fstype, driver.ForcedMountFlags); err != nil {
					t.Fatal(err)
				}
				if w, err = os.OpenFile(filepath.Join(mnt, "data"), os.O_WRONLY|os.O_APPEND, 0); err != nil {
					t.Fatal(err)
				}
				defer w.Close()
				if entries, err := os.ReadDir(mnt); err != nil || len(entries) != 1 {
					t.Fatalf("root entries after an offline grow: %v, %v (want only data: no lost+found made again)", entries, err)
				}
			} else if err := fs.Grow(ctx, dev, mnt, fstype); err != nil {
				t.Fatal(err)
			}
			after, err := fs.Sizes(ctx, dev, mnt, fstype)
			if err != nil || after.FS > after.Device || after.FS < after.Device-growSlackTest {
				t.Fatalf("sizes after Grow: %+v, %v", after, err)
			}
			var st unix.Statfs_t
			if err := unix.Statfs(mnt, &st); err != nil || uint64(st.Blocks)*uint64(st.Bsize) < 500*mib {
				t.Fatalf("statfs after Grow: %d blocks of %d, %v", st.Blocks, st.Bsize, err)
			}
			if _, err := w.Write(make([]byte, mib)); err != nil || w.Sync() != nil {
				t.Fatalf("writing on after the grow: %v", err)
			}
			t.Logf("%s: %d MiB -> %d MiB (device %d MiB)", fstype, before.FS/mib, after.FS/mib, after.Device/mib)
		})
	}
}

// growSlackTest is how much of a device a filesystem may leave unused at its end (a partial
// block group or allocation group).
const growSlackTest = 1 << 20
