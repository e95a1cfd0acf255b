package volfs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/driver/execx"
)

var _ driver.FSAdmin = FS{}

// SetRoot implements driver.FSAdmin: lost+found removed (when empty, as mkfs made it), then the
// owner, then the mode (after chown, which may clear setgid), then an fsync of the root so that
// the change is on disk before the volume is handed to a container.
func (FS) SetRoot(ctx context.Context, path string, spec driver.RootSpec) error {
	return execx.Bounded(ctx, func() error {
		if spec.RemoveLostFound {
			err := os.Remove(filepath.Join(path, "lost+found"))
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove lost+found: %w", err)
			}
		}
		if spec.UID >= 0 || spec.GID >= 0 {
			if err := unix.Lchown(path, int(spec.UID), int(spec.GID)); err != nil {
				return fmt.Errorf("chown %s to %d:%d: %w", path, spec.UID, spec.GID, err)
			}
		}
		if spec.Mode >= 0 {
			if err := unix.Chmod(path, uint32(spec.Mode)); err != nil {
				return fmt.Errorf("chmod %s to %04o: %w", path, spec.Mode, err)
			}
		}
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Fsync(fd)
	})
}

// RootOf implements driver.FSAdmin.
func (FS) RootOf(ctx context.Context, path string) (driver.RootInfo, error) {
	var info driver.RootInfo
	err := execx.Bounded(ctx, func() error {
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		info = driver.RootInfo{UID: st.Uid, GID: st.Gid, Mode: st.Mode & 0o7777}
		var lf unix.Stat_t
		info.LostFound = unix.Lstat(filepath.Join(path, "lost+found"), &lf) == nil
		return nil
	})
	return info, err
}

// Sizes implements driver.FSAdmin. The device's size is its end; the filesystem's is read from
// its superblock: ext4 from the device (through the page cache when mounted, where the kernel
// keeps its superblock, so an online resize shows at once; past it otherwise), xfs with the
// XFS_IOC_FSGEOMETRY ioctl when mounted (xfs caches its superblock privately) and from the
// device otherwise.
func (FS) Sizes(ctx context.Context, dev, path, fstype string) (driver.Sizes, error) {
	var s driver.Sizes
	err := execx.Bounded(ctx, func() error {
		var err error
		if s.Device, err = deviceSize(dev); err != nil {
			return err
		}
		if fstype == "xfs" && path != "" {
			s.FS, err = xfsGeometrySize(path)
			return err
		}
		s.FS, err = superblockSize(dev, fstype, path == "")
		return err
	})
	if err != nil {
		return driver.Sizes{}, fmt.Errorf("sizes of %s (%s): %w", dev, fstype, err)
	}
	return s, nil
}

func deviceSize(dev string) (uint64, error) {
	f, err := os.Open(dev)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	return uint64(end), nil
}

