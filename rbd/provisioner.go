package rbd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// Image metadata keys the provisioner keeps on the images it creates.
const (
	metaPrefix       = "docker-plugin."
	metaFSType       = metaPrefix + "fstype"
	metaMkfsOptions  = metaPrefix + "mkfs-options"
	metaMountOptions = metaPrefix + "mount-options"
	metaCreated      = metaPrefix + "created"
	// metaFromSnapshot is the snapshot a clone was made from (pool/image@snap): the parent link
	// goes when the clone is flattened, this record stays.
	metaFromSnapshot = metaPrefix + "from-snapshot"
	// indexObject is a RADOS object in the default pool whose omap maps the names of volumes
	// created in other pools (-o pool=...) to pool/image, so that Get finds them from any host.
	indexObject = "ceph-docker-plugin.volumes"
	// cookiePrefix starts the cookie of the host lock (see Cluster.LockHost and HostCookie) a
	// host holds while it has the volume.
	cookiePrefix = "ceph-docker-plugin/"
)

// Backend option keys (docker volume create -o).
const (
	OptPool         = "pool"
	OptDataPool     = "data-pool"
	OptFeatures     = "features"
	OptFromSnapshot = "from-snapshot"
)

// ProvisionerConfig are the direct-RBD backend's settings.
type ProvisionerConfig struct {
	Pool     string   // RBD_POOL
	DataPool string   // RBD_DATA_POOL
	Features []string // RBD_FEATURES
	Host     string   // NODE_NAME: this host's name as people see it
	// HostID is this host's identity (driver.HostID): its lock cookie is
	// "ceph-docker-plugin/<Host>/<HostID>". Empty: the cookie is "ceph-docker-plugin/<Host>", the
	// older name-only format (tests).
	HostID string
	// Local lists the Ceph clients of this host's mappings (nil: none known), to tell this
	// host's clients from another machine's among an image's watchers.
	Local LocalClients
}

// Provisioner is the direct-RBD driver.Provisioner: a volume is an image named after it in
// RBD_POOL (or in the pool given at create time, found through an index in RBD_POOL).
//
// A host holds a volume with a host lock on its image header (cookie
// "ceph-docker-plugin/<host>/<host ID>"): taking it is atomic, so two hosts cannot both attach,
// it names the holder in refusals, and it outlives a crashed plugin (the restarted plugin
// recognises its own identity). The holder records its Ceph clients on the header (see
// RecordClients) for a host that may have to fence it.
type Provisioner struct {
	c   *Cluster
	cfg ProvisionerConfig

	monMu sync.Mutex
	mons  []string
}

var _ driver.Provisioner = (*Provisioner)(nil)

// NewProvisioner returns the direct-RBD provisioner.
func NewProvisioner(c *Cluster, cfg ProvisionerConfig) *Provisioner {
	return &Provisioner{c: c, cfg: cfg}
}

// BackendOptions implements driver.Provisioner.
func (p *Provisioner) BackendOptions() []string { return BackendOptions() }

// BackendOptions are the -o keys of the rbd backend beyond the common ones.
func BackendOptions() []string {
	return []string{OptPool, OptDataPool, OptFeatures, OptFromSnapshot}
}

func validPoolName(s string) bool {
	return s != "" && len(s) <= 128 && !strings.ContainsAny(s, "/@ \t\n\x00,")
}

// resolve finds where a volume's image lives.
func (p *Provisioner) resolve(ctx context.Context, name string) (Spec, error) {
	spec := Spec{Pool: p.cfg.Pool, Image: name}
	_, err := p.c.ImageID(ctx, spec) // no open of the image: see ImageID
	if err == nil {
		return spec, nil
	}
	if !errors.Is(err, driver.ErrNotFound) {
		return spec, err
	}
	idx, ierr := p.index(ctx)
	if ierr != nil {
		return spec, ierr
	}
	if where, ok := idx[name]; ok {
		return where, nil
	}
	return spec, &OpError{Op: "get", What: spec.String(), Kind: driver.ErrNotFound,
		Err: fmt.Errorf("no volume %q in pool %s", name, p.cfg.Pool)}
}

