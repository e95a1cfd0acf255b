package driver

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Config is the driver's share of the plugin's settings.
type Config struct {
	Node         string // this host's name, recorded as the holder of what it attaches
	MountRoot    string // volumes are mounted at MountRoot/<name>
	Defaults     OptionDefaults
	RemoveAction RemoveAction
	LockBreak    bool // take over volumes whose holder is dead, fencing it first
	// CleanupTimeout bounds the undo of a failed call, which runs after the call's own deadline
	// may have passed.
	CleanupTimeout time.Duration
	Log            *logrus.Entry
	// Fault, when set, is called at each step boundary with the step's name (crash tests kill the
	// process there). Nil in production.
	Fault func(step string)
	// Known persists the names of the volumes seen (nil: kept in memory only).
	Known KnownStore
	// Observer, when set, is told of the backend's answers and of fencing (metrics).
	Observer Observer
	// BootID identifies this boot of the host's kernel (/proc/sys/kernel/random/boot_id). Every
	// state record carries it; Reconcile releases, rather than maps again, the volumes recorded in
	// an earlier boot. Empty: records are taken as of this boot.
	BootID string
}

// Driver implements the volume semantics on the interfaces it consumes. Every method takes a
// context and honours its deadline. Safe for concurrent use.
type Driver struct {
	cfg     Config
	prov    Provisioner
	mapper  Mapper
	mounter Mounter
	state   StateStore
	locks   volumeLocks
	ready   chan struct{}
	log     *logrus.Entry
	// known remembers the volumes the backend last described, so that Get can still answer
	// while the backend is unreachable: dockerd, when Get fails, silently makes a *local* volume
	// of the same name (measured with 20.10), and the container would run on the wrong disk.
	known sync.Map // name -> VolumeInfo
	// knownMu serialises writes of the known names; knownSaved is what was last written.
	knownMu    sync.Mutex
	knownSaved map[string]time.Time
}

