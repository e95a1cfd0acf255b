// Package volfs is the driver's Mounter on Linux: it probes a device with blkid, formats only a
// blank one (without discard and with lazy initialisation, so a large volume formats in
// seconds), and mounts with mount(2). Every call is bounded by its context.
package volfs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/driver/execx"
)

// FS is the Mounter.
type FS struct{}

var _ driver.Mounter = FS{}

// probe returns the filesystem type (TYPE) and partition table type (PTTYPE) blkid finds on dev.
// Both are empty for a blank device.
func probe(ctx context.Context, dev string) (fstype, pttype string, err error) {
	res, err := execx.Run(ctx, execx.Cmd{Name: "blkid", Args: []string{"-p", "-o", "export", dev}})
	var ee *execx.Error
	if errors.As(err, &ee) && ee.ExitCode == 2 { // nothing found: blank
		return "", "", nil
	}
	if err != nil {
		return "", "", fmt.Errorf("probe %s for a filesystem: %w", dev, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(res.Stdout))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "TYPE":
			fstype = v
		case "PTTYPE":
			pttype = v
		}
	}
	return fstype, pttype, nil
}

// mkfsArgs are the fast, safe defaults (no discard of the whole device, lazy initialisation)
// followed by extra, checked again against the driver's allowlist and passed one word per option
// and value. mke2fs keeps only the last -E it is given, so extra's extended options are appended
// to the defaults' (where a later one overrides an earlier one).
func mkfsArgs(fstype string, extra []string, dev string) (string, []string, error) {
	opts, err := driver.MkfsArgs(fstype, extra)
	if err != nil {
		return "", nil, err
	}
	var name string
	var args []string
	switch fstype {
	case "ext4":
		ext := "nodiscard,lazy_itable_init=1,lazy_journal_init=1"
		for _, o := range opts {
			if o.Letter == 'E' {
				ext += "," + o.Arg
			}
		}
		name, args = "mkfs.ext4", []string{"-q", "-E", ext}
	case "xfs":
		name, args = "mkfs.xfs", []string{"-q", "-K"}
	}
	for _, o := range opts {
		if fstype == "ext4" && o.Letter == 'E' {
			continue
		}
		args = append(args, o.Tokens()...)
	}
	return name, append(args, dev), nil
}

// zeroWindow is how much of each end of a device zeroed reads.
const zeroWindow = driver.SignatureWindow

// headWindow is how much of the start of a device is read even when the backend vouches that it
// was never written: the superblocks of ext4, XFS and btrfs and the partition tables (MBR, GPT)
// all begin within it, so a wrong word from the backend cannot make mkfs run over a filesystem.
const headWindow = 64 << 10

// zeroed reports whether the first and the last window bytes of dev (only the first, if !ends)
// read as zeros: with window zeroWindow, a device that has never been written, on which blkid
// cannot find anything. It reads past the page cache (O_DIRECT where the file allows it). It
// costs two reads instead of a blkid process, which matters on a first Mount (about 10 ms here,
// hundreds of ms on a small VM).
func zeroed(ctx context.Context, dev string, window uint64, ends bool) (bool, error) {
	var blank bool
	err := execx.Bounded(ctx, func() error {
		fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.EINVAL) { // a filesystem without O_DIRECT (tests on tmpfs)
			fd, err = unix.Open(dev, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		}
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(fd), dev)
		defer f.Close()
		end, err := f.Seek(0, io.SeekEnd) // the size, for block devices and files alike
		if err != nil {
			return err
		}
		size := uint64(end)
		// O_DIRECT wants a buffer aligned to the logical block size: 4 KiB covers every device.
		raw := make([]byte, window+4096)
		off := 4096 - int(uintptr(unsafe.Pointer(&raw[0]))&4095)
		buf := raw[off%4096 : off%4096+int(window)]
		at := []uint64{0}
		if ends {
			at = append(at, max(size, window)-window)
		}
		for _, at := range at {
			n, err := f.ReadAt(buf, int64(at))
			if err != nil && !(errors.Is(err, io.EOF) && n > 0) && !(errors.Is(err, io.EOF) && size == 0) {
				return err
			}
			for _, b := range buf[:n] {
				if b != 0 {
					blank = false
					return nil
				}
			}
		}
		blank = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("read %s to see whether it is blank: %w", dev, err)
	}
	return blank, nil
}

