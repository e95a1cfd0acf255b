package fuse

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// loopDev is an attached loop device.
type loopDev struct {
	N       int
	Backing string
}

// attachLoop attaches file to a free loop device (read-only if ro) with the loop ioctls, and
// records tag as the device's file name (it identifies the mapping even after the backing file's
// path is gone).
func attachLoop(devRoot, file, tag string, ro bool) (string, error) {
	ctl, err := os.OpenFile(filepath.Join(devRoot, "loop-control"), os.O_RDWR, 0)
	if err != nil {
		return "", fmt.Errorf("open loop-control (is the loop driver available?): %w", err)
	}
	defer ctl.Close()
	flag := os.O_RDWR
	if ro {
		flag = os.O_RDONLY
	}
	backing, err := os.OpenFile(file, flag, 0)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", file, err)
	}
	defer backing.Close()
	for attempt := 0; attempt < 16; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", fmt.Errorf("find a free loop device: %w", err)
		}
		path := filepath.Join(devRoot, "loop"+strconv.Itoa(n))
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			// No devtmpfs/udev to make the node (some containers): make it ourselves.
			if err := unix.Mknod(path, unix.S_IFBLK|0o660, int(unix.Mkdev(7, uint32(n)))); err != nil && !errors.Is(err, os.ErrExist) {
				return "", fmt.Errorf("create %s: %w", path, err)
			}
		}
		lf, err := os.OpenFile(path, flag, 0)
		if err != nil {
			return "", fmt.Errorf("open %s: %w", path, err)
		}
		err = unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_SET_FD, int(backing.Fd()))
		if errors.Is(err, unix.EBUSY) {
			lf.Close() // another process took it between GET_FREE and SET_FD
			continue
		}
		if err != nil {
			lf.Close()
			return "", fmt.Errorf("attach %s to %s: %w", file, path, err)
		}
		info := unix.LoopInfo64{}
		copy(info.File_name[:len(info.File_name)-1], tag)
		if ro {
			info.Flags = unix.LO_FLAGS_READ_ONLY
		}
		if err := unix.IoctlLoopSetStatus64(int(lf.Fd()), &info); err != nil {
			_ = unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_CLR_FD, 0)
			lf.Close()
			return "", fmt.Errorf("configure %s: %w", path, err)
		}
		lf.Close()
		return path, nil
	}
	return "", errors.New("no free loop device after 16 attempts")
}

// detachLoop detaches a loop device that nobody has open. It opens the device exclusively first,
// so a device that is mounted (or open elsewhere) is refused with EBUSY instead of being
// detached lazily under its user.
func detachLoop(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_EXCL, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
	if errors.Is(err, unix.ENXIO) { // not attached any more
		return nil
	}
	return err
}

// listLoops returns the attached loop devices from sysfs.
func listLoops(sysfsRoot string) ([]loopDev, error) {
	matches, err := filepath.Glob(filepath.Join(sysfsRoot, "block", "loop*", "loop", "backing_file"))
	if err != nil {
		return nil, err
	}
	var out []loopDev
	for _, m := range matches {
		name := filepath.Base(filepath.Dir(filepath.Dir(m)))
		n, err := strconv.Atoi(strings.TrimPrefix(name, "loop"))
		if err != nil {
			continue
		}
		b, err := os.ReadFile(m)
		if err != nil {
			continue // detached meanwhile
		}
		out = append(out, loopDev{N: n, Backing: strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")})
	}
	return out, nil
}

// loopStatus reads a loop device's recorded file name (our tag) and its backing file's device
// and inode.
func loopStatus(dev string) (tag string, device, inode uint64, err error) {
	f, err := os.Open(dev)
	if err != nil {
		return "", 0, 0, err
	}
	defer f.Close()
	info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
	if err != nil {
		return "", 0, 0, err
	}
	name := info.File_name[:]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	return string(name), info.Device, info.Inode, nil
}

func loopReadOnly(sysfsRoot string, n int) bool {
	b, err := os.ReadFile(filepath.Join(sysfsRoot, "block", "loop"+strconv.Itoa(n), "ro"))
	return err == nil && strings.TrimSpace(string(b)) == "1"
}
