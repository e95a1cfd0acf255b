package driver

import (
	"context"
	"errors"
	"testing"
	"time"
)

// What the CSI node refuses, and what it accepts as already done: each refusal names the volume
// and what to do, and changes nothing.
func TestNodeRefusals(t *testing.T) {
	e, n := stagedNode(t)

	assertErr(t, n.Stage(bg, "v", StageRequest{StagingPath: "/csi/staging/elsewhere"}), ErrInUse,
		"volume v is staged on this node at "+stg, "unstage it there first")
	assertErr(t, n.Stage(bg, "v", StageRequest{StagingPath: stg, ReadOnly: true}), ErrExists,
		"another access mode", "read-only false")
	m := e.rec.mark()
	if err := n.Stage(bg, "v", StageRequest{StagingPath: stg + "/"}); err != nil {
		t.Errorf("Stage again at the same (cleaned) path: %v", err)
	}
	assertOps(t, "Stage again", e.rec.ops(m))
	assertErr(t, n.Stage(bg, "bad/name", StageRequest{StagingPath: stg}), ErrInvalid)

	assertErr(t, n.Publish(bg, "v", PublishRequest{StagingPath: "/csi/staging/other", Target: tgt1}), ErrNotStaged,
		"volume v is not staged at /csi/staging/other", "stage it first")
	assertErr(t, n.Publish(bg, "w", PublishRequest{StagingPath: stg, Target: tgt1}), ErrNotStaged, "volume w")
	if err := n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1}); err != nil {
		t.Fatal(err)
	}
	if err := n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1}); err != nil {
		t.Errorf("Publish again at the same target: %v", err)
	}
	assertErr(t, n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1, ReadOnly: true}), ErrExists,
		"published at "+tgt1+" already with read-only false", "unpublish it first")

	assertErr(t, n.Unstage(bg, "v", stg), ErrInUse, "still published on this node at ["+tgt1+"]", "unpublish it first")
	if err := n.Unstage(bg, "v", "/csi/staging/elsewhere"); err != nil {
		t.Errorf("Unstage of a path the volume is not staged at: %v", err)
	}
	if err := n.Unpublish(bg, "v", tgt2); err != nil {
		t.Errorf("Unpublish of a target the volume is not published at: %v", err)
	}
	if err := n.Unpublish(bg, "w", tgt1); err != nil {
		t.Errorf("Unpublish of a volume not staged here: %v", err)
	}
	if st, _ := e.stage("v"); st.Op != "" || len(st.Targets) != 1 || e.mounter.device(tgt1) == "" {
		t.Errorf("after the refusals: %+v", st)
	}
	e.assertUp("v", "csi:"+stg)
}

// A publish whose bind fails is undone (the target unmounted, the record as before); when the
// undo fails too, the record keeps the publish in flight for the next call to finish.
func TestNodePublishUndone(t *testing.T) {
	e, n := stagedNode(t)
	e.mounter.failNext("Bind", errors.New("bind: boom"))
	assertErr(t, n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1}), nil, "publish volume v", "boom")
	if st, _ := e.stage("v"); st.Op != "" || len(st.Targets) != 0 {
		t.Errorf("record after an undone publish: %+v", st)
	}

	e.mounter.failNext("Bind", errors.New("bind: boom"))
	e.mounter.failNext("Unmount", errors.New("unmount: stuck"))
	err := n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1})
	assertErr(t, err, nil, "publish volume v", "boom", "undoing it also failed", "stuck")
	if st, _ := e.stage("v"); st.Op != OpPublish || st.OpPath != tgt1 {
		t.Errorf("record after a publish whose undo failed: %+v, want the publish in flight", st)
	}
	// The next call finishes the undo, then publishes.
	if err := n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1}); err != nil {
		t.Fatalf("Publish after a failed undo: %v", err)
	}
	if st, _ := e.stage("v"); st.Op != "" || len(st.Targets) != 1 {
		t.Errorf("record after the repair: %+v", st)
	}
}

// A released stage (after its last unpublish) holds nothing: a stage at another path replaces it.
func TestNodeReleasedStageReplaced(t *testing.T) {
	e, n := stagedNode(t)
	for _, err := range []error{
		n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1}),
		n.Unpublish(bg, "v", tgt1), // the last target: released
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	const other = "/csi/staging/other"
	if err := n.Stage(bg, "v", StageRequest{StagingPath: other}); err != nil {
		t.Fatalf("Stage elsewhere after the release: %v", err)
	}
	if st, _ := e.stage("v"); st.StagingPath != other || st.Released {
		t.Errorf("record: %+v", st)
	}
	e.assertUp("v", "csi:"+other)
}

// Node calls wait for the node's reconcile, up to their deadline.
func TestNodeWaitsForItsReconcile(t *testing.T) {
	e := newTestDriver(t)
	n := NewNode(e.d, fakeBinder{e.mounter}, e.files)
	ctx, cancel := context.WithTimeout(bg, 20*time.Millisecond)
	defer cancel()
	assertErr(t, n.Stage(ctx, "v", StageRequest{StagingPath: stg}), ErrTimeout, "volume v", "still reconciling")
}

// stagedNode is a node on fakes with volume v staged at stg.
func stagedNode(t *testing.T) (*testEnv, *Node) {
	t.Helper()
	e := newTestDriver(t)
	n := newTestNode(t, e)
	e.prov.add("v", 1<<30, "ext4")
	if err := n.Stage(bg, "v", StageRequest{StagingPath: stg}); err != nil {
		t.Fatal(err)
	}
	return e, n
}
