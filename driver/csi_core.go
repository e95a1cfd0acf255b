package driver

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cephdocker/ceph-docker-plugin/driver/undo"
)

// The CSI node service on the driver core. A stage is one use of the volume in the core (caller
// ID "csi:<staging path>"): the core claims, maps, formats a blank device and mounts it at
// MOUNT_ROOT/<name>, with its persisted state, per-volume lock, undo and reconcile, exactly as
// for a Docker Mount; the stage then bind-mounts that mount at the staging path, and each
// publish bind-mounts the staging path at its target. The node's own records (StageState) are
// persisted around each bind the way the core persists around each side effect.

// ErrNotStaged: a publish asks for a volume that is not staged at the given staging path.
var ErrNotStaged = errors.New("not staged")

// Binder bind-mounts a mounted directory onto another path, or a device node onto a file.
type Binder interface {
	// Bind mounts source on target (a directory, created if missing), read-only if asked.
	// Binding the same source there again succeeds.
	Bind(ctx context.Context, source, target string, readOnly bool) error
	// BindDevice mounts the device node dev on target (a file, created if missing), the bind
	// read-only if asked (which marks it: only a read-only mapping stops writes to the device).
	// Binding the same device there again succeeds; a target with something else mounted is
	// ErrInUse.
	BindDevice(ctx context.Context, dev, target string, readOnly bool) error
	// BoundDevice says whether target is a bind of the device node dev.
	BoundDevice(target, dev string) (bool, error)
}

// StageRequest is a NodeStage's request, validated by the CSI front end.
type StageRequest struct {
	StagingPath string
	// ReadOnly: the staging bind, and so every publish, is read-only (SINGLE_NODE_READER_ONLY,
	// MULTI_NODE_READER_ONLY). The writer modes (neither ReadOnly nor Shared) ask the core for a
	// writable volume: a readonly one is refused.
	ReadOnly bool
	// Shared: MULTI_NODE_READER_ONLY: the core's use is a shared read-only claim, mapped
	// read-only, that other nodes may hold at once but no writer. Implies ReadOnly.
	Shared bool
	Single bool // SINGLE_NODE_SINGLE_WRITER: one publish target at most
	// Block: the block access type: the volume is mapped without a filesystem and each publish
	// target is a bind of the device node; nothing is bound at the staging path. Read-only only
	// with Shared (a read-only mapping).
	Block bool
}

// stageMode is the access mode of a stage: a stage again in another mode is refused.
type stageMode struct{ readOnly, shared, single, block bool }

func (r StageRequest) mode() stageMode { return stageMode{r.ReadOnly, r.Shared, r.Single, r.Block} }
func (st StageState) mode() stageMode  { return stageMode{st.ReadOnly, st.Shared, st.Single, st.Block} }

func (m stageMode) String() string {
	return fmt.Sprintf("read-only %t, shared %t, single writer %t, block %t", m.readOnly, m.shared, m.single, m.block)
}

// use is what a stage asks of the core: the raw device for a block stage; a shared read-only
// claim for MULTI_NODE_READER_ONLY; a writable volume for the writer modes. A
// SINGLE_NODE_READER_ONLY stage takes the volume as it is (a readonly volume read-only, any
// other with its one-host read-write claim), and binds it read-only.
func (st StageState) use() Use {
	return Use{Raw: st.Block, ReadOnly: st.Shared, Writable: !st.ReadOnly}
}

// errReadOnlyBlock: a read-only bind of a device node does not stop writes to the device; only a
// read-only mapping does, which MULTI_NODE_READER_ONLY's shared claim has.
func errReadOnlyBlock(name string) error {
	return fmt.Errorf("%w: volume %s: a read-only block volume needs a read-only mapping, which only the access mode MULTI_NODE_READER_ONLY (--scope multi --sharing readonly) asks for: "+
		"a read-only bind of a device node does not stop writes to the device", ErrInvalid, name)
}

// PublishRequest is a NodePublish's request.
type PublishRequest struct {
	StagingPath string
	Target      string
	ReadOnly    bool
}

// Node implements the CSI node service's steps on a Driver. Safe for concurrent use; calls on
// one volume are serialized (and wait), other volumes proceed in parallel.
type Node struct {
	d     *Driver
	bind  Binder
	store StageStore
	locks volumeLocks
	ready chan struct{}
	log   *logrus.Entry
}