// describe finds a volume's image (in the default pool, else through the index) and describes it
// with one open of the image.
func (p *Provisioner) describe(ctx context.Context, name string) (Spec, Description, error) {
	spec := Spec{Pool: p.cfg.Pool, Image: name}
	d, err := p.c.Describe(ctx, spec)
	if err == nil {
		return spec, d, nil
	}
	if !errors.Is(err, driver.ErrNotFound) {
		return spec, d, err
	}
	idx, ierr := p.index(ctx)
	if ierr != nil {
		return spec, d, ierr
	}
	if where, ok := idx[name]; ok {
		d, err := p.c.Describe(ctx, where)
		return where, d, err
	}
	return spec, d, &OpError{Op: "get", What: spec.String(), Kind: driver.ErrNotFound,
		Err: fmt.Errorf("no volume %q in pool %s", name, p.cfg.Pool)}
}

func (p *Provisioner) index(ctx context.Context) (map[string]Spec, error) {
	io, err := p.c.ioctx(ctx, p.cfg.Pool, "")
	if err != nil {
		return nil, err
	}
	raw, err := call(ctx, p.c, "read index", p.cfg.Pool+"/"+indexObject, func() (map[string][]byte, error) {
		return io.GetAllOmapValues(indexObject, "", "", 1000)
	}, nil)
	if errors.Is(err, driver.ErrNotFound) {
		return map[string]Spec{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := make(map[string]Spec, len(raw))
	for name, v := range raw {
		pool, image, ok := strings.Cut(string(v), "/")
		if ok {
			out[name] = Spec{Pool: pool, Image: image}
		}
	}
	return out, nil
}

func (p *Provisioner) setIndex(ctx context.Context, name string, spec Spec) error {
	io, err := p.c.ioctx(ctx, p.cfg.Pool, "")
	if err != nil {
		return err
	}
	return p.c.do(ctx, "write index", p.cfg.Pool+"/"+indexObject, func() error {
		return io.SetOmap(indexObject, map[string][]byte{name: []byte(spec.Pool + "/" + spec.Image)})
	}, nil)
}

func (p *Provisioner) dropIndex(ctx context.Context, name string) error {
	io, err := p.c.ioctx(ctx, p.cfg.Pool, "")
	if err != nil {
		return err
	}
	err = p.c.do(ctx, "write index", p.cfg.Pool+"/"+indexObject, func() error {
		return io.RmOmapKeys(indexObject, []string{name})
	}, nil)
	if errors.Is(err, driver.ErrNotFound) {
		return nil
	}
	return err
}

// Create implements driver.Provisioner.
func (p *Provisioner) Create(ctx context.Context, name string, opts driver.Options) error {
	spec := Spec{Pool: p.cfg.Pool, Image: name}
	if v, ok := opts.Backend[OptPool]; ok {
		if !validPoolName(v) {
			return fmt.Errorf("%w: pool %q is not a valid pool name", driver.ErrInvalid, v)
		}
		spec.Pool = v
	}
	co := CreateOptions{Size: opts.Size, Features: p.cfg.Features, DataPool: p.cfg.DataPool}
	if v, ok := opts.Backend[OptDataPool]; ok {
		if !validPoolName(v) {
			return fmt.Errorf("%w: data-pool %q is not a valid pool name", driver.ErrInvalid, v)
		}
		co.DataPool = v
	}
	if v, ok := opts.Backend[OptFeatures]; ok {
		co.Features = strings.Split(strings.ReplaceAll(v, " ", ""), ",")
		if _, err := ParseFeatures(co.Features); err != nil {
			return fmt.Errorf("option features: %w", err)
		}
	}
	// The name must not exist in the default pool or the index, wherever the new image goes.
	if existing, err := p.resolve(ctx, name); err == nil {
		return &OpError{Op: "create", What: existing.String(), Kind: driver.ErrExists, Err: errors.New("the volume exists")}
	} else if !errors.Is(err, driver.ErrNotFound) {
		return err
	}

	meta := map[string]string{metaFSType: opts.FSType, metaCreated: time.Now().UTC().Format(time.RFC3339)}
	var tx []func(context.Context)
	undo := func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for i := len(tx) - 1; i >= 0; i-- {
			tx[i](cctx)
		}
	}
	if src, ok := opts.Backend[OptFromSnapshot]; ok {
		parent, err := p.parseSnapshot(ctx, src)
		if err != nil {
			return err
		}
		meta[metaFromSnapshot] = parent.String()
		if err := p.c.ProtectSnap(ctx, parent); err != nil {
			return fmt.Errorf("from-snapshot %s: %w", src, err)
		}
		if err := p.c.Clone(ctx, parent, spec, co); err != nil {
			return fmt.Errorf("from-snapshot %s: %w", src, err)
		}
		tx = append(tx, func(c context.Context) { _ = p.c.Remove(c, spec) })
		info, err := p.c.Info(ctx, spec)
		if err != nil {
			undo()
			return err
		}
		if opts.SizeGiven && opts.Size > info.Size { // without -o size, the clone keeps the snapshot's size
			if err := p.c.Resize(ctx, spec, opts.Size); err != nil {
				undo()
				return err
			}
		}
	} else {
		if err := p.c.Create(ctx, spec, co); err != nil {
			if errors.Is(err, driver.ErrExists) && spec.Pool != p.cfg.Pool {
				// An image of that name in the other pool that the index does not know: a Create
				// interrupted (kill -9) between making the image and indexing it. Index it, so
				// that the volume is found again (the caller then checks it is compatible).
				if ierr := p.setIndex(ctx, name, spec); ierr != nil {
					return errors.Join(err, ierr)
				}
			}
			return err
		}
		tx = append(tx, func(c context.Context) { _ = p.c.Remove(c, spec) })
	}
	if len(opts.MkfsOptions) > 0 {
		meta[metaMkfsOptions] = strings.Join(opts.MkfsOptions, " ")
	}
	if opts.MountOptions != "" {
		meta[metaMountOptions] = opts.MountOptions
	}
	for k, v := range opts.Root.Meta() {
		meta[metaPrefix+k] = v
	}
	if err := p.c.SetMetas(ctx, spec, meta); err != nil {
		undo()
		return err
	}
	if spec.Pool != p.cfg.Pool {
		if err := p.setIndex(ctx, name, spec); err != nil {
			undo()
			return err
		}
	}
	return nil
}

// parseSnapshot reads "image@snap" or "volume@snap" (a volume name resolves to its image).
func (p *Provisioner) parseSnapshot(ctx context.Context, s string) (Spec, error) {
	img, snap, ok := strings.Cut(s, "@")
	if !ok || img == "" || snap == "" || strings.ContainsAny(snap, "/@") {
		return Spec{}, fmt.Errorf("%w: from-snapshot %q: use image@snapshot or volume@snapshot", driver.ErrInvalid, s)
	}
	var spec Spec
	if pool, image, ok := strings.Cut(img, "/"); ok {
		spec = Spec{Pool: pool, Image: image}
	} else {
		var err error
		if spec, err = p.resolve(ctx, img); err != nil {
			return Spec{}, fmt.Errorf("from-snapshot %s: %w", s, err)
		}
	}
	spec.Snap = snap
	return spec, nil
}

// Get implements driver.Provisioner.
func (p *Provisioner) Get(ctx context.Context, name string) (driver.Volume, error) {
	spec, d, err := p.describe(ctx, name)
	if err != nil {
		return driver.Volume{}, err
	}
	return volumeOf(name, spec, d), nil
}

// volumeOf is the driver.Volume of an image as describe read it.
func volumeOf(name string, spec Spec, d Description) driver.Volume {
	info, meta := d.Info, d.Meta
	vol := driver.Volume{
		Name: name, Image: spec, Size: info.Size, FSType: meta[metaFSType],
		MountOptions: meta[metaMountOptions],
		Root:         driver.RootFromMeta(func(k string) string { return meta[metaPrefix+k] }),
		Status:       map[string]any{"pool": spec.Pool, "features": strings.Join(info.Features, ",")},
	}
	if v := meta[metaMkfsOptions]; v != "" {
		vol.MkfsOptions = driver.SplitMkfsOptions(v)
	}
	if t, err := time.Parse(time.RFC3339, meta[metaCreated]); err == nil {
		vol.CreatedAt = t
	}
	if info.Parent != "" {
		vol.Status["parent"] = info.Parent
	}
	if v := meta[metaFromSnapshot]; v != "" {
		vol.Status[OptFromSnapshot] = v
	}
	if info.DataPool != "" {
		vol.Status["data-pool"] = info.DataPool
	}
	vol.Holder = holderOf(d, nil)
	return vol
}

// holder names who holds the image besides this host (owns says which host locks are this
// host's).
func (p *Provisioner) holder(ctx context.Context, spec Spec, owns func(Locker) bool) (string, error) {
	d, err := p.c.Describe(ctx, spec)
	if err != nil {
		return "", err
	}
	return holderOf(d, owns), nil
}

// holderOf names who holds an image already described, besides this host: another host's lock
// (owns says which locks are this host's; nil: none), or a client that has it open or mapped
// without the plugin. "" when nobody does.
func holderOf(d Description, owns func(Locker) bool) string {
	if l, ok := otherLock(d.Lockers, owns); ok {
		return describeLock(l)
	}
	for _, l := range d.Lockers {
		if owns != nil && owns(l) {
			// This host holds it: the watchers are its own mapping (see checkIdentity).
			return ""
		}
	}
	var others []string
	for _, w := range d.Watchers {
		others = append(others, w.Addr)
	}
	if len(others) > 0 {
		return fmt.Sprintf("client(s) %s (mapped without this plugin, or by a plugin that crashed)", strings.Join(others, ", "))
	}
	return ""
}

// describeLock names the holder of a host lock for people.
func describeLock(l Locker) string {
	name, id, _ := ParseCookie(l.Cookie)
	if id == "" {
		return fmt.Sprintf("host %s (%s at %s)", name, l.Client, l.Addr)
	}
	return fmt.Sprintf("host %s (host ID %s, %s at %s)", name, driver.ShortHostID(id), l.Client, l.Addr)
}

// otherLock finds a plugin's host lock that is not this host's.
func otherLock(lockers []Locker, owns func(Locker) bool) (Locker, bool) {
	for _, l := range lockers {
		if _, _, ok := ParseCookie(l.Cookie); ok && (owns == nil || !owns(l)) {
			return l, true
		}
	}
	return Locker{}, false
}

// owns says whether host lock l is this host's: taken under this host's identity, or taken under
// this host's name alone (the older name-only format), and named by this host's own state
// (claimed: the cookie its state recorded for the volume). A name is not enough: two machines
// can share one, and a host that lost its STATE_DIR cannot tell its old lock from another's.
func (p *Provisioner) owns(l Locker, claimed string) bool {
	name, id, ok := ParseCookie(l.Cookie)
	switch {
	case !ok:
		return false
	case id != "":
		return p.cfg.HostID != "" && id == p.cfg.HostID
	case name != p.cfg.Host:
		return false
	}
	return p.cfg.HostID == "" || (claimed != "" && l.Cookie == claimed)
}

// sameName adds to a refusal naming another host's lock what to do when that host has this
// host's NODE_NAME.
func (p *Provisioner) sameName(l Locker) string {
	name, id, _ := ParseCookie(l.Cookie)
	if name != p.cfg.Host {
		return ""
	}
	if id == "" {
		return fmt.Sprintf(" (a lock in the older format, naming only the host %s, that this host's state does not name: another machine named %s, or this host before it lost its STATE_DIR)", name, name)
	}
	return fmt.Sprintf(" (it has this host's NODE_NAME, not its identity %s: another machine named %s, or this host before it lost its STATE_DIR/%s)", driver.ShortHostID(p.cfg.HostID), name, driver.HostIDFile)
}

// List implements driver.Provisioner: the images in the default pool whose names are valid
// volume names, and the indexed volumes of other pools. One call per pool, whatever the count.
func (p *Provisioner) List(ctx context.Context) ([]driver.Volume, error) {
	names, err := p.c.List(ctx, p.cfg.Pool, "")
	if err != nil {
		return nil, err
	}
	idx, err := p.index(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]driver.Volume, 0, len(names)+len(idx))
	for _, n := range names {
		if driver.ValidateName(n) == nil {
			out = append(out, driver.Volume{Name: n, Image: Spec{Pool: p.cfg.Pool, Image: n}})
		}
	}
	for n, spec := range idx {
		if !slices.Contains(names, n) {
			out = append(out, driver.Volume{Name: n, Image: spec})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Remove implements driver.Provisioner.
func (p *Provisioner) Remove(ctx context.Context, name string, action driver.RemoveAction) error {
	spec, d, err := p.describe(ctx, name)
	if err != nil {
		return err
	}
	if holder := holderOf(d, nil); holder != "" {
		return fmt.Errorf("%w: volume %s is in use by %s; stop its containers there first", driver.ErrInUse, name, holder)
	}
	switch action {
	case driver.RemoveKeep:
		kept := driver.KeptName(name, time.Now())
		if err := p.c.Rename(ctx, spec, kept); err != nil {
			return fmt.Errorf("keep volume %s as %s/%s: %w", name, spec.Pool, kept, err)
		}
	case driver.RemoveTrash:
		if err := p.c.Trash(ctx, spec, 0); err != nil {
			return err
		}
	default:
		if err := p.c.Remove(ctx, spec); err != nil {
			if errors.Is(err, driver.ErrInUse) {
				return fmt.Errorf("%w (it has snapshots or clones: remove them first, or set REMOVE_ACTION=trash)", err)
			}
			return err
		}
	}
	if spec.Pool != p.cfg.Pool {
		return p.dropIndex(ctx, name)
	}
	return nil
}

func (p *Provisioner) monitors(ctx context.Context) ([]string, error) {
	p.monMu.Lock()
	defer p.monMu.Unlock()
	if p.mons != nil {
		return p.mons, nil
	}
	mons, err := p.c.Monitors(ctx)
	if err != nil {
		return nil, err
	}
	p.mons = mons
	return mons, nil
}

// Attach implements driver.Provisioner: it takes the image's host lock for this host.
func (p *Provisioner) Attach(ctx context.Context, name string, req driver.AttachRequest) (driver.Attachment, error) {
	spec, d, err := p.describe(ctx, name)
	if err != nil {
		return driver.Attachment{}, err
	}
	owns := func(l Locker) bool { return p.owns(l, req.Claimed) }
	att := driver.Attachment{}
	held := ""    // the cookie of this host's lock
	took := false // taken by this call
	for _, l := range d.Lockers {
		if owns(l) {
			held = l.Cookie // taken before a restart of this host's plugin
		}
	}
	if held != "" {
		if err := p.checkIdentity(ctx, name, spec, d); err != nil {
			return att, err
		}
	} else {
		if holder := holderOf(d, owns); holder != "" {
			other, locked := otherLock(d.Lockers, owns)
			if locked && !req.TakeOver {
				return att, fmt.Errorf("%w: volume %s is in use by %s%s; stop it there, or if that host is dead, set LOCK_BREAK=on to fence it and take the volume over",
					driver.ErrBusyElsewhere, name, holder, p.sameName(other))
			}
			// A live holder (a host with the volume mapped, even idle) keeps its watch on the
			// image; a dead one loses it within WatchLapse. LOCK_BREAK takes a volume over only
			// from a dead holder, and a holder with no host lock is only watches, which a dead
			// client leaves behind (a plugin that crashed, or this host before a quick reboot):
			// wait for them to lapse.
			live, err := p.c.WaitUnwatched(ctx, spec, TakeOverReserve)
			if err != nil {
				return att, fmt.Errorf("volume %s, in use by %s: %w", name, holder, err)
			}
			if len(live) > 0 && req.TakeOver {
				return att, fmt.Errorf("%w: volume %s is in use by %s; %w", driver.ErrBusyElsewhere, name, holder, aliveError(live))
			}
			if len(live) > 0 {
				return att, fmt.Errorf("%w: volume %s is in use by %s, which kept watching the image while this host waited for it to go (a dead client's watch lapses within %s): unmap it there first",
					driver.ErrBusyElsewhere, name, holder, WatchLapse)
			}
			// The holder may have let go while this host waited: look again.
			if spec, d, err = p.describe(ctx, name); err != nil {
				return att, err
			}
			if holder := holderOf(d, owns); holder != "" {
				if !req.TakeOver {
					return att, fmt.Errorf("%w: volume %s was just attached by %s", driver.ErrBusyElsewhere, name, holder)
				}
				others := slices.DeleteFunc(slices.Clone(d.Lockers), owns)
				if att.Fenced, err = p.takeOver(ctx, spec, others); err != nil {
					return att, fmt.Errorf("take volume %s over from %s: %w", name, holder, err)
				}
			}
		}
		held = p.cookie()
		desc := fmt.Sprintf("host %s, host ID %s, mount %s, since %s", req.Host, p.cfg.HostID, req.MountID, time.Now().UTC().Format(time.RFC3339))
		if err := p.c.LockHost(ctx, spec, d.Info.ID, held, desc); err != nil {
			if errors.Is(err, driver.ErrBusyElsewhere) {
				holder, _ := p.holder(ctx, spec, owns)
				return att, fmt.Errorf("%w: volume %s was just attached by %s", driver.ErrBusyElsewhere, name, holder)
			}
			return att, err
		}
		took = true
	}
	mons, err := p.monitors(ctx)
	if err != nil {
		if took {
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = p.Detach(cctx, name, driver.Attachment{ID: held, Map: driver.MapRequest{ImageSpec: spec}})
		}
		return att, err
	}
	att.ID = held
	att.Map = driver.MapRequest{ImageSpec: spec, ReadOnly: req.ReadOnly, Monitors: mons, User: p.c.User()}
	vol := volumeOf(name, spec, d)
	// Asked only now that this host holds the volume: nobody else writes it from here on.
	vol.Unwritten = p.c.EndsUnwritten(ctx, d.Info, driver.SignatureWindow)
	att.Volume = &vol // the first Mount needs no Get of its own
	return att, nil
}

// checkIdentity makes sure that a volume held under this host's identity is not open on another
// machine. A lock that names this host's identity, but whose image a client that is not this
// host's keeps open, is another machine's: one using a copy of this host's STATE_DIR (a cloned
// disk), since identities are not shared by accident. A dead client of this host (the rbd-fuse
// of a plugin that crashed) lapses within WatchLapse, which it waits for.
func (p *Provisioner) checkIdentity(ctx context.Context, name string, spec Spec, d Description) error {
	if len(d.Watchers) == 0 {
		return nil
	}
	self, err := p.c.ClientAddr()
	if err != nil {
		return err
	}
	addrs, exact := localAddrs(ctx, p.cfg.Local)
	if len(foreignWatchers(d.Watchers, addrs, exact, addrIP(self))) == 0 {
		return nil
	}
	live, err := p.c.WaitForeign(ctx, spec, p.cfg.Local, TakeOverReserve)
	if err != nil {
		return fmt.Errorf("volume %s: %w", name, err)
	}
	if len(live) == 0 {
		return nil
	}
	return fmt.Errorf("%w: volume %s is held under this host's identity (%s), but Ceph client(s) %s, not this host's, keep it open: another machine uses this host's identity (a copy of its STATE_DIR, as on a cloned disk) or maps the image by hand. On that machine, stop the plugin, remove %s from its STATE_DIR and start it again (it then makes an identity of its own); this host leaves the volume alone meanwhile",
		driver.ErrBusyElsewhere, name, DescribeHolder(p.cfg.Host, p.cfg.HostID), watcherAddrs(live), driver.HostIDFile)
}

// watcherAddrs lists watchers' addresses for a message.
func watcherAddrs(ws []Watcher) string {
	out := make([]string, 0, len(ws))
	for _, w := range ws {
		out = append(out, w.Addr)
	}
	return strings.Join(out, ", ")
}

// TakeOverReserve is the part of a call's deadline that a LOCK_BREAK takeover leaves, after
// waiting for the holder's watch to lapse, for the rest of the first Mount (fence, map, mount).
const TakeOverReserve = 10 * time.Second

// takeOver fences every client of the image's other holders (blocklist: the watchers, the
// exclusive-lock owners, the clients the holder recorded, the host locks' own clients) and breaks
// their host locks.
func (p *Provisioner) takeOver(ctx context.Context, spec Spec, others []Locker) ([]string, error) {
	holder := ""
	for _, l := range others {
		if _, id, ok := ParseCookie(l.Cookie); ok && id != "" {
			holder = id
		}
	}
	fenced, err := p.c.BreakLock(ctx, spec, holder)
	if err != nil {
		return fenced, err
	}
	for _, l := range others {
		if !slices.Contains(fenced, normalizeAddr(l.Addr)) {
			if err := p.c.Blocklist(ctx, l.Addr, 0); err != nil {
				return fenced, err
			}
			fenced = append(fenced, normalizeAddr(l.Addr))
		}
		if err := p.c.BreakHostLock(ctx, spec, l); err != nil && !errors.Is(err, driver.ErrNotFound) {
			return fenced, err
		}
	}
	return fenced, nil
}

// RecordClients implements driver.Provisioner: it records this host's clients of the image
// (its own connection, the mapping's client, the image's watchers) with its identity on the
// image header, for a host that may have to fence it.
func (p *Provisioner) RecordClients(ctx context.Context, name string, att driver.Attachment, m driver.Mapping) error {
	if p.cfg.HostID == "" {
		return nil // nothing could match the record to this host's lock
	}
	spec := att.Map.ImageSpec
	if spec.Image == "" {
		spec = m.ImageSpec
	}
	_, err := p.c.RecordClients(ctx, spec, p.cfg.Host, p.cfg.HostID, []string{m.Client})
	return err
}

// Detach implements driver.Provisioner: it releases this host's lock (and its record of clients).
func (p *Provisioner) Detach(ctx context.Context, name string, att driver.Attachment) error {
	spec := att.Map.ImageSpec
	if spec.Image == "" {
		var err error
		if spec, err = p.resolve(ctx, name); errors.Is(err, driver.ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
	}
	lockers, err := p.c.Lockers(ctx, spec)
	if errors.Is(err, driver.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, l := range lockers {
		if !p.owns(l, att.ID) {
			continue
		}
		if p.cfg.HostID != "" {
			// Best effort: a record left behind names this host's identity, and is fenced only
			// by a host taking the volume over from this identity.
			_ = p.c.ClearHolder(ctx, spec, p.cfg.HostID)
		}
		if err := p.c.BreakHostLock(ctx, spec, l); err != nil && !errors.Is(err, driver.ErrNotFound) {
			return err
		}
	}
	return nil
}

func (p *Provisioner) cookie() string { return HostCookie(p.cfg.Host, p.cfg.HostID) }
