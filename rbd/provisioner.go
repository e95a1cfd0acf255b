package rbd

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/driver/undo"
)

// Image metadata keys the provisioner keeps on the images it creates.
const (
	metaPrefix       = driver.MetaPrefix
	metaFSType       = driver.MetaFSType
	metaMkfsOptions  = driver.MetaMkfsOptions
	metaMountOptions = driver.MetaMountOptions
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
	// Log gets what cannot be returned: an undo that failed (nil: logrus' standard logger).
	Log logrus.FieldLogger
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
	c   ceph
	cfg ProvisionerConfig

	monMu sync.Mutex
	mons  []string
}

var _ driver.Provisioner = (*Provisioner)(nil)

// NewProvisioner returns the direct-RBD provisioner.
func NewProvisioner(c *Cluster, cfg ProvisionerConfig) *Provisioner {
	return newProvisioner(c, cfg)
}

func newProvisioner(c ceph, cfg ProvisionerConfig) *Provisioner {
	return &Provisioner{c: c, cfg: cfg}
}

// BackendOptions implements driver.Provisioner.
func (p *Provisioner) BackendOptions() []string { return BackendOptions() }

// BackendOptions are the -o keys of the rbd backend beyond the common ones.
func BackendOptions() []string {
	return []string{OptPool, OptDataPool, OptFeatures, OptFromSnapshot, OptFromVolume}
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

// Create implements driver.Provisioner. A Create that fails after making the image removes it.
func (p *Provisioner) Create(ctx context.Context, name string, opts driver.Options) (err error) {
	spec, co, err := p.createOptions(opts)
	if err != nil {
		return err
	}
	spec.Image = name
	// The name must not exist in the default pool or the index, wherever the new image goes.
	if existing, err := p.resolve(ctx, name); err == nil {
		return &OpError{Op: "create", What: existing.String(), Kind: driver.ErrExists, Err: errors.New("the volume exists")}
	} else if !errors.Is(err, driver.ErrNotFound) {
		return err
	}
	meta := map[string]string{metaCreated: time.Now().UTC().Format(time.RFC3339)}
	var tx undo.Stack
	defer tx.OnError(ctx, &err, p.reportUndo(name))
	fromSnap, cloned := opts.Backend[OptFromSnapshot]
	fromVol, copied := opts.Backend[OptFromVolume]
	switch {
	case cloned && copied:
		return fmt.Errorf("%w: give from-snapshot or from-volume, not both", driver.ErrInvalid)
	case copied:
		meta[metaFromVolume] = fromVol
		opts, err = p.createCopy(ctx, &tx, spec, fromVol, &co, opts)
	case cloned:
		err = p.createClone(ctx, &tx, spec, fromSnap, co, opts, meta)
	default:
		err = p.createImage(ctx, &tx, name, spec, co)
	}
	if err != nil {
		return err
	}
	maps.Copy(meta, driver.StoredMeta(opts))
	if err := p.c.SetMetas(ctx, spec, meta); err != nil {
		return err
	}
	if spec.Pool != p.cfg.Pool {
		return p.setIndex(ctx, name, spec)
	}
	return nil
}

// createOptions reads the backend options of a Create: where the image goes and how it is made.
func (p *Provisioner) createOptions(opts driver.Options) (Spec, CreateOptions, error) {
	spec := Spec{Pool: p.cfg.Pool}
	co := CreateOptions{Size: opts.Size, Features: p.cfg.Features, DataPool: p.cfg.DataPool}
	if v, ok := opts.Backend[OptPool]; ok {
		if !validPoolName(v) {
			return spec, co, fmt.Errorf("%w: pool %q is not a valid pool name", driver.ErrInvalid, v)
		}
		spec.Pool = v
	}
	if v, ok := opts.Backend[OptDataPool]; ok {
		if !validPoolName(v) {
			return spec, co, fmt.Errorf("%w: data-pool %q is not a valid pool name", driver.ErrInvalid, v)
		}
		co.DataPool = v
	}
	if v, ok := opts.Backend[OptFeatures]; ok {
		co.Features = strings.Split(strings.ReplaceAll(v, " ", ""), ",")
		if _, err := ParseFeatures(co.Features); err != nil {
			return spec, co, fmt.Errorf("option features: %w", err)
		}
	}
	return spec, co, nil
}

// createImage makes a new image for volume name at spec.
func (p *Provisioner) createImage(ctx context.Context, tx *undo.Stack, name string, spec Spec, co CreateOptions) error {
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
	tx.Push("remove image "+spec.String(), func(ctx context.Context) error { return p.c.Remove(ctx, spec) })
	return nil
}

// createClone makes spec a clone of snapshot src (-o from-snapshot), grown to the size asked
// for if that is larger.
func (p *Provisioner) createClone(ctx context.Context, tx *undo.Stack, spec Spec, src string, co CreateOptions, opts driver.Options, meta map[string]string) error {
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
	tx.Push("remove clone "+spec.String(), func(ctx context.Context) error { return p.c.Remove(ctx, spec) })
	info, err := p.c.Info(ctx, spec)
	if err != nil {
		return err
	}
	if opts.SizeGiven && opts.Size > info.Size { // without -o size, the clone keeps the snapshot's size
		return p.c.Resize(ctx, spec, opts.Size)
	}
	return nil
}

// reportUndo logs an undo of an operation on volume name that failed (the caller's error says
// it too).
func (p *Provisioner) reportUndo(name string) func(error) {
	return func(err error) {
		p.log().WithField("volume", name).WithError(err).Warn("undo failed: what it left stays until removed by hand")
	}
}

func (p *Provisioner) log() logrus.FieldLogger {
	if p.cfg.Log != nil {
		return p.cfg.Log
	}
	return logrus.StandardLogger()
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
		Name: name, Image: spec, Size: info.Size,
		Status: map[string]any{"pool": spec.Pool, "features": strings.Join(info.Features, ",")},
	}
	vol.SetStored(func(k string) string { return meta[k] })
	if t, err := time.Parse(time.RFC3339, meta[metaCreated]); err == nil {
		vol.CreatedAt = t
	}
	if info.Parent != "" {
		vol.Status["parent"] = info.Parent
	}
	if v := meta[metaFromSnapshot]; v != "" {
		vol.Status[OptFromSnapshot] = v
	}
	if v := meta[metaFromVolume]; v != "" {
		vol.Status[OptFromVolume] = v
	}
	if info.DataPool != "" {
		vol.Status["data-pool"] = info.DataPool
	}
	vol.Holder = holderOf(d, nil)
	if readers, _, locked := otherLocks(d.Lockers, nil); !locked && len(readers) > 0 {
		vol.Holder = "read-only by " + describeLocks(readers)
	}
	return vol
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
		err := p.c.Remove(ctx, spec)
		if errors.Is(err, driver.ErrInUse) && p.dropStaleCopySnaps(ctx, name, spec) {
			err = p.c.Remove(ctx, spec)
		}
		if err != nil {
			if errors.Is(err, driver.ErrInUse) {
				return fmt.Errorf("%w (it has snapshots or clones: remove them first, or set REMOVE_ACTION=trash; a -o from-volume copy of it being made holds a snapshot until the copy ends)", err)
			}
			return err
		}
	}
	if spec.Pool != p.cfg.Pool {
		return p.unindex(ctx, name)
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
		if p.cfg.HostID != "" && !l.Shared { // a reader records no clients
			// Best effort: a record left behind names this host's identity, and is fenced only
			// by a host taking the volume over from this identity.
			if err := p.c.ClearHolder(ctx, spec, p.cfg.HostID); err != nil {
				p.log().WithFields(logrus.Fields{"volume": name, "image": spec.String()}).WithError(err).
					Warn("cannot clear this host's record of clients; a host taking the volume over from this identity fences them")
			}
		}
		if err := p.c.BreakHostLock(ctx, spec, l); err != nil && !errors.Is(err, driver.ErrNotFound) {
			return err
		}
	}
	return nil
}

func (p *Provisioner) cookie() string { return HostCookie(p.cfg.Host, p.cfg.HostID) }
