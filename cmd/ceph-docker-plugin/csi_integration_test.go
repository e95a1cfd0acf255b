//go:build integration

package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// csiNode is a plugin process serving CSI, standing for one swarm node, with its client.
type csiNode struct {
	*plugin
	endpoint string
	conn     *grpc.ClientConn
	ctrl     csi.ControllerClient
	node     csi.NodeClient
}

func newCSINode(t *testing.T, l lab, name string, extra ...string) *csiNode {
	p := newPlugin(t, l, uniq(name), append([]string{"PROTOCOL=csi"}, extra...)...)
	n := &csiNode{plugin: p, endpoint: "unix://" + filepath.Join(p.dir, "csi.sock")}
	p.Env = append(p.Env, "CSI_ENDPOINT="+n.endpoint)
	conn, err := grpc.NewClient(n.endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	n.conn, n.ctrl, n.node = conn, csi.NewControllerClient(conn), csi.NewNodeClient(conn)
	return n
}

func (n *csiNode) staging() string { return filepath.Join(n.mountRoot(), ".csi", "staged") }
func (n *csiNode) target() string  { return filepath.Join(n.mountRoot(), ".csi", "published") }

var swarmCap = &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
	AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}

func cctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (n *csiNode) stage(t *testing.T, vol string) error {
	_, err := n.node.NodeStageVolume(cctx(t), &csi.NodeStageVolumeRequest{VolumeId: vol, StagingTargetPath: n.staging(), VolumeCapability: swarmCap})
	return err
}

func (n *csiNode) publish(t *testing.T, vol string) error {
	_, err := n.node.NodePublishVolume(cctx(t), &csi.NodePublishVolumeRequest{VolumeId: vol, StagingTargetPath: n.staging(),
		TargetPath: n.target(), VolumeCapability: swarmCap})
	return err
}

// createVolume makes a volume of size bytes through the node's controller, deleted at cleanup.
func (n *csiNode) createVolume(t *testing.T, vol string, size int64, c *csi.VolumeCapability) *csi.Volume {
	t.Helper()
	r, err := n.ctrl.CreateVolume(cctx(t), &csi.CreateVolumeRequest{Name: vol, VolumeCapabilities: []*csi.VolumeCapability{c},
		CapacityRange: &csi.CapacityRange{RequiredBytes: size}})
	must(t, "CreateVolume "+vol, err)
	t.Cleanup(func() {
		if _, err := n.ctrl.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: vol}); err != nil {
			t.Errorf("DeleteVolume %s at cleanup: %v", vol, err)
		}
	})
	return r.Volume
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func wantStatus(t *testing.T, what string, err error, code codes.Code, contains string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), contains) {
		t.Fatalf("%s: %v; want %s mentioning %q", what, err, code, contains)
	}
}

