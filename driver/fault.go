package driver

// Op is the operation a State or StageState records as in flight: a crash or a failed undo
// leaves it set, and the next call or the reconcile finishes or undoes it.
type Op string

// The operations the core's State records.
const (
	OpMount   Op = "mount"
	OpUnmount Op = "unmount"
)

// The steps the CSI node's StageState records.
const (
	OpStage     Op = "stage"
	OpRestage   Op = "restage"
	OpRelease   Op = "release"
	OpUnstage   Op = "unstage"
	OpPublish   Op = "publish"
	OpUnpublish Op = "unpublish"
)

// FaultStep names a step boundary at which Config.Fault is called: "<operation>:<what is done>".
// The crash tests kill the plugin there (TEST_FAULT_KILL_AT) and check what the restart repairs.
type FaultStep string

// The step boundaries, in the order each operation passes them.
const (
	FaultCreateCreated    FaultStep = "create:created"
	FaultMountAttached    FaultStep = "mount:attached"
	FaultMountMapped      FaultStep = "mount:mapped"
	FaultMountFormatted   FaultStep = "mount:formatted"
	FaultMountMounted     FaultStep = "mount:mounted"
	FaultUnmountUnmounted FaultStep = "unmount:unmounted"
	FaultUnmountUnmapped  FaultStep = "unmount:unmapped"
	FaultUnmountDetached  FaultStep = "unmount:detached"
	FaultRemoveRemoved    FaultStep = "remove:removed"
	FaultStageMounted     FaultStep = "stage:mounted"
	FaultStageBound       FaultStep = "stage:bound"
	FaultPublishBound     FaultStep = "publish:bound"
	FaultReleaseReleased  FaultStep = "release:released"
	FaultUnstageUnbound   FaultStep = "unstage:unbound"
	FaultUnstageReleased  FaultStep = "unstage:released"
)

// FaultSteps lists every step boundary, for tests and for checking a TEST_FAULT_KILL_AT setting.
var FaultSteps = []FaultStep{
	FaultCreateCreated,
	FaultMountAttached, FaultMountMapped, FaultMountFormatted, FaultMountMounted,
	FaultUnmountUnmounted, FaultUnmountUnmapped, FaultUnmountDetached,
	FaultRemoveRemoved,
	FaultStageMounted, FaultStageBound, FaultPublishBound, FaultReleaseReleased,
	FaultUnstageUnbound, FaultUnstageReleased,
}

func (d *Driver) fault(step FaultStep) {
	if d.cfg.Fault != nil {
		d.cfg.Fault(step)
	}
}