// New returns a driver. Call Reconcile once (after opening the socket): calls wait for it.
func New(cfg Config, prov Provisioner, mapper Mapper, mounter Mounter, state StateStore) *Driver {
	if cfg.CleanupTimeout <= 0 {
		cfg.CleanupTimeout = 60 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	if cfg.RemoveAction == "" {
		cfg.RemoveAction = RemoveDelete
	}
	if cfg.BootID != "" {
		state = bootStamped{StateStore: state, boot: cfg.BootID}
	}
	if cfg.Observer != nil {
		prov = observed{p: prov, obs: cfg.Observer}
	}
	d := &Driver{cfg: cfg, prov: prov, mapper: mapper, mounter: mounter, state: state,
		ready: make(chan struct{}), log: cfg.Log}
	if cfg.Known != nil {
		names, err := cfg.Known.LoadKnown()
		if err != nil {
			d.log.WithError(err).Warn("reading the names of known volumes; Get answers only from the backend until it has seen them again")
		}
		for name, created := range names {
			d.known.Store(name, VolumeInfo{Name: name, CreatedAt: created})
		}
		d.knownSaved = names
	}
	return d
}

// rememberKnown persists the known names when they changed. A failure costs only the
// answers from memory after a restart, so it is logged, not returned.
func (d *Driver) rememberKnown() {
	if d.cfg.Known == nil {
		return
	}
	d.knownMu.Lock()
	defer d.knownMu.Unlock()
	names := map[string]time.Time{}
	d.known.Range(func(k, v any) bool {
		names[k.(string)] = v.(VolumeInfo).CreatedAt
		return true
	})
	if len(names) == len(d.knownSaved) {
		same := true
		for n := range names {
			if _, ok := d.knownSaved[n]; !ok {
				same = false
				break
			}
		}
		if same {
			return
		}
	}
	if err := d.cfg.Known.SaveKnown(names); err != nil {
		d.log.WithError(err).Warn("saving the names of known volumes")
		return
	}
	d.knownSaved = names
}

func (d *Driver) fault(step string) {
	if d.cfg.Fault != nil {
		d.cfg.Fault(step)
	}
}

// waitReady waits for the start-up reconcile, so that no call acts on state being repaired. name
// is the volume the call is about ("" for List).
func (d *Driver) waitReady(ctx context.Context, name string) error {
	select {
	case <-d.ready:
		return nil
	case <-ctx.Done():
		what := "the plugin"
		if name != "" {
			what = "volume " + name + ": the plugin"
		}
		return fmt.Errorf("%w: %s is still reconciling its volumes after a restart; try again", ErrTimeout, what)
	}
}

// begin validates the name, waits for readiness and takes the volume's lock.
func (d *Driver) begin(ctx context.Context, name string) (func(), error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if err := d.waitReady(ctx, name); err != nil {
		return nil, err
	}
	return d.locks.lock(ctx, name)
}

func (d *Driver) mountPath(name string) string { return filepath.Join(d.cfg.MountRoot, name) }

// Create makes a volume, or accepts an existing one when the request is compatible with it.
func (d *Driver) Create(ctx context.Context, name string, raw map[string]string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	opts, err := ParseOptions(raw, d.cfg.Defaults, d.prov.BackendOptions())
	if err != nil {
		return fmt.Errorf("create volume %s: %w", name, err)
	}
	opts.Size = d.prov.RoundSize(opts.Size)
	unlock, err := d.begin(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	err = d.prov.Create(ctx, name, opts)
	if errors.Is(err, ErrExists) {
		vol, gerr := d.prov.Get(ctx, name)
		if gerr != nil {
			return fmt.Errorf("create volume %s: it exists but cannot be read: %w", name, gerr)
		}
		return d.compatible(ctx, name, vol, raw, opts)
	}
	if err != nil {
		return fmt.Errorf("create volume %s: %w", name, err)
	}
	d.fault("create:created")
	d.known.Store(name, VolumeInfo{Name: name, CreatedAt: time.Now()})
	d.rememberKnown()
	return nil
}

// compatible accepts a Create of an existing volume unless it gives an option the volume does
// not have. Options left out are not compared: `docker volume create NAME` of any existing volume
// succeeds, as the daemon's own Get-then-Create expects.
func (d *Driver) compatible(ctx context.Context, name string, vol Volume, raw map[string]string, opts Options) error {
	var diffs []string
	if _, ok := raw[OptSize]; ok && vol.Size != opts.Size {
		diffs = append(diffs, fmt.Sprintf("size %s (it has %s)", FormatSize(opts.Size), FormatSize(vol.Size)))
	}
	if _, ok := raw[OptFSType]; ok && vol.FSType != "" && vol.FSType != opts.FSType {
		diffs = append(diffs, fmt.Sprintf("fstype %s (it has %s)", opts.FSType, vol.FSType))
	}
	if _, ok := raw[OptMkfsOptions]; ok && !slices.Equal(vol.MkfsOptions, opts.MkfsOptions) {
		diffs = append(diffs, fmt.Sprintf("mkfs-options %q (it has %q)", strings.Join(opts.MkfsOptions, " "), strings.Join(vol.MkfsOptions, " ")))
	}
	if _, ok := raw[OptMountOptions]; ok && vol.MountOptions != opts.MountOptions {
		diffs = append(diffs, fmt.Sprintf("mount-options %q (it has %q)", opts.MountOptions, vol.MountOptions))
	}
	if len(opts.Backend) > 0 {
		more, err := d.prov.Differences(ctx, vol, opts)
		if err != nil {
			return fmt.Errorf("create volume %s: it exists, and its options cannot be compared with the request: %w", name, err)
		}
		diffs = append(diffs, more...)
	}
	if len(diffs) > 0 {
		return fmt.Errorf("create volume %s: %w: a volume of that name exists with other options: asked for %s; remove it first or use another name",
			name, ErrExists, strings.Join(diffs, ", "))
	}
	return nil
}

// VolumeInfo is what Get and List report.
type VolumeInfo struct {
	Name       string
	Mountpoint string // set only while mounted on this host
	CreatedAt  time.Time
	Status     map[string]any
}

// Get describes a volume wherever it lives in the cluster.
func (d *Driver) Get(ctx context.Context, name string) (VolumeInfo, error) {
	if err := ValidateName(name); err != nil {
		return VolumeInfo{}, err
	}
	if err := d.waitReady(ctx, name); err != nil {
		return VolumeInfo{}, err
	}
	vol, err := d.prov.Get(ctx, name)
	if err != nil {
		err = fmt.Errorf("volume %s: %w", name, err)
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid) {
			if _, was := d.known.LoadAndDelete(name); was {
				d.rememberKnown()
			}
			return VolumeInfo{}, err
		}
		if v, ok := d.known.Load(name); ok {
			info := v.(VolumeInfo)
			status := map[string]any{"backend-error": err.Error()}
			for k, v := range info.Status {
				status[k] = v
			}
			info.Status = status
			d.log.WithField("volume", name).WithError(err).Warn("backend unreachable: answering Get from what it said last")
			return info, nil
		}
		return VolumeInfo{}, err
	}
	info := VolumeInfo{Name: name, CreatedAt: vol.CreatedAt, Status: map[string]any{}}
	for k, v := range vol.Status {
		info.Status[k] = v
	}
	info.Status["size"] = FormatSize(vol.Size)
	fs := vol.FSType
	if fs == "" {
		fs = d.cfg.Defaults.FSType
	}
	info.Status["fstype"] = fs
	if vol.Image.Image != "" {
		info.Status["image"] = vol.Image.String()
	}
	st, ok, err := d.state.Load(name)
	if err != nil {
		return VolumeInfo{}, err
	}
	if ok && len(st.IDs) > 0 {
		info.Mountpoint = st.Path
		info.Status["device"] = st.Device
		info.Status["image"] = st.Image.String()
		info.Status["mounts"] = slices.Clone(st.IDs)
		info.Status["host"] = d.cfg.Node
	} else if vol.Holder != "" {
		info.Status["holder"] = vol.Holder
	}
	_, was := d.known.Swap(name, VolumeInfo{Name: name, CreatedAt: vol.CreatedAt, Status: map[string]any{
		"size": info.Status["size"], "fstype": info.Status["fstype"]}})
	if !was {
		d.rememberKnown()
	}
	return info, nil
}

// List returns every volume the backend manages.
func (d *Driver) List(ctx context.Context) ([]VolumeInfo, error) {
	if err := d.waitReady(ctx, ""); err != nil {
		return nil, err
	}
	vols, err := d.prov.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	local, err := d.state.All()
	if err != nil {
		d.log.WithError(err).Warn("reading local volume state")
	}
	mounted := map[string]string{}
	for _, st := range local {
		if len(st.IDs) > 0 {
			mounted[st.Name] = st.Path
		}
	}
	out := make([]VolumeInfo, 0, len(vols))
	for _, v := range vols {
		out = append(out, VolumeInfo{Name: v.Name, Mountpoint: mounted[v.Name], CreatedAt: v.CreatedAt})
		if _, ok := d.known.Load(v.Name); !ok {
			d.known.Store(v.Name, VolumeInfo{Name: v.Name, CreatedAt: v.CreatedAt})
		}
	}
	d.rememberKnown()
	return out, nil
}

// Path returns the volume's mount point on this host, or "" when it is not mounted here.
func (d *Driver) Path(ctx context.Context, name string) (string, error) {
	if err := ValidateName(name); err != nil {
		return "", err
	}
	if err := d.waitReady(ctx, name); err != nil {
		return "", err
	}
	st, ok, err := d.state.Load(name)
	if err != nil || !ok || len(st.IDs) == 0 {
		return "", err
	}
	return st.Path, nil
}

// Remove deletes a volume (per REMOVE_ACTION) unless it is in use anywhere.
func (d *Driver) Remove(ctx context.Context, name string) error {
	unlock, err := d.begin(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	st, ok, err := d.state.Load(name)
	if err != nil {
		return err
	}
	if ok && st.Op != "" {
		op := st.Op
		if err := d.repair(ctx, &st); err != nil {
			return fmt.Errorf("remove volume %s: finishing an interrupted %s first: %w", name, op, err)
		}
		st, ok, _ = d.state.Load(name)
	}
	if ok && len(st.IDs) > 0 {
		return fmt.Errorf("remove volume %s: %w: it is mounted on this host (%s) by %d container(s); stop them first",
			name, ErrInUse, d.cfg.Node, len(st.IDs))
	}
	if err := d.prov.Remove(ctx, name, d.cfg.RemoveAction); err != nil {
		return fmt.Errorf("remove volume %s: %w", name, err)
	}
	d.known.Delete(name)
	d.rememberKnown()
	d.fault("remove:removed")
	d.log.WithFields(logrus.Fields{"volume": name, "action": d.cfg.RemoveAction}).Info("volume removed")
	return nil
}

// Mount makes the volume available on this host for caller id and returns its mount point. The
// first Mount on the host attaches, maps, formats a blank device and mounts; later Mounts, with
// other IDs or again with the same one (dockerd's nested uses: `docker cp`), only count a use.
func (d *Driver) Mount(ctx context.Context, name, id string) (string, error) {
	if id == "" {
		return "", fmt.Errorf("mount volume %s: %w: no caller ID", name, ErrInvalid)
	}
	unlock, err := d.begin(ctx, name)
	if err != nil {
		return "", err
	}
	defer unlock()
	log := d.log.WithFields(logrus.Fields{"volume": name, "caller": id})

	st, ok, err := d.state.Load(name)
	if err != nil {
		return "", err
	}
	if ok && st.Op != "" {
		op := st.Op
		if err := d.repair(ctx, &st); err != nil {
			return "", fmt.Errorf("mount volume %s: finishing an interrupted %s first: %w", name, op, err)
		}
		st, ok, err = d.state.Load(name)
		if err != nil {
			return "", err
		}
	}
	if ok && len(st.IDs) > 0 {
		// Warm: the volume is up here. Make sure it still is (a restarted daemon may have lost
		// the propagated mount), then add the reference.
		if err := d.ensureUp(ctx, &st, false); err != nil {
			return "", fmt.Errorf("mount volume %s: %w", name, err)
		}
		uses := st.AddUse(id)
		st.Updated = time.Now()
		if err := d.state.Save(st); err != nil {
			return "", err
		}
		log.WithFields(logrus.Fields{"uses": uses, "refs": len(st.IDs)}).Info("volume mounted (another use)")
		return st.Path, nil
	}
	path, err := d.mountFirst(ctx, name, id)
	if err != nil {
		return "", err
	}
	log.WithField("path", path).Info("volume mounted")
	return path, nil
}

// mountFirst is the cold path: attach, map, format if blank, mount; undone in reverse on error.
func (d *Driver) mountFirst(ctx context.Context, name, id string) (_ string, err error) {
	// steps times each step for the debug log: where a slow Mount spends its time.
	steps := logrus.Fields{"volume": name, "caller": id}
	t0 := time.Now()
	lap := func(step string) {
		steps[step] = time.Since(t0).Round(100 * time.Microsecond).String()
		t0 = time.Now()
	}
	defer func() {
		if err == nil {
			d.log.WithFields(steps).Debug("first mount: time per step")
		}
	}()
	// The state is recorded before anything happens, with the mount's ID: a crash or a failure
	// from here on is undone by it (the image is known once attached).
	st := State{Name: name, Op: "mount", OpID: id, Path: d.mountPath(name), Attach: Attachment{MountID: id}, Updated: time.Now()}
	if err := d.state.Save(st); err != nil {
		return "", err
	}
	lap("save")
	var tx transaction
	defer func() {
		if err == nil {
			return
		}
		cctx, cancel := context.WithTimeout(context.Background(), d.cfg.CleanupTimeout)
		defer cancel()
		if uerr := tx.rollback(cctx); uerr != nil {
			// Keep the state (Op=mount) so that the next call or a restart finishes the cleanup;
			// with the device, if it got as far as mapping, for `docker volume inspect`.
			if st.Device != "" {
				_ = d.state.Save(st)
			}
			d.log.WithFields(logrus.Fields{"volume": name}).WithError(uerr).Error("undoing a failed mount")
			err = fmt.Errorf("%w; undoing it also failed (the plugin retries in the background and on the next call): %v", err, uerr)
			return
		}
		if derr := d.state.Delete(name); derr != nil {
			err = errors.Join(err, derr)
		}
	}()

	att, err := d.prov.Attach(ctx, name, AttachRequest{Host: d.cfg.Node, MountID: id, TakeOver: d.cfg.LockBreak})
	if err != nil {
		if !refused(err) {
			// No answer (a deadline, a lost connection): the backend may still have made the
			// claim, or make it later. Release whatever it holds for this mount.
			tx.add("detach", func(ctx context.Context) error { return d.prov.Detach(ctx, name, Attachment{MountID: id}) })
		}
		return "", fmt.Errorf("mount volume %s: %w", name, err)
	}
	lap("attach")
	if att.MountID == "" {
		att.MountID = id
	}
	vol := att.Volume
	att.Volume = nil // not persisted
	tx.add("detach", func(ctx context.Context) error { return d.prov.Detach(ctx, name, att) })
	if vol == nil { // the backend did not read it while attaching
		v, err := d.prov.Get(ctx, name)
		if err != nil {
			return "", fmt.Errorf("mount volume %s: %w", name, err)
		}
		v.Unwritten = false // only a read made after the claim counts
		vol = &v
		lap("get")
	}
	fstype := vol.FSType
	if fstype == "" {
		fstype = d.cfg.Defaults.FSType
	}
	if err := CheckStored(fstype, *vol); err != nil {
		return "", storedRefusal(name, err)
	}
	st.Image, st.FSType, st.Options = vol.Image, fstype, vol.MountOptions
	if len(att.Fenced) > 0 {
		d.log.WithFields(logrus.Fields{"volume": name, "fenced": att.Fenced}).Warn("took the volume over from a dead holder")
	}
	st.Attach = att
	if att.Map.Image != "" {
		st.Image = att.Map.ImageSpec // the backend's word on what to map (Cinder knows it only now)
	}
	if err := d.state.Save(st); err != nil {
		return "", err
	}
	d.fault("mount:attached")
	lap("save-attached")

	m, err := d.mapper.Map(ctx, att.Map)
	if err != nil {
		return "", fmt.Errorf("mount volume %s: map %s: %w", name, att.Map.ImageSpec, err)
	}
	tx.add("unmap", func(ctx context.Context) error { return d.mapper.Unmap(ctx, att.Map.ImageSpec) })
	lap("map")
	if err := d.recordClients(ctx, name, att, m); err != nil {
		return "", fmt.Errorf("mount volume %s: record this host's Ceph clients of %s (a host taking the volume over fences them): %w", name, att.Map.ImageSpec, err)
	}
	lap("record")
	// Not saved here: the state already names the image, and a repair finds its device (if it was
	// mapped) by asking the mapper; the device is recorded with the mount below. (One fsync less:
	// 6 ms of a first Mount in the krbd lab's guest.)
	st.Device = m.Device
	d.fault("mount:mapped")

	fs, err := d.mounter.FormatIfBlank(ctx, m.Device, fstype, vol.MkfsOptions, vol.Unwritten && !att.Map.ReadOnly)
	if err != nil {
		return "", fmt.Errorf("mount volume %s: %w", name, err)
	}
	if err := checkFound(name, fstype, fs, st.Options); err != nil {
		return "", err
	}
	if fs != fstype {
		d.log.WithFields(logrus.Fields{"volume": name, "found": fs, "expected": fstype}).Warn("the device has another supported filesystem than recorded; mounting what it has")
		st.FSType = fs
	}
	d.fault("mount:formatted")
	lap("format")

	mopts, err := MountOptionsFor(st.FSType, st.Options)
	if err != nil {
		return "", storedRefusal(name, err)
	}
	if err := d.mounter.Mount(ctx, m.Device, st.Path, st.FSType, mopts); err != nil {
		return "", fmt.Errorf("mount volume %s: %w", name, err)
	}
	tx.add("unmount", func(ctx context.Context) error { return d.mounter.Unmount(ctx, st.Path) })
	d.fault("mount:mounted")
	lap("mount")

	st.IDs, st.Uses = []string{id}, map[string]int{id: 1}
	st.Op, st.OpID = "", ""
	st.Updated = time.Now()
	if err := d.state.Save(st); err != nil {
		return "", err
	}
	lap("save-done")
	return st.Path, nil
}

// Unmount drops one use of caller id; the last use of any ID unmounts, unmaps and detaches. An
// unknown ID succeeds (Docker calls Unmount after a failed Mount), and so does an Unmount beyond
// the uses counted for an ID.
func (d *Driver) Unmount(ctx context.Context, name, id string) error {
	unlock, err := d.begin(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	log := d.log.WithFields(logrus.Fields{"volume": name, "caller": id})
	st, ok, err := d.state.Load(name)
	if err != nil || !ok {
		return err
	}
	if st.Op != "" {
		op := st.Op
		if err := d.repair(ctx, &st); err != nil {
			return fmt.Errorf("unmount volume %s: finishing an interrupted %s first: %w", name, op, err)
		}
		if st, ok, err = d.state.Load(name); err != nil || !ok {
			return err
		}
	}
	if st.UsesOf(id) == 0 {
		// Also an Unmount beyond the uses counted for an ID.
		log.Debug("unmount of an unknown caller ID: nothing to do")
		return nil
	}
	if st.TotalUses() > 1 {
		left := st.DropUse(id)
		st.Updated = time.Now()
		if err := d.state.Save(st); err != nil {
			return err
		}
		log.WithFields(logrus.Fields{"uses": left, "refs": len(st.IDs)}).Info("volume use dropped; still mounted")
		return nil
	}
	st.Op, st.OpID = "unmount", id
	st.Updated = time.Now()
	if err := d.state.Save(st); err != nil {
		return err
	}
	if err := d.teardown(ctx, &st); err != nil {
		return fmt.Errorf("unmount volume %s: %w", name, err)
	}
	log.Info("volume unmounted and released")
	return nil
}

// teardown unmounts, unmaps and detaches, then forgets the state. Each step is idempotent, so a
// teardown interrupted by a crash or an error is finished by running it again.
func (d *Driver) teardown(ctx context.Context, st *State) error {
	if err := d.mounter.Unmount(ctx, st.Path); err != nil {
		return err
	}
	d.fault("unmount:unmounted")
	// Unmap and Detach run even when the state does not record them done: a crash may have hit
	// between the side effect and its record. Both are no-ops when there is nothing to undo.
	// (With Cinder the image is known only once attached: none, nothing was mapped.)
	if st.Image.Image != "" {
		if err := d.mapper.Unmap(ctx, st.Image); err != nil {
			return fmt.Errorf("unmap %s: %w", st.Image, err)
		}
	}
	d.fault("unmount:unmapped")
	if err := d.prov.Detach(ctx, st.Name, st.Attach); err != nil {
		return err
	}
	d.fault("unmount:detached")
	return d.state.Delete(st.Name)
}

// repair finishes an operation a crash or an error interrupted: a Mount that never completed
// is undone unless other references keep the volume up; an Unmount is completed.
func (d *Driver) repair(ctx context.Context, st *State) error {
	log := d.log.WithFields(logrus.Fields{"volume": st.Name, "op": st.Op, "caller": st.OpID})
	if st.Op == "unmount" {
		// The interrupted Unmount was of the last use.
		st.DropUse(st.OpID)
	}
	st.Op, st.OpID = "", ""
	if len(st.IDs) == 0 {
		log.Info("undoing an interrupted operation")
		return d.teardown(ctx, st)
	}
	log.Info("interrupted operation left the volume in use by others; keeping it up")
	if err := d.ensureUp(ctx, st, true); err != nil {
		return err
	}
	st.Updated = time.Now()
	return d.state.Save(*st)
}

// ensureUp makes sure a volume this host holds is mapped and mounted where the state says,
// mapping and mounting again what a restart lost (the fuse mapper's process, a propagated mount).
// With verifyClaim (after a restart) it first confirms with the backend that this host still
// holds the volume: another host may have fenced this one and taken it over meanwhile. It never
// takes a volume over itself.
func (d *Driver) ensureUp(ctx context.Context, st *State, verifyClaim bool) error {
	return d.ensureUpWith(ctx, st, verifyClaim, nil)
}

// ensureUpWith is ensureUp with the mapper's mappings already listed (nil: list them now). The
// reconcile lists them once for every volume: with the fuse mapper a listing asks each rbd-fuse
// daemon about its image, and listing once per volume made a restart with 200 volumes take
// 200 x 200 questions (83 s on the lab, measured by cmd/cdp-bench).
func (d *Driver) ensureUpWith(ctx context.Context, st *State, verifyClaim bool, listed *[]Mapping) error {
	claimed := false
	if verifyClaim {
		att, err := d.prov.Attach(ctx, st.Name, AttachRequest{Host: d.cfg.Node, MountID: st.IDs[0], Claimed: st.Attach.ID})
		if errors.Is(err, ErrBusyElsewhere) {
			return fmt.Errorf("this host no longer holds the volume (another host took it over, fencing this one): its containers get I/O errors; stop them: %w", err)
		}
		if err != nil {
			return err
		}
		if att.MountID == "" {
			att.MountID = st.IDs[0]
		}
		st.Attach = att
		claimed = true
	}
	var maps []Mapping
	if listed != nil {
		maps = *listed
	} else {
		var err error
		if maps, err = d.mapper.List(ctx); err != nil {
			return err
		}
	}
	dev := ""
	for _, m := range maps {
		if m.ImageSpec == st.Image {
			dev = m.Device
			if claimed {
				// A restarted plugin has a new Ceph client of its own: record it with the
				// mapping's, for a host that may have to fence this one.
				if err := d.recordClients(ctx, st.Name, st.Attach, m); err != nil {
					return fmt.Errorf("record this host's Ceph clients of %s: %w", st.Image, err)
				}
			}
			break
		}
	}
	if dev == "" {
		d.log.WithFields(logrus.Fields{"volume": st.Name, "image": st.Image.String()}).Warn("mapping lost; mapping again")
		if cur, _ := d.mounter.MountedDevice(st.Path); cur != "" {
			// A mount of the dead device: clear it before mounting the new one.
			if err := d.mounter.Unmount(ctx, st.Path); err != nil {
				return fmt.Errorf("clear the stale mount of lost mapping %s: %w", st.Device, err)
			}
		}
		if !claimed {
			att, err := d.prov.Attach(ctx, st.Name, AttachRequest{Host: d.cfg.Node, MountID: st.IDs[0], Claimed: st.Attach.ID})
			if err != nil {
				return err
			}
			if att.MountID == "" {
				att.MountID = st.IDs[0]
			}
			st.Attach = att
		}
		if err := d.state.Save(*st); err != nil {
			return err
		}
		m, err := d.mapper.Map(ctx, st.Attach.Map)
		if err != nil {
			return fmt.Errorf("map %s again: %w", st.Image, err)
		}
		if err := d.recordClients(ctx, st.Name, st.Attach, m); err != nil {
			return fmt.Errorf("record this host's Ceph clients of %s: %w", st.Image, err)
		}
		dev = m.Device
	}
	if dev != st.Device {
		st.Device = dev
		if err := d.state.Save(*st); err != nil {
			return err
		}
	}
	cur, err := d.mounter.MountedDevice(st.Path)
	if err != nil {
		return err
	}
	if cur == dev {
		return nil
	}
	if cur != "" {
		return fmt.Errorf("%s has %s mounted, not the volume's device %s: unmount it", st.Path, cur, dev)
	}
	d.log.WithFields(logrus.Fields{"volume": st.Name, "device": dev}).Warn("mount lost; mounting again")
	mopts, err := MountOptionsFor(st.FSType, st.Options)
	if err != nil {
		return storedRefusal(st.Name, err)
	}
	return d.mounter.Mount(ctx, dev, st.Path, st.FSType, mopts)
}

// Reconcile compares the persisted state with the mapper, the mount table and the backend after
// a start and repairs what differs, a few volumes at a time. Calls are let through at once: a
// call on a recorded volume waits until that volume is repaired. It returns what it could not
// repair (those volumes stay recorded and are retried by their next call).
func (d *Driver) Reconcile(ctx context.Context) error {
	states, err := d.state.All()
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	// Hold the lock of every recorded volume, then let calls in: a call on a volume still being
	// repaired waits for its repair (as it waits for any call on that volume), and every other
	// call is answered at once. Waiting for the whole reconcile kept the socket silent for
	// seconds with a few hundred volumes (measured by cmd/cdp-bench), and dockerd disables a
	// plugin that does not answer within about 12 s.
	unlocks := make([]func(), len(states))
	for i, st := range states {
		unlock, err := d.locks.lock(ctx, st.Name)
		if err != nil {
			close(d.ready)
			for _, u := range unlocks[:i] {
				u()
			}
			return errors.Join(append(errs, err)...)
		}
		unlocks[i] = unlock
	}
	close(d.ready)

	known := map[ImageSpec]bool{}
	for _, st := range states {
		known[st.Image] = true
	}
	var listed *[]Mapping
	maps, mapErr := d.mapper.List(ctx)
	if mapErr == nil {
		listed = &maps
	}
	var mu sync.Mutex
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < min(reconcileWorkers, len(states)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := d.reconcileOne(ctx, states[i], listed); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("volume %s: %w", states[i].Name, err))
					mu.Unlock()
				}
				unlocks[i]()
			}
		}()
	}
	for i := range states {
		next <- i
	}
	close(next)
	wg.Wait()
	if mapErr == nil {
		for _, m := range maps {
			if !known[m.ImageSpec] {
				d.log.WithFields(logrus.Fields{"image": m.ImageSpec.String(), "device": m.Device}).
					Warn("reconcile: a mapping this plugin has no record of; leaving it alone")
			}
		}
	} else {
		errs = append(errs, mapErr)
	}
	return errors.Join(errs...)
}