// Two nodes as swarm drives them: a volume staged and published on one is refused on the other
// with FailedPrecondition naming the holder; unpublishing its last target releases it (swarm never
// unstages), the other node takes it and reads what the first wrote, and the first node's
// publish without a new stage (as swarm does) is then refused naming the second. Both backends.
func TestCSITwoNodes(t *testing.T) {
	t.Parallel()
	l := labEnv(t)
	eachBackend(t, l, func(t *testing.T, b backend) {
		a, c := newCSINode(t, l, "csi-a", b.env...), newCSINode(t, l, "csi-b", b.env...)
		a.startCSI(a.endpoint)
		c.startCSI(c.endpoint)
		vol := uniq("csi2")
		r, err := a.ctrl.CreateVolume(cctx(t), &csi.CreateVolumeRequest{Name: vol, VolumeCapabilities: []*csi.VolumeCapability{swarmCap},
			CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 30}, Parameters: map[string]string{"fstype": "ext4"}})
		must(t, "CreateVolume", err)
		if r.Volume.VolumeId != vol || r.Volume.CapacityBytes != 1<<30 {
			t.Fatalf("CreateVolume: %+v", r.Volume)
		}
		t.Cleanup(func() {
			if _, err := a.ctrl.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: vol}); err != nil {
				t.Errorf("DeleteVolume at cleanup: %v", err)
			}
		})

		must(t, "stage on a", a.stage(t, vol))
		must(t, "publish on a", a.publish(t, vol))
		data := randomData(t, 1<<20)
		writeFile(t, filepath.Join(a.target(), "data"), data)

		wantStatus(t, "stage on b while a holds it", c.stage(t, vol), codes.FailedPrecondition, a.name)
		_, err = a.ctrl.DeleteVolume(cctx(t), &csi.DeleteVolumeRequest{VolumeId: vol})
		wantStatus(t, "DeleteVolume while a holds it", err, codes.FailedPrecondition, vol)

		_, err = a.node.NodeUnpublishVolume(cctx(t), &csi.NodeUnpublishVolumeRequest{VolumeId: vol, TargetPath: a.target()})
		must(t, "unpublish on a (its last target: released)", err)
		if _, err := os.Stat(a.target()); !os.IsNotExist(err) {
			t.Errorf("a's target still exists after NodeUnpublish: %v", err)
		}
		if hs := a.host(); len(hs.maps)+len(hs.mounts) > 0 {
			t.Errorf("a still maps or mounts the volume after its last unpublish: %v %v", hs.maps, hs.mounts)
		}

		must(t, "stage on b", c.stage(t, vol))
		must(t, "publish on b", c.publish(t, vol))
		got, err := os.ReadFile(filepath.Join(c.target(), "data"))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("b reads what a wrote: %d bytes, %v", len(got), err)
		}
		wantStatus(t, "publish on a again (swarm does not stage again) while b holds it", a.publish(t, vol), codes.FailedPrecondition, c.name)

		_, err = c.node.NodeUnpublishVolume(cctx(t), &csi.NodeUnpublishVolumeRequest{VolumeId: vol, TargetPath: c.target()})
		must(t, "unpublish on b", err)
		_, err = c.node.NodeUnstageVolume(cctx(t), &csi.NodeUnstageVolumeRequest{VolumeId: vol, StagingTargetPath: c.staging()})
		must(t, "unstage on b", err)
		_, err = a.node.NodeUnstageVolume(cctx(t), &csi.NodeUnstageVolumeRequest{VolumeId: vol, StagingTargetPath: a.staging()})
		must(t, "unstage on a", err)
		a.assertClean()
		c.assertClean()
	})
}

// The plugin killed (SIGKILL) at each step boundary of a stage and a publish, then restarted:
// its reconcile undoes the step in flight, nothing is left mapped or mounted, and the volume
// stages again. BACKEND=rbd (the core's own crash tests cover both backends).
func TestCSICrashRepair(t *testing.T) {
	t.Parallel()
	l := labEnv(t)
	for _, step := range []driver.FaultStep{driver.FaultStageMounted, driver.FaultStageBound, driver.FaultPublishBound, driver.FaultReleaseReleased} {
		t.Run(strings.ReplaceAll(string(step), ":", "-"), func(t *testing.T) {
			t.Parallel() // each step has a node and a volume of its own
			n := newCSINode(t, l, "csi-crash")
			n.startCSI(n.endpoint)
			vol := uniq("csicrash")
			n.createVolume(t, vol, 64<<20, swarmCap)
			n.stop()
			n.Env = append(n.Env, "TEST_FAULT_KILL_AT="+string(step))
			n.startCSI(n.endpoint)
			err := n.stage(t, vol)
			if err == nil {
				err = n.publish(t, vol)
			}
			if err == nil && step == driver.FaultReleaseReleased {
				_, err = n.node.NodeUnpublishVolume(cctx(t), &csi.NodeUnpublishVolumeRequest{VolumeId: vol, TargetPath: n.target()})
			}
			if err == nil {
				t.Fatalf("no crash at %s", step)
			}
			if werr := n.waitExit(10 * time.Second); werr == nil {
				t.Fatalf("the plugin exited cleanly; want a SIGKILL at %s", step)
			}
			n.Env = n.Env[:len(n.Env)-1]
			n.startCSI(n.endpoint)
			switch step {
			case driver.FaultPublishBound:
				// The stage stays; the interrupted publish is undone.
				if isMounted(t, n.target()) {
					t.Errorf("the interrupted publish's target is still mounted")
				}
				must(t, "publish after the restart", n.publish(t, vol))
				_, err := n.node.NodeUnpublishVolume(cctx(t), &csi.NodeUnpublishVolumeRequest{VolumeId: vol, TargetPath: n.target()})
				must(t, "unpublish", err)
			case driver.FaultReleaseReleased:
				// Released (the record stays): the next publish stages it again.
				must(t, "publish after the restart", n.publish(t, vol))
				_, err := n.node.NodeUnpublishVolume(cctx(t), &csi.NodeUnpublishVolumeRequest{VolumeId: vol, TargetPath: n.target()})
				must(t, "unpublish", err)
			default:
				if isMounted(t, n.staging()) {
					t.Errorf("the interrupted stage's staging path is still mounted")
				}
				n.assertClean()
				must(t, "stage after the restart", n.stage(t, vol))
			}
			_, err = n.node.NodeUnstageVolume(cctx(t), &csi.NodeUnstageVolumeRequest{VolumeId: vol, StagingTargetPath: n.staging()})
			must(t, "unstage", err)
			n.assertClean()
		})
	}
}

