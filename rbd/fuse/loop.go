package fuse

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// loopDev is an attached loop device.
type loopDev struct {
	N       int
	Backing string
}

// loopAlloc serialises this process's loop allocations: concurrent Maps all asked GET_FREE for
// the same device, one won each round, and with 32 at once some ran out of attempts (measured by
// make bench: "no free loop device after 16 attempts"). The retries remain for other processes
// on the host that allocate loops too.
var loopAlloc sync.Mutex

// attachLoop attaches file to a free loop device (read-only if ro) with the loop ioctls, and
// records tag as the device's file name (it identifies the mapping even after the backing file's
// path is gone).
//
// The backing file is opened before the allocation lock is taken: it is a file of a FUSE server
// (rbd-fuse), and an open of it waits as long as the server does, which must hold up only this
// Map, not every other image's.
func attachLoop(devRoot, file, tag string, ro bool) (string, error) {
	flag := os.O_RDWR
	if ro {
		flag = os.O_RDONLY
	}
	backing, err := os.OpenFile(file, flag, 0)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", file, err)
	}
	defer backing.Close()
	loopAlloc.Lock()
	defer loopAlloc.Unlock()
	ctl, err := os.OpenFile(filepath.Join(devRoot, "loop-control"), os.O_RDWR, 0)
	if err != nil {
		return "", fmt.Errorf("open loop-control (is the loop driver available?): %w", err)
	}
	defer ctl.Close()
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
		info := unix.LoopInfo64{}
		copy(info.File_name[:len(info.File_name)-1], tag)
		if ro {
			info.Flags = unix.LO_FLAGS_READ_ONLY
		}
		err = configureLoop(int(lf.Fd()), int(backing.Fd()), &info)
		if errors.Is(err, unix.EBUSY) {
			lf.Close() // another process took it between GET_FREE and the attach
			time.Sleep(time.Duration(attempt+1) * time.Millisecond)
			continue
		}
		if err != nil {
			lf.Close()
			return "", fmt.Errorf("attach %s to %s: %w", file, path, err)
		}
		lf.Close()
		return path, nil
	}
	return "", errors.New("no free loop device after 16 attempts")
}

// noLoopConfigure is set once the kernel refused LOOP_CONFIGURE (before Linux 5.8).
var noLoopConfigure atomic.Bool

// configureLoop attaches the backing file to the loop device and sets its status. LOOP_CONFIGURE
// does both in one ioctl; the older LOOP_SET_FD + LOOP_SET_STATUS64 pair costs a queue freeze
// (an RCU grace period) in SET_STATUS64: 12-30 ms of every first Mount here, as losetup, which
// uses LOOP_CONFIGURE, does not pay.
func configureLoop(loopFd, backingFd int, info *unix.LoopInfo64) error {
	if !noLoopConfigure.Load() {
		err := unix.IoctlLoopConfigure(loopFd, &unix.LoopConfig{Fd: uint32(backingFd), Info: *info})
		if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOTTY) {
			return err
		}
		// EINVAL is also what a kernel without LOOP_CONFIGURE answers for an unknown ioctl; the
		// pair below tells a real EINVAL apart.
		noLoopConfigure.Store(true)
	}
	if err := unix.IoctlSetInt(loopFd, unix.LOOP_SET_FD, backingFd); err != nil {
		return err
	}
	if err := unix.IoctlLoopSetStatus64(loopFd, info); err != nil {
		_ = unix.IoctlSetInt(loopFd, unix.LOOP_CLR_FD, 0)
		return err
	}
	return nil
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

// detachLoopLazy detaches a loop device that may still be open (a stale loop, whose rbd-fuse
// died, still mounted in a container's mount namespace that has not let go yet): the kernel
// marks a device open elsewhere autoclear and detaches it at its last close, as `losetup -d`
// does. Only for stale loops: their backing file is gone, so nothing reads through them.
func detachLoopLazy(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
	if errors.Is(err, unix.ENXIO) {
		return nil
	}
	return err
}

// listLoops returns the attached loop devices from sysfs: one directory read and one file read
// per loop device. (filepath.Glob of /sys/block/loop*/loop/backing_file read every loop device's
// directory twice: 3-5 ms with the 210 loop devices of the bench's machine, on every Map and Unmap.)
func listLoops(sysfsRoot string) ([]loopDev, error) {
	entries, err := os.ReadDir(filepath.Join(sysfsRoot, "block"))
	if err != nil {
		return nil, err
	}
	var out []loopDev
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), "loop")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(rest)
		if err != nil {
			continue
		}
		l, err := readLoop(sysfsRoot, n)
		if err != nil {
			continue // not attached (or detached meanwhile)
		}
		out = append(out, l)
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