// NewNode returns the node service on d. Call Reconcile once, after d.Reconcile: calls wait for it.
func NewNode(d *Driver, b Binder, store StageStore) *Node {
	return &Node{d: d, bind: b, store: store, ready: make(chan struct{}), log: d.log.WithField("protocol", "csi")}
}

// NodeID is this node's identity for the container orchestrator: the host name the core
// records as the holder of what it claims.
func (n *Node) NodeID() string { return n.d.cfg.Node }

func stageID(path string) string { return "csi:" + path }

func (n *Node) begin(ctx context.Context, name string) (func(), error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	select {
	case <-n.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: volume %s: the plugin is still reconciling its volumes after a restart; try again", ErrTimeout, name)
	}
	return n.locks.lock(ctx, name)
}

// open locks the volume (begin) and reads its stage record (load). The caller defers unlock,
// which is a no-op when err is set.
func (n *Node) open(ctx context.Context, name string) (st StageState, ok bool, unlock func(), err error) {
	if unlock, err = n.begin(ctx, name); err != nil {
		return st, false, func() {}, err
	}
	if st, ok, err = n.load(ctx, name); err != nil {
		unlock()
		return st, ok, func() {}, err
	}
	return st, ok, unlock, nil
}

// load reads the volume's stage record and first finishes or undoes a step a crash or a failed
// undo left in flight.
func (n *Node) load(ctx context.Context, name string) (StageState, bool, error) {
	st, ok, err := n.store.LoadStage(name)
	if err != nil || !ok || st.Op == "" {
		return st, ok, err
	}
	op := st.Op
	if err := n.repair(ctx, &st); err != nil {
		return st, ok, fmt.Errorf("volume %s: finishing an interrupted %s first: %w", name, op, err)
	}
	return n.store.LoadStage(name)
}