var blockCap = &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
	AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}

// The block access type through the binary, both backends: NodeStage maps without formatting,
// NodePublish puts the device node at the target file; what is written there is read back after
// the last unpublish released the volume and a publish staged it again; a read-only publish is
// refused; nothing is left mapped or mounted.
func TestCSIBlock(t *testing.T) {
	t.Parallel()
	l := labEnv(t)
	eachBackend(t, l, func(t *testing.T, b backend) {
		n := newCSINode(t, l, "csi-blk", b.env...)
		n.startCSI(n.endpoint)
		vol := uniq("csiblk")
		n.createVolume(t, vol, 1<<30, blockCap)
		stage := func() error {
			_, err := n.node.NodeStageVolume(cctx(t), &csi.NodeStageVolumeRequest{VolumeId: vol, StagingTargetPath: n.staging(), VolumeCapability: blockCap})
			return err
		}
		publish := func(ro bool) error {
			_, err := n.node.NodePublishVolume(cctx(t), &csi.NodePublishVolumeRequest{VolumeId: vol, StagingTargetPath: n.staging(),
				TargetPath: n.target(), VolumeCapability: blockCap, Readonly: ro})
			return err
		}
		must(t, "stage block", stage())
		if hs := n.host(); len(hs.maps) != 1 || isMounted(t, filepath.Join(n.mountRoot(), vol)) || isMounted(t, n.staging()) {
			t.Errorf("after a block stage: maps %v, mounts %v; want one mapping, and neither the volume nor the staging path mounted", hs.maps, hs.mounts)
		}
		wantStatus(t, "read-only block publish", publish(true), codes.InvalidArgument, "read-only block")
		var err error
		must(t, "publish block", publish(false))
		fi, err := os.Stat(n.target())
		if err != nil || fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
			t.Fatalf("the target %s is %v, %v; want a block device node", n.target(), fi, err)
		}
		data := randomData(t, 1<<20)
		f, err := os.OpenFile(n.target(), os.O_WRONLY, 0)
		must(t, "open the published device", err)
		_, err = f.WriteAt(data, 4<<20)
		must(t, "write the device", errors.Join(err, f.Sync(), f.Close()))

		_, err = n.node.NodeUnpublishVolume(cctx(t), &csi.NodeUnpublishVolumeRequest{VolumeId: vol, TargetPath: n.target()})
		must(t, "unpublish (its last target: released)", err)
		n.assertClean()
		must(t, "publish again (staged again first)", publish(false))
		f, err = os.Open(n.target())
		must(t, "open the device again", err)
		got := make([]byte, len(data))
		_, err = f.ReadAt(got, 4<<20)
		f.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read back through the device: %v (equal %t)", err, bytes.Equal(got, data))
		}
		_, err = n.node.NodeUnpublishVolume(cctx(t), &csi.NodeUnpublishVolumeRequest{VolumeId: vol, TargetPath: n.target()})
		must(t, "unpublish", err)
		_, err = n.node.NodeUnstageVolume(cctx(t), &csi.NodeUnstageVolumeRequest{VolumeId: vol, StagingTargetPath: n.staging()})
		must(t, "unstage", err)
		n.assertClean()
	})
}