// superblockSize reads the filesystem's size from its primary superblock on dev; direct reads
// past the page cache.
func superblockSize(dev, fstype string, direct bool) (uint64, error) {
	flags := unix.O_RDONLY | unix.O_CLOEXEC
	if direct {
		flags |= unix.O_DIRECT
	}
	fd, err := unix.Open(dev, flags, 0)
	if errors.Is(err, unix.EINVAL) && direct { // a file on a filesystem without O_DIRECT
		fd, err = unix.Open(dev, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return 0, err
	}
	f := os.NewFile(uintptr(fd), dev)
	defer f.Close()
	raw := make([]byte, 8192)
	off := (4096 - int(uintptr(unsafe.Pointer(&raw[0]))&4095)) % 4096
	buf := raw[off : off+4096]
	if _, err := io.ReadFull(f, buf); err != nil {
		return 0, fmt.Errorf("read the superblock: %w", err)
	}
	switch fstype {
	case "ext4":
		return ext4Size(buf[1024:2048])
	case "xfs":
		return xfsSize(buf[:512])
	}
	return 0, fmt.Errorf("%w: filesystem %q", driver.ErrInvalid, fstype)
}

// ext4Size reads s_blocks_count (lo, and hi with the 64bit feature) and s_log_block_size.
func ext4Size(sb []byte) (uint64, error) {
	le := binary.LittleEndian
	if le.Uint16(sb[0x38:]) != 0xEF53 {
		return 0, errors.New("no ext4 superblock")
	}
	blocks := uint64(le.Uint32(sb[0x04:]))
	if le.Uint32(sb[0x60:])&0x80 != 0 { // INCOMPAT_64BIT
		blocks |= uint64(le.Uint32(sb[0x150:])) << 32
	}
	logBS := le.Uint32(sb[0x18:])
	if logBS > 6 {
		return 0, fmt.Errorf("ext4 superblock: block size 2^%d KiB is not valid", logBS)
	}
	return blocks * (1024 << logBS), nil
}

// xfsSize reads sb_blocksize and sb_dblocks (big-endian).
func xfsSize(sb []byte) (uint64, error) {
	be := binary.BigEndian
	if string(sb[:4]) != "XFSB" {
		return 0, errors.New("no xfs superblock")
	}
	bs := uint64(be.Uint32(sb[4:]))
	if bs < 512 || bs > 65536 {
		return 0, fmt.Errorf("xfs superblock: block size %d is not valid", bs)
	}
	return be.Uint64(sb[8:]) * bs, nil
}

// xfsGeomV1 is struct xfs_fsop_geom_v1 (linux/xfs_fs.h), the part XFS_IOC_FSGEOMETRY_V1 fills.
type xfsGeomV1 struct {
	Blocksize, Rtextsize, Agblocks, Agcount, Logblocks, Sectsize, Inodesize, Imaxpct uint32
	Datablocks, Rtblocks, Rtextents, Logstart                                        uint64
	UUID                                                                             [16]byte
	Sunit, Swidth                                                                    uint32
	Version, Flags, Logsectsize, Rtsectsize, Dirblocksize                            uint32
}

// xfsIocFSGeometryV1 is _IOR('X', 100, struct xfs_fsop_geom_v1).
var xfsIocFSGeometryV1 = uintptr(2<<30 | uint32(unsafe.Sizeof(xfsGeomV1{}))<<16 | 'X'<<8 | 100)

func xfsGeometrySize(path string) (uint64, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	var g xfsGeomV1
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), xfsIocFSGeometryV1, uintptr(unsafe.Pointer(&g))); errno != 0 {
		return 0, fmt.Errorf("XFS_IOC_FSGEOMETRY on %s: %w", path, errno)
	}
	return g.Datablocks * uint64(g.Blocksize), nil
}

// capSysResource is CAP_SYS_RESOURCE (linux/capability.h).
const capSysResource = 24

// OnlineGrowError implements driver.FSAdmin. ext4's online resize (EXT4_IOC_RESIZE_FS) needs
// CAP_SYS_RESOURCE; xfs_growfs needs only CAP_SYS_ADMIN, which mounting needs anyway.
func (FS) OnlineGrowError(fstype string) error {
	if fstype != "ext4" {
		return nil
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read this process's capabilities: %w", err)
	}
	if data[0].Effective&(1<<capSysResource) == 0 {
		return errors.New("the kernel grows a mounted ext4 only for a process with CAP_SYS_RESOURCE, which the plugin does not have here " +
			"(the host's dockerd lacks it in its bounding set, or the plugin's config.json does not ask for it)")
	}
	return nil
}

// Grow implements driver.FSAdmin: resize2fs on the mounted device (an online resize, done by the
// kernel) or xfs_growfs on the mount point, to the device's size. With path "" (not mounted) an
// ext4 is grown offline: resize2fs wants a checked filesystem, so e2fsck -f -n checks it first
// without changing anything (a repair would, for one, bring back a lost+found removed on
// purpose), and resize2fs -f then skips its own demand for a fresh e2fsck run.
func (FS) Grow(ctx context.Context, dev, path, fstype string) error {
	var c execx.Cmd
	switch {
	case fstype == "ext4" && path == "":
		if _, err := execx.Run(ctx, execx.Cmd{Name: "e2fsck", Args: []string{"-f", "-n", dev}}); err != nil {
			return fmt.Errorf("check %s before growing it offline (it is left as it is; run e2fsck -f on it by hand): %w", dev, err)
		}
		c = execx.Cmd{Name: "resize2fs", Args: []string{"-f", dev}}
	case fstype == "ext4":
		c = execx.Cmd{Name: "resize2fs", Args: []string{dev}}
	case fstype == "xfs" && path == "":
		return fmt.Errorf("%w: grow %s: xfs grows only while mounted", driver.ErrInvalid, dev)
	case fstype == "xfs":
		c = execx.Cmd{Name: "xfs_growfs", Args: []string{"-d", path}}
	default:
		return fmt.Errorf("%w: grow %s: filesystem %q", driver.ErrInvalid, dev, fstype)
	}
	// In an empty directory of its own, like mkfs.
	dir, err := os.MkdirTemp("", "cdp-grow-")
	if err != nil {
		return fmt.Errorf("grow %s: make an empty working directory: %w", dev, err)
	}
	defer os.RemoveAll(dir)
	c.Dir = dir
	if _, err := execx.Run(ctx, c); err != nil {
		return fmt.Errorf("grow the %s filesystem on %s: %w", fstype, dev, err)
	}
	return nil
}