// reconcileWorkers is how many volumes Reconcile repairs at once.
const reconcileWorkers = 8

// bootStamped records the boot every state record is written in (State.Boot).
type bootStamped struct {
	StateStore
	boot string
}

func (s bootStamped) Save(st State) error {
	st.Boot = s.boot
	return s.StateStore.Save(st)
}

// reconcileOne repairs one recorded volume after a start; the caller holds its lock. listed is
// the mapper's mappings listed at the start of the reconcile (nil if that failed).
func (d *Driver) reconcileOne(ctx context.Context, st State, listed *[]Mapping) error {
	log := d.log.WithFields(logrus.Fields{"volume": st.Name, "refs": len(st.IDs), "op": st.Op})
	var err error
	if st.Boot != "" && d.cfg.BootID != "" && st.Boot != d.cfg.BootID {
		// The host rebooted: its containers died, and with them every reference. Mapping the
		// volumes again would keep them claimed by this host (dockerd may never call Unmount for
		// containers it does not restart), so release them; containers that restart Mount again.
		log.Info("recorded before the host rebooted: releasing the volume, whose containers ended with the reboot")
		// Recorded first as an unmount in progress: if the release fails (the backend is away),
		// the background repair and the next call finish it, and a Mount does not join the
		// dead references.
		st.IDs, st.Uses, st.Op, st.OpID = nil, nil, "unmount", ""
		if err = d.state.Save(st); err == nil {
			err = d.teardown(ctx, &st)
		}
	} else if st.Op != "" {
		err = d.repair(ctx, &st)
	} else if len(st.IDs) > 0 {
		err = d.ensureUpWith(ctx, &st, true, listed)
	} else {
		err = d.teardown(ctx, &st)
	}
	if err != nil {
		log.WithError(err).Error("reconcile: could not repair the volume")
		return err
	}
	log.Info("reconciled")
	return nil
}