// Stage makes the volume available at req.StagingPath on this node: claim, map, format if
// blank, mount (the core), then a bind mount at the staging path. Staging again at the same
// path succeeds (and repairs a lost bind).
func (n *Node) Stage(ctx context.Context, name string, req StageRequest) error {
	req.StagingPath = filepath.Clean(req.StagingPath)
	req.ReadOnly = req.ReadOnly || req.Shared
	if req.Block && req.ReadOnly && !req.Shared {
		return errReadOnlyBlock(name)
	}
	st, ok, unlock, err := n.open(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	log := n.log.WithFields(logrus.Fields{"volume": name, "staging": req.StagingPath})
	if ok && st.Released && (st.StagingPath != req.StagingPath || st.mode() != req.mode()) {
		// A released stage holds nothing: a stage elsewhere, or in another mode, replaces it.
		if err := n.store.DeleteStage(name); err != nil {
			return err
		}
		ok = false
	}
	if ok {
		if st.StagingPath != req.StagingPath {
			return fmt.Errorf("%w: volume %s is staged on this node at %s already; unstage it there first", ErrInUse, name, st.StagingPath)
		}
		if st.mode() != req.mode() {
			return fmt.Errorf("%w: volume %s is staged at %s with another access mode (%s); unstage it first",
				ErrExists, name, st.StagingPath, st.mode())
		}
		if st.Released {
			return n.restage(ctx, &st)
		}
		live, err := n.ensure(ctx, &st)
		if err != nil {
			return fmt.Errorf("stage volume %s: %w", name, err)
		}
		if live {
			log.Debug("already staged")
			return nil
		}
		// The core had released it (a reboot): stage it afresh.
	}
	st = StageState{Name: name, StagingPath: req.StagingPath, ID: stageID(req.StagingPath), ReadOnly: req.ReadOnly,
		Shared: req.Shared, Single: req.Single, Block: req.Block, Op: "stage", OpPath: req.StagingPath, Updated: time.Now()}
	if err := n.store.SaveStage(st); err != nil {
		return err
	}
	if err := n.up(ctx, &st); err != nil {
		// Undone: forget the record, unless the undo failed too (Op=stage stays for the repair).
		if st.Op == "" {
			err = errors.Join(err, n.store.DeleteStage(name))
		}
		return err
	}
	log.Info("volume staged")
	return nil
}

// up takes the stage's use in the core (claim, map, format if blank, mount) and binds the
// core's mount at the staging path, recording the stage done; on error it undoes both and
// clears st.Op, or leaves st.Op set (and recorded) when the undo failed too.
func (n *Node) up(ctx context.Context, st *StageState) (err error) {
	var tx undo.Stack
	defer func() {
		if err == nil {
			return
		}
		if uerr := tx.Rollback(n.d.withCleanup(ctx)); uerr != nil {
			// The record keeps its Op: the next call or the restart's reconcile undoes the rest.
			n.log.WithField("volume", st.Name).WithError(uerr).Error("undoing a failed stage")
			err = fmt.Errorf("%w; undoing it also failed (the plugin retries on the next call and at restart): %v", err, uerr)
			return
		}
		st.Op, st.OpPath = "", ""
	}()
	tx.Push("release", func(ctx context.Context) error { return n.d.Unmount(ctx, st.Name, st.ID) })
	src, err := n.d.Use(ctx, st.Name, st.ID, st.use())
	if err != nil {
		if st.Shared && errors.Is(err, ErrReadOnly) {
			return fmt.Errorf("%w (a volume read by many nodes, --sharing readonly, is made with its data: --opt from-snapshot=IMAGE@SNAPSHOT with BACKEND=rbd, --opt source-volume-id=ID with BACKEND=cinder)", err)
		}
		return err
	}
	n.d.fault("stage:mounted")
	if !st.Block { // a block stage is the mapping alone: each publish binds the device
		tx.Push("unbind staging path", func(ctx context.Context) error { return n.d.mounter.Unmount(ctx, st.StagingPath) })
		if err := n.bind.Bind(ctx, src, st.StagingPath, st.ReadOnly); err != nil {
			return fmt.Errorf("stage volume %s: %w", st.Name, err)
		}
		n.d.fault("stage:bound")
	}
	st.Op, st.OpPath, st.Released, st.Updated = "", "", false, time.Now()
	return n.store.SaveStage(*st)
}

// restage stages again a stage released at its last unpublish. A failure leaves it released.
func (n *Node) restage(ctx context.Context, st *StageState) error {
	st.Op, st.OpPath, st.Updated = "restage", st.StagingPath, time.Now()
	if err := n.store.SaveStage(*st); err != nil {
		return err
	}
	if err := n.up(ctx, st); err != nil {
		if st.Op == "" {
			st.Released = true
			err = errors.Join(err, n.store.SaveStage(*st))
		}
		return err
	}
	n.log.WithFields(logrus.Fields{"volume": st.Name, "staging": st.StagingPath}).Info("volume staged again")
	return nil
}

// release drops a stage's claim while keeping its record: the staging bind is removed and the
// core's use dropped (its last use unmounts, unmaps and releases the volume).
func (n *Node) release(ctx context.Context, st *StageState) error {
	st.Op, st.OpPath, st.Updated = "release", st.StagingPath, time.Now()
	if err := n.store.SaveStage(*st); err != nil {
		return err
	}
	if err := n.d.mounter.Unmount(ctx, st.StagingPath); err != nil {
		return err
	}
	if err := n.d.Unmount(ctx, st.Name, st.ID); err != nil {
		return err
	}
	n.d.fault("release:released")
	st.Op, st.OpPath, st.Released, st.Updated = "", "", true, time.Now()
	return n.store.SaveStage(*st)
}

// Unstage undoes Stage. A volume not staged at that path succeeds; one still published is
// refused (the orchestrator unpublishes first).
func (n *Node) Unstage(ctx context.Context, name, stagingPath string) error {
	stagingPath = filepath.Clean(stagingPath)
	st, ok, unlock, err := n.open(ctx, name)
	defer unlock()
	if err != nil || !ok {
		return err
	}
	if st.StagingPath != stagingPath {
		n.log.WithFields(logrus.Fields{"volume": name, "staging": stagingPath, "staged": st.StagingPath}).Debug("unstage of a path the volume is not staged at: nothing to do")
		return nil
	}
	if len(st.Targets) > 0 {
		return fmt.Errorf("%w: volume %s is still published on this node at %s; unpublish it first", ErrInUse, name, targets(st))
	}
	st.Op, st.OpPath, st.Updated = "unstage", stagingPath, time.Now()
	if err := n.store.SaveStage(st); err != nil {
		return err
	}
	if err := n.finishUnstage(ctx, &st); err != nil {
		return fmt.Errorf("unstage volume %s: %w", name, err)
	}
	n.log.WithFields(logrus.Fields{"volume": name, "staging": stagingPath}).Info("volume unstaged")
	return nil
}

// finishUnstage unbinds the staging path and drops the stage's use in the core (the last use
// unmounts, unmaps and releases the claim), then forgets the record. Each step is idempotent.
func (n *Node) finishUnstage(ctx context.Context, st *StageState) error {
	if err := n.d.mounter.Unmount(ctx, st.StagingPath); err != nil {
		return err
	}
	n.d.fault("unstage:unbound")
	if err := n.d.Unmount(ctx, st.Name, st.ID); err != nil {
		return err
	}
	n.d.fault("unstage:released")
	return n.store.DeleteStage(st.Name)
}

func targets(st StageState) []string {
	out := make([]string, 0, len(st.Targets))
	for t := range st.Targets {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Publish bind-mounts the staged volume at req.Target. Publishing again at the same target
// with the same read-only flag succeeds (and repairs a lost bind).
func (n *Node) Publish(ctx context.Context, name string, req PublishRequest) error {
	req.StagingPath, req.Target = filepath.Clean(req.StagingPath), filepath.Clean(req.Target)
	st, ok, unlock, err := n.open(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	log := n.log.WithFields(logrus.Fields{"volume": name, "target": req.Target})
	if ok {
		live, err := n.ensure(ctx, &st)
		if err != nil {
			return fmt.Errorf("publish volume %s: %w", name, err)
		}
		ok = live
	}
	if !ok || st.StagingPath != req.StagingPath {
		return fmt.Errorf("%w: volume %s is not staged at %s on this node; stage it first", ErrNotStaged, name, req.StagingPath)
	}
	if st.Released {
		if err := n.restage(ctx, &st); err != nil {
			return fmt.Errorf("publish volume %s: %w", name, err)
		}
	}
	ro := req.ReadOnly || st.ReadOnly
	if st.Block && ro && !st.Shared {
		return errReadOnlyBlock(name)
	}
	if was, had := st.Targets[req.Target]; had {
		if was != ro {
			return fmt.Errorf("%w: volume %s is published at %s already with read-only %t; unpublish it first", ErrExists, name, req.Target, was)
		}
		log.Debug("already published")
		return nil
	}
	if st.Single && len(st.Targets) > 0 {
		return fmt.Errorf("%w: volume %s has the access mode SINGLE_NODE_SINGLE_WRITER and is published at %s already",
			ErrInUse, name, targets(st))
	}
	st.Op, st.OpPath, st.Updated = "publish", req.Target, time.Now()
	if err := n.store.SaveStage(st); err != nil {
		return err
	}
	if err := n.publishBind(ctx, st, req.Target, ro); err != nil {
		cctx, cancel := undo.Context(n.d.withCleanup(ctx))
		defer cancel()
		if uerr := n.d.mounter.Unmount(cctx, req.Target); uerr != nil {
			return fmt.Errorf("publish volume %s: %w; undoing it also failed (retried on the next call): %v", name, err, uerr)
		}
		st.Op, st.OpPath = "", ""
		return errors.Join(fmt.Errorf("publish volume %s: %w", name, err), n.store.SaveStage(st))
	}
	n.d.fault("publish:bound")
	if st.Targets == nil {
		st.Targets = map[string]bool{}
	}
	st.Targets[req.Target] = ro
	st.Op, st.OpPath, st.Updated = "", "", time.Now()
	if err := n.store.SaveStage(st); err != nil {
		return err
	}
	log.WithField("readonly", ro).Info("volume published")
	return nil
}

// publishBind binds the stage at target: the staging path's mount, or for a block stage the
// mapped device node.
func (n *Node) publishBind(ctx context.Context, st StageState, target string, ro bool) error {
	if !st.Block {
		return n.bind.Bind(ctx, st.StagingPath, target, ro)
	}
	dev, err := n.device(st.Name)
	if err != nil {
		return err
	}
	return n.bind.BindDevice(ctx, dev, target, ro)
}

// device is the mapped device of a volume the core holds here.
func (n *Node) device(name string) (string, error) {
	core, ok, err := n.d.state.Load(name)
	if err != nil {
		return "", err
	}
	if !ok || core.Device == "" {
		return "", fmt.Errorf("volume %s is not mapped on this host although it is staged (its repair failed; see the log)", name)
	}
	return core.Device, nil
}

// Unpublish undoes Publish: it unmounts the target and removes it. A target the volume is not
// published at succeeds.
func (n *Node) Unpublish(ctx context.Context, name, target string) error {
	target = filepath.Clean(target)
	st, ok, unlock, err := n.open(ctx, name)
	defer unlock()
	if err != nil || !ok {
		return err
	}
	if _, had := st.Targets[target]; !had {
		return nil
	}
	st.Op, st.OpPath, st.Updated = "unpublish", target, time.Now()
	if err := n.store.SaveStage(st); err != nil {
		return err
	}
	if err := n.repair(ctx, &st); err != nil {
		return fmt.Errorf("unpublish volume %s: %w", name, err)
	}
	log := n.log.WithFields(logrus.Fields{"volume": name, "target": target})
	if len(st.Targets) == 0 {
		// Released now rather than at NodeUnstage, which swarm never calls (swarmkit#3178).
		if err := n.release(ctx, &st); err != nil {
			return fmt.Errorf("unpublish volume %s: release it after its last target: %w", name, err)
		}
		log.Info("volume unpublished from its last target and released; staged again on the next publish")
		return nil
	}
	log.Info("volume unpublished")
	return nil
}

// repair finishes (unstage, unpublish) or undoes (stage, publish) the step in flight. Every
// step is idempotent, so a repair interrupted in turn is finished by running it again.
func (n *Node) repair(ctx context.Context, st *StageState) error {
	n.log.WithFields(logrus.Fields{"volume": st.Name, "op": st.Op, "path": st.OpPath}).Info("finishing an interrupted step")
	switch st.Op {
	case "stage", "unstage":
		return n.finishUnstage(ctx, st)
	case "release", "restage":
		return n.release(ctx, st)
	case "publish", "unpublish":
		if err := n.d.mounter.Unmount(ctx, st.OpPath); err != nil {
			return err
		}
		delete(st.Targets, st.OpPath)
	}
	st.Op, st.OpPath, st.Updated = "", "", time.Now()
	return n.store.SaveStage(*st)
}

// ensure checks that the core still holds the staged volume and that the staging path and every
// target show its mount, binding again what a restart lost (with the fuse mapper, a restart maps
// and mounts the volume anew). live is false when the core no longer holds the stage's use (it
// released the volume after a reboot): the stale binds and the record are then dropped.
func (n *Node) ensure(ctx context.Context, st *StageState) (live bool, err error) {
	if st.Released {
		return true, nil // nothing is up, by design
	}
	core, ok, err := n.d.state.Load(st.Name)
	if err != nil {
		return false, err
	}
	if !ok || core.UsesOf(st.ID) == 0 {
		n.log.WithField("volume", st.Name).Warn("the core no longer holds this stage (released after a reboot?): dropping its binds")
		var errs []error
		for _, t := range targets(*st) {
			errs = append(errs, n.d.mounter.Unmount(ctx, t))
		}
		errs = append(errs, n.d.mounter.Unmount(ctx, st.StagingPath))
		if err := errors.Join(errs...); err != nil {
			return false, err
		}
		return false, n.store.DeleteStage(st.Name)
	}
	if st.Block {
		return true, n.ensureBlock(ctx, st, core.Device)
	}
	dev, err := n.d.mounter.MountedDevice(core.Path)
	if err != nil {
		return true, err
	}
	if dev == "" {
		return true, fmt.Errorf("the volume is not mounted at %s although the plugin holds it (its repair failed; see the log)", core.Path)
	}
	rebind := func(src, target string, ro bool) error {
		cur, err := n.d.mounter.MountedDevice(target)
		if err != nil || cur == dev {
			return err
		}
		n.log.WithFields(logrus.Fields{"volume": st.Name, "path": target, "found": cur, "device": dev}).Warn("bind mount lost or stale; binding again")
		if cur != "" {
			if err := n.d.mounter.Unmount(ctx, target); err != nil {
				return err
			}
		}
		return n.bind.Bind(ctx, src, target, ro)
	}
	if err := rebind(core.Path, st.StagingPath, st.ReadOnly); err != nil {
		return true, err
	}
	for _, t := range targets(*st) {
		if err := rebind(st.StagingPath, t, st.Targets[t]); err != nil {
			return true, err
		}
	}
	return true, nil
}

// ensureBlock binds again each target of a block stage that does not show the mapped device
// (a restart may have mapped the volume anew, on another device).
func (n *Node) ensureBlock(ctx context.Context, st *StageState, dev string) error {
	if dev == "" {
		return fmt.Errorf("the volume is not mapped although the plugin holds it (its repair failed; see the log)")
	}
	for _, t := range targets(*st) {
		ok, err := n.bind.BoundDevice(t, dev)
		if err != nil || ok {
			if err != nil {
				return err
			}
			continue
		}
		n.log.WithFields(logrus.Fields{"volume": st.Name, "path": t, "device": dev}).Warn("device bind lost or stale; binding again")
		if err := n.d.mounter.Unmount(ctx, t); err != nil {
			return err
		}
		if err := n.bind.BindDevice(ctx, dev, t, st.Targets[t]); err != nil {
			return err
		}
	}
	return nil
}

// Reconcile repairs every stage record after a start: steps in flight are finished or undone,
// lost binds are made again. Call it after the Driver's Reconcile; node calls wait for it.
func (n *Node) Reconcile(ctx context.Context) error {
	defer close(n.ready)
	stages, err := n.store.AllStages()
	errs := []error{err}
	for _, st := range stages {
		unlock, err := n.locks.lock(ctx, st.Name)
		if err != nil {
			errs = append(errs, err)
			break
		}
		if _, ok, err := n.load(ctx, st.Name); err != nil {
			errs = append(errs, err)
		} else if ok {
			cur, _, _ := n.store.LoadStage(st.Name)
			if _, err := n.ensure(ctx, &cur); err != nil {
				errs = append(errs, fmt.Errorf("volume %s: %w", st.Name, err))
			}
		}
		unlock()
	}
	if err := errors.Join(errs...); err != nil {
		n.log.WithError(err).Error("reconcile of staged volumes: some are left to repair on their next call")
		return err
	}
	return nil
}

// The controller's reads of the core, for the CSI front end.

// Ready says whether the start-up reconcile has let calls in.
func (d *Driver) Ready() bool {
	select {
	case <-d.ready:
		return true
	default:
		return false
	}
}

// Describe returns the volume as the backend knows it. ErrNotFound when there is none.
func (d *Driver) Describe(ctx context.Context, name string) (Volume, error) {
	if err := ValidateName(name); err != nil {
		return Volume{}, err
	}
	if err := d.waitReady(ctx, name); err != nil {
		return Volume{}, err
	}
	vol, err := d.prov.Get(ctx, name)
	if err != nil {
		return Volume{}, fmt.Errorf("volume %s: %w", name, err)
	}
	if err := d.otherFrontEnd(vol, "use it"); err != nil {
		return Volume{}, err
	}
	if vol.FSType == "" {
		vol.FSType = d.cfg.Defaults.FSType
	}
	return vol, nil
}

// Volumes lists every volume the backend manages, with their sizes.
func (d *Driver) Volumes(ctx context.Context) ([]Volume, error) {
	if err := d.waitReady(ctx, ""); err != nil {
		return nil, err
	}
	vols, err := d.prov.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	return vols, nil
}

// RoundSize is the size the backend makes for a request of size bytes.
func (d *Driver) RoundSize(size uint64) uint64 { return d.prov.RoundSize(size) }

// DefaultFSType is DEFAULT_FSTYPE.
func (d *Driver) DefaultFSType() string { return d.cfg.Defaults.FSType }

// MapRaw is Mount without a filesystem, for CSI's block access type: the first use claims and
// maps the volume (nothing is formatted or mounted), and every use gets the device. A volume
// in use here as a filesystem is refused (ErrInUse), and the reverse.
func (d *Driver) MapRaw(ctx context.Context, name, id string) (string, error) {
	return d.Use(ctx, name, id, Use{Raw: true})
}

// MinSize is the smallest volume the plugin makes with a filesystem of that type.
func MinSize(fstype string) uint64 {
	if fstype == "xfs" {
		return minXFSSize
	}
	return minSize
}