// FormatIfBlank implements driver.Mounter. A device whose ends read as zeros is formatted straight
// away; so is one the backend vouches for (unwritten) whose first 64 KiB read as zeros. Any other
// is asked to blkid, and is formatted only if blkid finds nothing.
func (FS) FormatIfBlank(ctx context.Context, dev, fstype string, mkfsOptions []string, unwritten bool) (string, bool, error) {
	var found, pt string
	var blank bool
	var err error
	if unwritten {
		blank, err = zeroed(ctx, dev, headWindow, false)
	} else {
		blank, err = zeroed(ctx, dev, zeroWindow, true)
	}
	if err != nil || !blank {
		if found, pt, err = probe(ctx, dev); err != nil {
			return "", false, err
		}
	}
	if pt != "" && found == "" {
		return "", false, fmt.Errorf("%s holds a %s partition table: refusing to format or mount it (the volume was partitioned by hand)", dev, pt)
	}
	if found != "" {
		return found, false, nil // never reformat
	}
	name, args, err := mkfsArgs(fstype, mkfsOptions, dev)
	if err != nil {
		return "", false, err
	}
	// In an empty directory of its own: no relative name can reach a file of the host's.
	dir, err := os.MkdirTemp("", "cdp-mkfs-")
	if err != nil {
		return "", false, fmt.Errorf("format %s as %s: make an empty working directory: %w", dev, fstype, err)
	}
	defer os.RemoveAll(dir)
	if _, err := execx.Run(ctx, execx.Cmd{Name: name, Args: args, Dir: dir}); err != nil {
		return "", false, fmt.Errorf("format %s as %s: %w", dev, fstype, err)
	}
	return fstype, true, nil
}

// Probe implements driver.Mounter: blkid's word on dev, read only. A partition table without a
// filesystem is refused, as FormatIfBlank refuses it.
func (FS) Probe(ctx context.Context, dev string) (string, error) {
	found, pt, err := probe(ctx, dev)
	if err == nil && pt != "" && found == "" {
		err = fmt.Errorf("%s holds a %s partition table: refusing to mount it (the volume was partitioned by hand)", dev, pt)
	}
	return found, err
}

// mountFlags maps the flag-like mount options to MS_* bits; the rest go to the filesystem.
var mountFlags = map[string]uintptr{
	"ro": unix.MS_RDONLY, "rw": 0, "noatime": unix.MS_NOATIME, "nodiratime": unix.MS_NODIRATIME,
	"relatime": unix.MS_RELATIME, "strictatime": unix.MS_STRICTATIME, "nosuid": unix.MS_NOSUID,
	"nodev": unix.MS_NODEV, "noexec": unix.MS_NOEXEC, "sync": unix.MS_SYNCHRONOUS, "dirsync": unix.MS_DIRSYNC,
	"lazytime": unix.MS_LAZYTIME,
}

func splitMountOptions(opts string) (uintptr, string) {
	var flags uintptr
	var data []string
	for _, o := range strings.Split(opts, ",") {
		if o == "" {
			continue
		}
		if f, ok := mountFlags[o]; ok {
			flags |= f
			continue
		}
		data = append(data, o)
	}
	return flags, strings.Join(data, ",")
}

// Mount implements driver.Mounter.
func (f FS) Mount(ctx context.Context, dev, target, fstype, options string) error {
	cur, err := f.MountedDevice(target)
	if err != nil {
		return err
	}
	if cur == dev {
		return nil
	}
	if cur != "" {
		return fmt.Errorf("%w: %s already has %s mounted", driver.ErrInUse, target, cur)
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	flags, data := splitMountOptions(options)
	err = execx.Bounded(ctx, func() error { return unix.Mount(dev, target, fstype, flags, data) })
	if err != nil {
		return fmt.Errorf("mount %s (%s) on %s: %w", dev, fstype, target, err)
	}
	return nil
}

// Unmount implements driver.Mounter.
func (f FS) Unmount(ctx context.Context, target string) error {
	for {
		cur, err := f.MountedDevice(target)
		if err != nil {
			return err
		}
		if cur == "" {
			break
		}
		err = execx.Bounded(ctx, func() error { return unix.Unmount(target, 0) })
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("%w: %s is busy (a process still uses files in it)", driver.ErrInUse, target)
		}
		if err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmount %s: %w", target, err)
		}
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		// A directory with files in it is not a mount point we made: leave it.
		if !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) {
			return err
		}
	}
	return nil
}

// MountedDevice implements driver.Mounter: the source of the topmost mount on target.
func (FS) MountedDevice(target string) (string, error) {
	target = filepath.Clean(target)
	mounts, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(target))
	if err != nil {
		return "", fmt.Errorf("read the mount table: %w", err)
	}
	if len(mounts) == 0 {
		return "", nil
	}
	return mounts[len(mounts)-1].Source, nil
}