// refused tells a backend's definite "no" (nothing was claimed) from a failure to hear back.
func refused(err error) bool {
	for _, e := range []error{ErrBusyElsewhere, ErrNotFound, ErrInvalid, ErrPermission, ErrExists} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// RepairPending finishes the operations that failed and could not be undone at the time (the
// backend was unreachable): what Mount, Unmount and the start-up reconcile left recorded. It
// skips volumes busy with a call (their call repairs them). Run it periodically, so that a
// claim is released once the backend is back even if Docker never calls about the volume again.
func (d *Driver) RepairPending(ctx context.Context) error {
	select {
	case <-d.ready:
	default:
		return nil
	}
	states, err := d.state.All()
	if err != nil {
		return err
	}
	var errs []error
	for _, st := range states {
		if st.Op == "" {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
		unlock, err := d.locks.lock(lctx, st.Name)
		cancel()
		if err != nil {
			continue // a call holds it
		}
		func() {
			defer unlock()
			cur, ok, err := d.state.Load(st.Name)
			if err != nil || !ok || cur.Op == "" {
				return
			}
			op := cur.Op
			if err := d.repair(ctx, &cur); err != nil {
				errs = append(errs, fmt.Errorf("volume %s: finishing an interrupted %s: %w", st.Name, op, err))
				return
			}
			d.log.WithFields(logrus.Fields{"volume": st.Name, "op": op}).Info("finished an interrupted operation in the background")
		}()
	}
	return errors.Join(errs...)
}

// transaction remembers undo steps and runs them in reverse.
type transaction struct {
	steps []undoStep
}

type undoStep struct {
	name string
	fn   func(context.Context) error
}

func (t *transaction) add(name string, fn func(context.Context) error) {
	t.steps = append(t.steps, undoStep{name, fn})
}

// rollback undoes the steps in reverse and stops at the first that fails: the steps before it
// must stay (releasing the claim on a volume that is still mapped here would let another host
// mount it too). What is left is recorded in the state and finished by the next call.
func (t *transaction) rollback(ctx context.Context) error {
	for i := len(t.steps) - 1; i >= 0; i-- {
		if err := t.steps[i].fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", t.steps[i].name, err)
		}
	}
	return nil
}
