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

	"github.com/cephdocker/ceph-docker-plugin/driver/undo"
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
	Fault func(step FaultStep)
	// Known persists the names of the volumes seen (nil: kept in memory only).
	Known KnownStore
	// Observer, when set, is told of the backend's answers and of fencing (metrics).
	Observer Observer
	// BootID identifies this boot of the host's kernel (/proc/sys/kernel/random/boot_id). Every
	// state record carries it; Reconcile releases, rather than maps again, the volumes recorded in
	// an earlier boot. Empty: records are taken as of this boot.
	BootID string
	// FrontEnd is the protocol this plugin serves (FrontEndVolume or FrontEndCSI): recorded with
	// each volume it creates, and volumes recorded by the other one are refused (frontend.go).
	// Empty: nothing recorded or checked.
	FrontEnd string
	// FS sets the root of new filesystems and grows them (nil: neither is done).
	FS FSAdmin
	// Refresher makes a mapped device follow its image's size (nil: the mapper's devices follow
	// by themselves, as krbd's do).
	Refresher DeviceRefresher
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
	// growth tracks the growing of mounted filesystems (grow.go).
	growth growth
	// replayPace bounds the wait of a first read-only use for another host that holds a volume
	// whose journal needs replaying (replay.go).
	replayPace replayPace
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
		ready: make(chan struct{}), log: cfg.Log, replayPace: defaultReplayPace}
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

// withCleanup carries the settings' cleanup bound (Config.CleanupTimeout) in a call's context: every
// undo below it, the backends' included, is bounded by it (driver/undo). Each entry point sets it.
func (d *Driver) withCleanup(ctx context.Context) context.Context {
	return undo.WithCleanup(ctx, d.cfg.CleanupTimeout)
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
	ctx = d.withCleanup(ctx)
	if err := ValidateName(name); err != nil {
		return err
	}
	opts, err := ParseOptions(raw, d.cfg.Defaults, d.prov.BackendOptions())
	if err != nil {
		return fmt.Errorf("create volume %s: %w", name, err)
	}
	opts.Size = d.prov.RoundSize(opts.Size)
	opts.FrontEnd = d.cfg.FrontEnd
	opts.Given = make(map[string]bool, len(raw))
	for k := range raw {
		opts.Given[k] = true
	}
	return d.create(ctx, name, raw, opts)
}

// create is Create under the volume's lock.
func (d *Driver) create(ctx context.Context, name string, raw map[string]string, opts Options) error {
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
		if ferr := d.otherFrontEnd(vol, "take it over by a create of the same name"); ferr != nil {
			return fmt.Errorf("create volume %s: it %w: %w", name, ErrExists, ferr)
		}
		return d.compatible(ctx, name, vol, raw, opts)
	}
	if err != nil {
		return fmt.Errorf("create volume %s: %w", name, err)
	}
	d.fault(FaultCreateCreated)
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
	diffs = append(diffs, rootCompatible(raw, vol, opts)...)
	if _, ok := raw[OptAccess]; ok && vol.ReadOnly() != (opts.Access == AccessReadOnly) {
		has := vol.Access
		if has == "" {
			has = AccessReadWrite
		}
		diffs = append(diffs, fmt.Sprintf("access %s (it has %s)", opts.Access, has))
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
	ctx = d.withCleanup(ctx)
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
	if err := d.otherFrontEnd(vol, "show it"); err != nil {
		// dockerd takes a Get that fails as "no such volume here": on a swarm manager it then
		// turns to the cluster volume, which is what `docker volume rm/inspect NAME` should do.
		if _, was := d.known.LoadAndDelete(name); was {
			d.rememberKnown()
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
	if !vol.Root.IsZero() {
		info.Status["root"] = vol.Root.String() // applied when the plugin formats the volume
	}
	if vol.Access != "" {
		info.Status["access"] = vol.Access
	}
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
		if st.Attach.Map.ReadOnly {
			info.Status["mapped"] = "read-only"
		}
	} else if vol.Holder != "" {
		info.Status["holder"] = vol.Holder
	}
	d.growInfo(name, info.Status)
	_, was := d.known.Swap(name, VolumeInfo{Name: name, CreatedAt: vol.CreatedAt, Status: map[string]any{
		"size": info.Status["size"], "fstype": info.Status["fstype"]}})
	if !was {
		d.rememberKnown()
	}
	return info, nil
}

// List returns every volume the backend manages.
func (d *Driver) List(ctx context.Context) ([]VolumeInfo, error) {
	ctx = d.withCleanup(ctx)
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
	added := false
	for _, v := range vols {
		out = append(out, VolumeInfo{Name: v.Name, Mountpoint: mounted[v.Name], CreatedAt: v.CreatedAt})
		if _, ok := d.known.Load(v.Name); !ok {
			d.known.Store(v.Name, VolumeInfo{Name: v.Name, CreatedAt: v.CreatedAt})
			added = true
		}
	}
	if added { // rememberKnown walks every known name: 70 ms for 100,000
		d.rememberKnown()
	}
	return out, nil
}

// Path returns the volume's mount point on this host, or "" when it is not mounted here.
func (d *Driver) Path(ctx context.Context, name string) (string, error) {
	ctx = d.withCleanup(ctx)
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
	ctx = d.withCleanup(ctx)
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
	if err := d.refuseOther(ctx, name, "remove it"); err != nil {
		return err
	}
	if err := d.prov.Remove(ctx, name, d.cfg.RemoveAction); err != nil {
		return fmt.Errorf("remove volume %s: %w", name, err)
	}
	d.known.Delete(name)
	d.rememberKnown()
	d.fault(FaultRemoveRemoved)
	d.log.WithFields(logrus.Fields{"volume": name, "action": d.cfg.RemoveAction}).Info("volume removed")
	return nil
}
