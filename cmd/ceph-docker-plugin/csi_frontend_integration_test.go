//go:build integration

package main

import (
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
)

// The volume plugin and the CSI plugin on one pool (or Cinder project), as two processes: each
// records the front end that created a volume, and each refuses to show, mount, remove or take
// over by name the other's volumes, with a message naming the volume and the front end that
// made it; each still serves its own. Both backends, against the real services.
func TestFrontEndsOnOnePool(t *testing.T) {
	t.Parallel()
	l := labEnv(t)
	eachBackend(t, l, func(t *testing.T, b backend) {
		vp := newPlugin(t, l, uniq("fe-vol"), b.env...)
		vp.start()
		cp := newCSINode(t, l, "fe-csi", b.env...)
		cp.startCSI(cp.endpoint)

		// A cluster volume, made through CSI.
		cv := uniq("fecsi")
		cp.createVolume(t, cv, 1<<30, swarmCap)
		// A volume of the volume plugin.
		dv := uniq("fevol")
		vp.create(dv, map[string]string{"size": "1G"})
		t.Cleanup(func() {
			if err := vp.try("/VolumeDriver.Remove", map[string]string{"Name": dv}, nil); err != nil {
				t.Errorf("Remove %s at cleanup: %v", dv, err)
			}
		})

		refused := func(what, msg, name string, mentions ...string) {
			t.Helper()
			for _, m := range append([]string{"volume " + name + " belongs to the plugin's other front end"}, mentions...) {
				if !strings.Contains(msg, m) {
					t.Errorf("%s: %q does not mention %q", what, msg, m)
				}
			}
		}
		csiMade := "swarm cluster volumes (the CSI plugin, PROTOCOL=csi)"
		volMade := "Docker's volume protocol (the volume plugin, PROTOCOL=volume)"

		// The volume plugin refuses the cluster volume.
		refused("Get", vp.fail("/VolumeDriver.Get", map[string]string{"Name": cv}), cv, csiMade, "swarm manager")
		refused("Mount", vp.fail("/VolumeDriver.Mount", map[string]string{"Name": cv, "ID": "ctr1"}), cv, csiMade, "does not mount it")
		refused("Remove", vp.fail("/VolumeDriver.Remove", map[string]string{"Name": cv}), cv, csiMade, "does not remove it")
		refused("Create of the same name", vp.fail("/VolumeDriver.Create", map[string]any{"Name": cv}), cv, csiMade)
		vp.assertClean()

		// The CSI plugin refuses the volume plugin's volume.
		_, err := cp.ctrl.CreateVolume(cctx(t), &csi.CreateVolumeRequest{Name: dv, VolumeCapabilities: []*csi.VolumeCapability{swarmCap},
			CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 30}})
		wantStatus(t, "CreateVolume of the volume plugin's name", err, codes.AlreadyExists, volMade)
		wantStatus(t, "NodeStage of the volume plugin's volume", cp.stage(t, dv), codes.FailedPrecondition, volMade)
		_, err = cp.ctrl.DeleteVolume(cctx(t), &csi.DeleteVolumeRequest{VolumeId: dv})
		wantStatus(t, "DeleteVolume of the volume plugin's volume", err, codes.FailedPrecondition, volMade)
		cp.assertClean()

		// Each serves its own: the cluster volume stages and publishes, the other mounts.
		must(t, "stage the cluster volume", cp.stage(t, cv))
		must(t, "publish the cluster volume", cp.publish(t, cv))
		_, err = cp.node.NodeUnpublishVolume(cctx(t), &csi.NodeUnpublishVolumeRequest{VolumeId: cv, TargetPath: cp.target()})
		must(t, "unpublish", err)
		_, err = cp.node.NodeUnstageVolume(cctx(t), &csi.NodeUnstageVolumeRequest{VolumeId: cv, StagingTargetPath: cp.staging()})
		must(t, "unstage", err)
		vp.mount(dv, "ctr2")
		vp.unmount(dv, "ctr2")
		b.assertReleased(vp, dv)
		cp.assertClean()
		vp.assertClean()
	})
}
