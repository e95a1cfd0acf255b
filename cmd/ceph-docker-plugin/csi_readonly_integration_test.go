//go:build integration

package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
)

func capOf(mode csi.VolumeCapability_AccessMode_Mode, block bool) *csi.VolumeCapability {
	c := &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode}}
	if block {
		c.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
	} else {
		c.AccessType = &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}}
	}
	return c
}

var (
	readersCap      = capOf(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, false)
	readersBlockCap = capOf(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, true)
)

// stageAs stages vol with the capability c, publishes it at the node's target (read-only if
// asked) and returns the first error.
func (n *csiNode) stageAs(t *testing.T, vol string, c *csi.VolumeCapability, ro bool) error {
	if _, err := n.node.NodeStageVolume(cctx(t), &csi.NodeStageVolumeRequest{VolumeId: vol, StagingTargetPath: n.staging(), VolumeCapability: c}); err != nil {
		return err
	}
	_, err := n.node.NodePublishVolume(cctx(t), &csi.NodePublishVolumeRequest{VolumeId: vol, StagingTargetPath: n.staging(),
		TargetPath: n.target(), VolumeCapability: c, Readonly: ro})
	return err
}

// release unpublishes and unstages vol.
func (n *csiNode) release(t *testing.T, vol string) {
	t.Helper()
	_, err := n.node.NodeUnpublishVolume(cctx(t), &csi.NodeUnpublishVolumeRequest{VolumeId: vol, TargetPath: n.target()})
	must(t, "unpublish "+vol, err)
	_, err = n.node.NodeUnstageVolume(cctx(t), &csi.NodeUnstageVolumeRequest{VolumeId: vol, StagingTargetPath: n.staging()})
	must(t, "unstage "+vol, err)
}

// mappedReadOnly says whether the host's one mapping (a loop device of the fuse mapper) is
// read-only, from sysfs.
func (n *csiNode) mappedReadOnly(t *testing.T) bool {
	t.Helper()
	hs := n.host()
	if len(hs.maps) != 1 {
		t.Fatalf("mappings %v; want one", hs.maps)
	}
	_, dev, _ := strings.Cut(hs.maps[0], "=")
	ro, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "ro"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ro)) == "1"
}

// MULTI_NODE_READER_ONLY through the binary, both backends: a volume written through a writer
// stage is staged read-only for many readers: mapped read-only, it reads what was written, and
// a write fails (EROFS) at the target; after a plugin restart it is mapped read-only again and
// still reads; with the block access type the device is mapped and published read-only, reads
// the filesystem's superblock and takes no write; a blank volume staged for readers is refused
// (FailedPrecondition) saying how to make one with data. Nothing is left mapped or mounted.
func TestCSIReadOnlyMany(t *testing.T) {
	l := labEnv(t)
	eachBackend(t, l, func(t *testing.T, b backend) {
		n := newCSINode(t, l, "csi-ro", b.env...)
		n.startCSI(n.endpoint)
		vol := uniq("csiro")
		n.createVolume(t, vol, 1<<30, swarmCap)
		must(t, "stage and publish for the writer", n.stageAs(t, vol, swarmCap, false))
		data := randomData(t, 1<<20)
		writeFile(t, filepath.Join(n.target(), "data"), data)
		n.release(t, vol)

		must(t, "stage and publish for readers", n.stageAs(t, vol, readersCap, true))
		if !n.mappedReadOnly(t) {
			t.Error("a MULTI_NODE_READER_ONLY stage is mapped read-write")
		}
		got, err := os.ReadFile(filepath.Join(n.target(), "data"))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("a reader reads %d bytes, %v; want what the writer wrote", len(got), err)
		}
		if err := os.WriteFile(filepath.Join(n.target(), "new"), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
			t.Errorf("a write at a reader's target: %v; want EROFS", err)
		}
		// A plugin restart (the fuse mapper's daemon dies with it): the reconcile maps the volume
		// again read-only, mounts it ro and binds the staging path and the target again.
		n.stop()
		n.startCSI(n.endpoint)
		if got, err := os.ReadFile(filepath.Join(n.target(), "data")); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("after a plugin restart the reader reads %d bytes, %v", len(got), err)
		}
		if !n.mappedReadOnly(t) {
			t.Error("after a plugin restart the reader's stage is mapped read-write")
		}
		wantStatus(t, "a writer's stage of a volume staged for readers", n.stageAs(t, vol, swarmCap, false), codes.AlreadyExists, "another access mode")
		n.release(t, vol)
		n.assertClean()

		must(t, "stage and publish the block device for readers", n.stageAs(t, vol, readersBlockCap, true))
		if !n.mappedReadOnly(t) {
			t.Error("a MULTI_NODE_READER_ONLY block stage is mapped read-write")
		}
		f, err := os.Open(n.target())
		must(t, "open the published device", err)
		magic := make([]byte, 2)
		_, err = f.ReadAt(magic, 1024+56) // ext4's superblock magic
		f.Close()
		if err != nil || binary.LittleEndian.Uint16(magic) != 0xEF53 {
			t.Errorf("the published device reads %x, %v; want ext4's magic", magic, err)
		}
		if w, err := os.OpenFile(n.target(), os.O_WRONLY, 0); err == nil {
			_, err = w.WriteAt([]byte("x"), 4<<20)
			if err = errors.Join(err, w.Sync(), w.Close()); err == nil {
				t.Error("a write through the read-only block publish succeeded")
			}
		}
		n.release(t, vol)
		n.assertClean()

		// Deleted before the next is made: the lab's Cinder is shared and thinly sized.
		_, err = n.ctrl.DeleteVolume(cctx(t), &csi.DeleteVolumeRequest{VolumeId: vol})
		must(t, "DeleteVolume "+vol, err)
		blank := uniq("csiroblank")
		n.createVolume(t, blank, 1<<30, readersCap)
		err = n.stageAs(t, blank, readersCap, false)
		wantStatus(t, "readers' stage of a blank volume", err, codes.FailedPrecondition, "no filesystem")
		wantStatus(t, "readers' stage of a blank volume", err, codes.FailedPrecondition, "from-snapshot")
		n.assertClean()
	})
}
