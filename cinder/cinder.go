// Package cinder is the Cinder backend: volumes are Cinder volumes (RBD backend) found by their
// Docker name, authenticated by Keystone v3 (password or application credential), and a host
// that mounts a volume records the container as a Cinder attachment (its host name, a UUID derived
// from Docker's mount ID, and the full ID as the attachment's mount point), so that `openstack
// volume show` says which container on which host holds it. The RBD pool/image and monitors come
// from the attachment's connection info; the host maps them with its own cephx user.
package cinder

import (
	"context"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/attachments"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/snapshots"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumetypes"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/projects"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// Backend option keys.
const (
	OptProjectID        = "project-id"
	OptVolumeType       = "volume-type"
	OptAvailabilityZone = "availability-zone"
	OptSnapshotID       = "snapshot-id"
	OptSourceVolumeID   = "source-volume-id"
)

// Metadata the plugin keeps on the Cinder volumes it creates.
const (
	metaManaged      = "docker-plugin.managed-by"
	metaFSType       = "docker-plugin.fstype"
	metaMkfsOptions  = "docker-plugin.mkfs-options"
	metaMountOptions = "docker-plugin.mount-options"
	managedBy        = "ceph-docker-plugin"
	// microversion: attachments create (3.27), complete (3.44), mode (3.54).
	microversion = "3.54"
)

// Config are the Cinder backend's settings.
type Config struct {
	Auth   gophercloud.AuthOptions // from OS_*; AllowReauth is forced on
	Region string
	CACert string // OS_CACERT: PEM bundle for Keystone's and Cinder's TLS
	Host   string // NODE_NAME: this host's name as people see it, recorded in attachments
	// HostID is this host's identity (driver.HostID), recorded in attachments with Host: an
	// attachment is this host's when it carries this identity. Empty: attachments name the host
	// alone (tests).
	HostID   string
	CephUser string // the host's own cephx user for mapping (Cinder returns no key)
	// Fencer fences a dead holder's Ceph clients for LOCK_BREAK=on takeovers (nil: refused).
	Fencer Fencer
	// Watchers tells who has a volume's RBD image open (nil: only attachments are checked).
	Watchers Watchers
	// Recorder records this host's Ceph clients of a mapped volume, for a host that may have to
	// fence them (nil: none recorded; a takeover fences what it sees).
	Recorder Recorder
	// Poll is the longest interval between status polls (default 500 ms); polls start at 50 ms.
	Poll time.Duration
}

// Fencer blocklists every Ceph client that holds the exclusive lock of an RBD image and breaks
// that lock, returning the fenced addresses: what a LOCK_BREAK=on takeover does to the dead
// holder before its Cinder attachment is deleted. A holder whose client still watches the image
// is alive: Fence refuses it with ErrBusyElsewhere (after waiting a while for the watch to lapse).
// holder is the dead host's identity ("" when its attachment has none): the clients it recorded
// (see Recorder) are fenced too.
type Fencer interface {
	Fence(ctx context.Context, spec driver.ImageSpec, holder string) ([]string, error)
}

// Recorder records, on the RBD image, this host (name and identity) as its holder with the
// addresses of the Ceph clients it uses the image through (its own, the mapping's client when
// known), and clears that record.
type Recorder interface {
	RecordClients(ctx context.Context, spec driver.ImageSpec, host, id string, clients []string) error
	ClearClients(ctx context.Context, spec driver.ImageSpec, id string) error
}

// Watchers lists the Ceph clients that keep an RBD image open: a mapping watches its image. A
// new attachment is completed only when no client does, so that an image mapped outside Cinder's
// attachments (by hand, or by a host whose attachment was deleted) is never mapped a second time.
type Watchers interface {
	// LiveWatchers waits a while for watches to lapse (a dead client's does within 30 s, never
	// past ctx's deadline) and returns the addresses of the clients still watching.
	LiveWatchers(ctx context.Context, spec driver.ImageSpec) ([]string, error)
	// ForeignWatchers is LiveWatchers for the clients that are not this host's.
	ForeignWatchers(ctx context.Context, spec driver.ImageSpec) ([]string, error)
}

// Provisioner is the Cinder driver.Provisioner.
//
// Volumes live in the configured project, or in another project named by -o project-id at
// create time. Every call looks in the configured project first, then in the other projects
// the credentials can work in (Keystone's /v3/auth/projects, cached for a minute), so that a
// volume created with -o project-id is found by name on every host, like any other.
type Provisioner struct {
	cfg Config

	mu       sync.Mutex
	clients  map[string]*gophercloud.ServiceClient // by project id ("" = the configured scope)
	identity *gophercloud.ServiceClient            // Keystone, in the configured scope
	home     string                                // the configured scope's project id
	others   []string                              // other projects the credentials can use
	othersAt time.Time

	after func(time.Duration) <-chan time.Time // time.After: the wait between status polls
}

// othersTTL is how long the list of other projects is trusted.
const othersTTL = time.Minute

// found is a volume and the client of the project it lives in.
type found struct {
	c       *gophercloud.ServiceClient
	v       volumes.Volume
	project string
}

var _ driver.Provisioner = (*Provisioner)(nil)

// New returns the Cinder provisioner. It authenticates lazily, on the first call.
func New(cfg Config) *Provisioner {
	if cfg.Poll <= 0 {
		cfg.Poll = 500 * time.Millisecond
	}
	cfg.Auth.AllowReauth = true
	return &Provisioner{cfg: cfg, clients: map[string]*gophercloud.ServiceClient{}, after: time.After}
}

// BackendOptions implements driver.Provisioner.
func (p *Provisioner) BackendOptions() []string {
	return []string{OptProjectID, OptVolumeType, OptAvailabilityZone, OptSnapshotID, OptSourceVolumeID}
}

// client returns a Cinder v3 client scoped to projectID ("" for the configured project).
func (p *Provisioner) client(ctx context.Context, projectID string) (*gophercloud.ServiceClient, error) {
	p.mu.Lock()
	c := p.clients[projectID]
	p.mu.Unlock()
	if c != nil {
		return c, nil
	}
	opts := p.cfg.Auth
	if projectID != "" {
		opts.TenantID, opts.TenantName = "", ""
		opts.Scope = &gophercloud.AuthScope{ProjectID: projectID}
	}
	provider, err := openstack.NewClient(opts.IdentityEndpoint)
	if err != nil {
		return nil, fmt.Errorf("%w: OS_AUTH_URL %q: %v", driver.ErrInvalid, opts.IdentityEndpoint, err)
	}
	if p.cfg.CACert != "" {
		pem, err := os.ReadFile(p.cfg.CACert)
		if err != nil {
			return nil, fmt.Errorf("OS_CACERT: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: OS_CACERT %s holds no PEM certificate", driver.ErrInvalid, p.cfg.CACert)
		}
		provider.HTTPClient = http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	}
	if err := openstack.Authenticate(ctx, provider, opts); err != nil {
		if projectID != "" && gophercloud.ResponseCodeIs(err, http.StatusUnauthorized) {
			// Keystone answers 401 both for bad credentials and for a project without a role:
			// if the configured scope works, it is the project.
			if _, derr := p.client(ctx, ""); derr == nil {
				return nil, fmt.Errorf("%w: Keystone at %s does not let user %s work in project %s (does the user have a role there?)",
					driver.ErrPermission, opts.IdentityEndpoint, opts.Username, projectID)
			}
		}
		return nil, authError(opts, projectID, err)
	}
	c, err = openstack.NewBlockStorageV3(provider, gophercloud.EndpointOpts{Region: p.cfg.Region})
	if err != nil {
		return nil, fmt.Errorf("cinder: no block-storage v3 endpoint in the Keystone catalog (region %q): %w", p.cfg.Region, err)
	}
	c.Microversion = microversion
	var ident *gophercloud.ServiceClient
	home := ""
	if projectID == "" {
		if ident, err = openstack.NewIdentityV3(provider, gophercloud.EndpointOpts{Region: p.cfg.Region}); err != nil {
			ident = nil // listing other projects is then not possible; the configured one works
		}
		if r, ok := provider.GetAuthResult().(tokens.CreateResult); ok {
			if proj, err := r.ExtractProject(); err == nil && proj != nil {
				home = proj.ID
			}
		}
	}
	p.mu.Lock()
	p.clients[projectID] = c
	if projectID == "" {
		p.identity, p.home = ident, home
	}
	p.mu.Unlock()
	return c, nil
}

// otherProjects lists the projects other than the configured one that the credentials can
// work in. A failure to list (an application credential is bound to its project) means none.
func (p *Provisioner) otherProjects(ctx context.Context) []string {
	p.mu.Lock()
	ident, home, others, at := p.identity, p.home, p.others, p.othersAt
	p.mu.Unlock()
	if ident == nil || time.Since(at) < othersTTL {
		return others
	}
	var ids []string
	err := projects.ListAvailable(ident).EachPage(ctx, func(_ context.Context, page pagination.Page) (bool, error) {
		ps, err := projects.ExtractProjects(page)
		for _, pr := range ps {
			if pr.ID != home && pr.Enabled {
				ids = append(ids, pr.ID)
			}
		}
		return true, err
	})
	if err != nil {
		ids = others // keep what was known; try again next time
	}
	sort.Strings(ids)
	p.mu.Lock()
	p.others, p.othersAt = ids, time.Now()
	p.mu.Unlock()
	return ids
}

// locate finds the one volume named name: in the configured project, else in the other
// projects the credentials can use. A name found in several projects is an error naming them.
func (p *Provisioner) locate(ctx context.Context, name string) (found, error) {
	c, err := p.client(ctx, "")
	if err != nil {
		return found{}, err
	}
	v, err := p.find(ctx, c, name)
	if err == nil {
		p.mu.Lock()
		home := p.home
		p.mu.Unlock()
		return found{c, v, home}, nil
	}
	if !errors.Is(err, driver.ErrNotFound) {
		return found{}, err
	}
	notFound := err
	var hits []found
	for _, pid := range p.otherProjects(ctx) {
		pc, err := p.client(ctx, pid)
		if errors.Is(err, driver.ErrPermission) {
			continue // listed but not usable (the role was just removed)
		}
		if err != nil {
			return found{}, err
		}
		v, err := p.find(ctx, pc, name)
		if errors.Is(err, driver.ErrNotFound) {
			continue
		}
		if err != nil {
			return found{}, err
		}
		hits = append(hits, found{pc, v, pid})
	}
	switch len(hits) {
	case 0:
		return found{}, notFound
	case 1:
		return hits[0], nil
	}
	where := make([]string, 0, len(hits))
	for _, h := range hits {
		where = append(where, fmt.Sprintf("%s in project %s", h.v.ID, h.project))
	}
	return found{}, fmt.Errorf("%w: %d Cinder volumes are named %q (%s): rename or delete all but one",
		driver.ErrInvalid, len(hits), name, strings.Join(where, ", "))
}

// authError explains a failed authentication without ever including the secret.
func authError(opts gophercloud.AuthOptions, projectID string, err error) error {
	who := "user " + opts.Username
	if opts.ApplicationCredentialID != "" {
		who = "application credential " + opts.ApplicationCredentialID
	}
	scope := "the configured project"
	if projectID != "" {
		scope = "project " + projectID
	}
	switch {
	case gophercloud.ResponseCodeIs(err, http.StatusUnauthorized):
		return fmt.Errorf("%w: Keystone at %s refused the credentials of %s (check OS_USERNAME/OS_PASSWORD or the application credential)",
			driver.ErrPermission, opts.IdentityEndpoint, who)
	case gophercloud.ResponseCodeIs(err, http.StatusForbidden), gophercloud.ResponseCodeIs(err, http.StatusNotFound):
		return fmt.Errorf("%w: Keystone at %s does not let %s work in %s (does it have a role there?)",
			driver.ErrPermission, opts.IdentityEndpoint, who, scope)
	}
	return fmt.Errorf("Keystone at %s unreachable or failing: %w", opts.IdentityEndpoint, unreachable(err))
}

// unreachable marks network errors and deadline expiry as driver.ErrTimeout.
func unreachable(err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%w: %w", driver.ErrTimeout, err)
	}
	return err
}

// apiError translates a Cinder API error.
func apiError(op, what string, err error) error {
	// A token that expired and could not be renewed: gophercloud's error does not unwrap, so
	// judge by Keystone's answer to the renewal (credentials rotated or revoked, role removed,
	// Keystone down or past the deadline), not as a failure of Cinder.
	var reauth *gophercloud.ErrUnableToReauthenticate
	if errors.As(err, &reauth) {
		for _, code := range []int{http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound} {
			if gophercloud.ResponseCodeIs(reauth.ErrReauth, code) {
				return fmt.Errorf("cinder %s %s: %w: Keystone refused to renew the token (were the credentials changed or revoked, or the role removed?): %v",
					op, what, driver.ErrPermission, reauth.ErrReauth)
			}
		}
		return fmt.Errorf("cinder %s %s: Keystone unreachable or failing while renewing the token: %w", op, what, unreachable(reauth.ErrReauth))
	}
	switch {
	case err == nil:
		return nil
	case gophercloud.ResponseCodeIs(err, http.StatusNotFound):
		return fmt.Errorf("cinder %s %s: %w: %v", op, what, driver.ErrNotFound, err)
	case gophercloud.ResponseCodeIs(err, http.StatusForbidden), gophercloud.ResponseCodeIs(err, http.StatusUnauthorized):
		return fmt.Errorf("cinder %s %s: %w: %v", op, what, driver.ErrPermission, err)
	case gophercloud.ResponseCodeIs(err, http.StatusConflict):
		return fmt.Errorf("cinder %s %s: %w: %v", op, what, driver.ErrInUse, err)
	case gophercloud.ResponseCodeIs(err, http.StatusBadRequest), gophercloud.ResponseCodeIs(err, http.StatusRequestEntityTooLarge):
		return fmt.Errorf("cinder %s %s: %w: %v", op, what, driver.ErrInvalid, err)
	}
	return fmt.Errorf("cinder %s %s: Cinder unreachable or failing: %w", op, what, unreachable(err))
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$`)

// InstanceUUID derives the attachment's instance UUID from Docker's mount ID (64 hex digits,
// not a UUID): a name-based (version 5 style) UUID, the same for the same ID on every host.
func InstanceUUID(mountID string) string {
	if uuidRE.MatchString(mountID) {
		return strings.ToLower(mountID)
	}
	h := sha1.Sum([]byte("ceph-docker-plugin:" + mountID))
	h[6] = (h[6] & 0x0f) | 0x50
	h[8] = (h[8] & 0x3f) | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// mountpoint is what the attachment records as its mount point: Cinder's attachments API leaves
// host_name empty, so the host is kept here, with its identity and Docker's full mount ID:
// "docker:<host>/<host ID>/<mount id>". The older format, "docker:<host>/<mount id>", names the
// host alone.
func mountpoint(host, id, mountID string) string {
	if id == "" {
		return "docker:" + host + "/" + mountID
	}
	return "docker:" + host + "/" + id + "/" + mountID
}

// attacher reads the host (name and identity, "" for an attachment made without one) back from an
// attachment (the name from host_name when Cinder set it).
func attacher(a volumes.Attachment) (host, id string) {
	host = "(unknown host)"
	if rest, ok := strings.CutPrefix(a.Device, "docker:"); ok {
		parts := strings.Split(rest, "/")
		if len(parts) >= 2 {
			host = parts[0]
		}
		if len(parts) == 3 && driver.ValidHostID(parts[1]) {
			id = parts[1]
		}
	}
	if a.HostName != "" {
		host = a.HostName
	}
	return host, id
}

// attachedHost names an attachment's host for people: "host node-3 (host ID 1f2e3d4c5b6a)".
func attachedHost(a volumes.Attachment) string {
	host, id := attacher(a)
	if id == "" {
		return "host " + host
	}
	return fmt.Sprintf("host %s (host ID %s)", host, driver.ShortHostID(id))
}

// owns says whether attachment a is this host's: made under this host's identity, or made under
// this host's name alone (the older name-only format) and named by this host's own state
// (claimed: the attachment ID its state recorded). A name is not enough: two machines can share
// one.
func (p *Provisioner) owns(a volumes.Attachment, claimed string) bool {
	host, id := attacher(a)
	switch {
	case id != "":
		return p.cfg.HostID != "" && id == p.cfg.HostID
	case host != p.cfg.Host:
		return false
	}
	return p.cfg.HostID == "" || (claimed != "" && a.AttachmentID == claimed)
}

// sameName adds to a refusal naming another host's attachment what to do when that host has
// this host's NODE_NAME.
func (p *Provisioner) sameName(a volumes.Attachment) string {
	host, _ := attacher(a)
	if host != p.cfg.Host {
		return ""
	}
	return fmt.Sprintf(" (it has this host's NODE_NAME, not its identity %s: another machine named %s, or this host before it lost its STATE_DIR/%s)",
		driver.ShortHostID(p.cfg.HostID), host, driver.HostIDFile)
}

// find returns the one volume named name in the project.
func (p *Provisioner) find(ctx context.Context, c *gophercloud.ServiceClient, name string) (volumes.Volume, error) {
	var found []volumes.Volume
	err := volumes.List(c, volumes.ListOpts{Name: name}).EachPage(ctx, func(_ context.Context, page pagination.Page) (bool, error) {
		vs, err := volumes.ExtractVolumes(page)
		for _, v := range vs {
			if v.Name == name { // the filter is exact in Cinder, but be sure
				found = append(found, v)
			}
		}
		return true, err
	})
	if err != nil {
		return volumes.Volume{}, apiError("list", name, err)
	}
	switch len(found) {
	case 0:
		return volumes.Volume{}, fmt.Errorf("cinder: %w: no volume named %q", driver.ErrNotFound, name)
	case 1:
		return found[0], nil
	}
	ids := make([]string, 0, len(found))
	for _, v := range found {
		ids = append(ids, v.ID)
	}
	return volumes.Volume{}, fmt.Errorf("%w: %d Cinder volumes are named %q (%s): rename or delete all but one",
		driver.ErrInvalid, len(found), name, strings.Join(ids, ", "))
}

// createSize is the size in GiB to ask Cinder for: -o size, rounded up; without it, a volume made
// from a snapshot or another volume gets its source's size (Cinder requires a size, and the
// default would grow, or refuse to shrink, the copy).
func (p *Provisioner) createSize(ctx context.Context, c *gophercloud.ServiceClient, opts driver.Options) (int, error) {
	size := int(math.Ceil(float64(opts.Size) / (1 << 30)))
	if opts.SizeGiven {
		return size, nil
	}
	if id := opts.Backend[OptSnapshotID]; id != "" {
		s, err := snapshots.Get(ctx, c, id).Extract()
		if err != nil {
			return 0, apiError("read snapshot", id+" (option "+OptSnapshotID+")", err)
		}
		return s.Size, nil
	}
	if id := opts.Backend[OptSourceVolumeID]; id != "" {
		v, err := volumes.Get(ctx, c, id).Extract()
		if err != nil {
			return 0, apiError("read volume", id+" (option "+OptSourceVolumeID+")", err)
		}
		return v.Size, nil
	}
	return size, nil
}

// Create implements driver.Provisioner.
func (p *Provisioner) Create(ctx context.Context, name string, opts driver.Options) error {
	c, err := p.client(ctx, opts.Backend[OptProjectID])
	if err != nil {
		return err
	}
	if f, err := p.locate(ctx, name); err == nil {
		return fmt.Errorf("cinder create %s: %w (volume %s in project %s)", name, driver.ErrExists, f.v.ID, f.project)
	} else if !errors.Is(err, driver.ErrNotFound) {
		return err
	}
	meta := map[string]string{metaManaged: managedBy, metaFSType: opts.FSType}
	if len(opts.MkfsOptions) > 0 {
		meta[metaMkfsOptions] = strings.Join(opts.MkfsOptions, " ")
	}
	if opts.MountOptions != "" {
		meta[metaMountOptions] = opts.MountOptions
	}
	size, err := p.createSize(ctx, c, opts)
	if err != nil {
		return fmt.Errorf("cinder create %s: %w", name, err)
	}
	co := volumes.CreateOpts{
		Name: name, Size: size, Metadata: meta,
		VolumeType: opts.Backend[OptVolumeType], AvailabilityZone: opts.Backend[OptAvailabilityZone],
		SnapshotID: opts.Backend[OptSnapshotID], SourceVolID: opts.Backend[OptSourceVolumeID],
		Description: "Docker volume " + name + " (ceph-docker-plugin)",
	}
	v, err := volumes.Create(ctx, c, co, nil).Extract()
	if err != nil {
		return apiError("create", name, err)
	}
	if _, err := p.waitStatus(ctx, c, v.ID, "available"); err != nil {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = volumes.Delete(cctx, c, v.ID, volumes.DeleteOpts{}).ExtractErr()
		return fmt.Errorf("cinder create %s: %w", name, err)
	}
	return nil
}

// waitStatus polls the volume until it reaches want (or an error status, or ctx's end).
func (p *Provisioner) waitStatus(ctx context.Context, c *gophercloud.ServiceClient, id, want string) (*volumes.Volume, error) {
	next := p.backoff()
	for {
		v, err := volumes.Get(ctx, c, id).Extract()
		if err != nil {
			return nil, apiError("get", id, err)
		}
		switch {
		case v.Status == want:
			return v, nil
		case strings.HasPrefix(v.Status, "error"):
			return v, fmt.Errorf("volume %s went to status %q (see the cinder-volume log)", id, v.Status)
		}
		select {
		case <-ctx.Done():
			return v, fmt.Errorf("%w: volume %s still %q, not %q, at the deadline", driver.ErrTimeout, id, v.Status, want)
		case <-p.after(next()):
		}
	}
}

// backoff returns the waits between status polls: 50 ms for the first second (Cinder's RBD
// backend makes a volume available in a few hundred milliseconds: a fixed 500 ms poll made Create
// take twice as long as Cinder itself, and doubling from 50 ms still overshot by ~100 ms at p50,
// measured by cmd/cdp-bench), then doubling up to cfg.Poll.
func (p *Provisioner) backoff() func() time.Duration {
	d := min(50*time.Millisecond, p.cfg.Poll)
	n := 0
	return func() time.Duration {
		w := d
		if n++; n >= 20 {
			d = min(2*d, p.cfg.Poll)
		}
		return w
	}
}

func toVolume(v volumes.Volume, project string) driver.Volume {
	vol := driver.Volume{
		Name: v.Name, Size: uint64(v.Size) << 30, FSType: v.Metadata[metaFSType],
		MountOptions: v.Metadata[metaMountOptions], CreatedAt: v.CreatedAt,
		Status: map[string]any{"cinder-id": v.ID, "cinder-status": v.Status, "volume-type": v.VolumeType,
			"availability-zone": v.AvailabilityZone},
	}
	if project != "" {
		vol.Status["project-id"] = project
	}
	if v.SnapshotID != "" {
		vol.Status[OptSnapshotID] = v.SnapshotID
	}
	if v.SourceVolID != "" {
		vol.Status[OptSourceVolumeID] = v.SourceVolID
	}
	if m := v.Metadata[metaMkfsOptions]; m != "" {
		vol.MkfsOptions = driver.SplitMkfsOptions(m)
	}
	var holders []string
	for _, a := range v.Attachments {
		holders = append(holders, fmt.Sprintf("%s (container %s)", attachedHost(a), a.ServerID))
	}
	vol.Holder = strings.Join(holders, ", ")
	return vol
}

// Get implements driver.Provisioner.
func (p *Provisioner) Get(ctx context.Context, name string) (driver.Volume, error) {
	f, err := p.locate(ctx, name)
	if err != nil {
		return driver.Volume{}, err
	}
	return toVolume(f.v, f.project), nil
}

// Differences implements driver.Provisioner: it compares the project-id, volume-type,
// availability-zone, snapshot-id and source-volume-id options of an idempotent Create.
func (p *Provisioner) Differences(ctx context.Context, vol driver.Volume, opts driver.Options) ([]string, error) {
	var diffs []string
	for _, k := range []string{OptProjectID, OptAvailabilityZone, OptSnapshotID, OptSourceVolumeID} {
		v, ok := opts.Backend[k]
		if !ok {
			continue
		}
		if have, _ := vol.Status[k].(string); have != v {
			if have == "" {
				have = "none"
			}
			diffs = append(diffs, fmt.Sprintf("%s %s (it has %s)", k, v, have))
		}
	}
	if v, ok := opts.Backend[OptVolumeType]; ok {
		have, _ := vol.Status[OptVolumeType].(string)
		if have != v && !p.typeNamed(ctx, v, have) {
			diffs = append(diffs, fmt.Sprintf("%s %s (it has %s)", OptVolumeType, v, have))
		}
	}
	return diffs, nil
}

// typeNamed reports whether the volume type with ID id is named name (Cinder takes a type's
// name or ID, and reports a volume's type by name). False when the type cannot be read.
func (p *Provisioner) typeNamed(ctx context.Context, id, name string) bool {
	c, err := p.client(ctx, "")
	if err != nil {
		return false
	}
	t, err := volumetypes.Get(ctx, c, id).Extract()
	return err == nil && t.Name == name
}

// RoundSize implements driver.Provisioner: Cinder sizes volumes in whole GiB.
func (p *Provisioner) RoundSize(size uint64) uint64 {
	const gib = 1 << 30
	return (size + gib - 1) / gib * gib
}

// List implements driver.Provisioner: every volume of the configured project whose name is a
// valid Docker volume name, and the plugin's volumes in the other projects, read page by page.
func (p *Provisioner) List(ctx context.Context) ([]driver.Volume, error) {
	c, err := p.client(ctx, "")
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []driver.Volume
	list := func(c *gophercloud.ServiceClient, project string, opts volumes.ListOpts) error {
		err := volumes.List(c, opts).EachPage(ctx, func(_ context.Context, page pagination.Page) (bool, error) {
			vs, err := volumes.ExtractVolumes(page)
			for _, v := range vs {
				if driver.ValidateName(v.Name) == nil && !seen[v.Name] {
					seen[v.Name] = true
					out = append(out, toVolume(v, project))
				}
			}
			return true, err
		})
		return apiError("list", "volumes of project "+project, err)
	}
	p.mu.Lock()
	home := p.home
	p.mu.Unlock()
	if err := list(c, home, volumes.ListOpts{Limit: 1000}); err != nil {
		return nil, err
	}
	for _, pid := range p.otherProjects(ctx) {
		pc, err := p.client(ctx, pid)
		if errors.Is(err, driver.ErrPermission) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if err := list(pc, pid, volumes.ListOpts{Limit: 1000, Metadata: map[string]string{metaManaged: managedBy}}); err != nil {
			return nil, err
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Remove implements driver.Provisioner.
func (p *Provisioner) Remove(ctx context.Context, name string, action driver.RemoveAction) error {
	f, err := p.locate(ctx, name)
	if err != nil {
		return err
	}
	c, v := f.c, f.v
	if len(v.Attachments) > 0 {
		return fmt.Errorf("%w: volume %s is attached to %s; stop its containers there first", driver.ErrInUse, name, toVolume(v, "").Holder)
	}
	if v.Status == "in-use" || v.Status == "reserved" || v.Status == "attaching" {
		// Uncompleted attachments: a host attaching right now, or one that died doing so (its
		// plugin deletes the attachment when it comes back).
		return fmt.Errorf("%w: volume %s is being attached (Cinder status %s, attachment not completed); try again, or if no host is attaching it, delete the attachment: openstack volume attachment list --volume-id %s",
			driver.ErrInUse, name, v.Status, v.ID)
	}
	switch action {
	case driver.RemoveKeep:
		kept := driver.KeptName(name, time.Now())
		desc := fmt.Sprintf("Docker volume %s (ceph-docker-plugin), removed from Docker at %s with REMOVE_ACTION=keep; rename it back to use it again",
			name, time.Now().UTC().Format(time.RFC3339))
		if _, err := volumes.Update(ctx, c, v.ID, volumes.UpdateOpts{Name: &kept, Description: &desc}).Extract(); err != nil {
			return apiError("rename (REMOVE_ACTION=keep) to "+kept, name, err)
		}
		return nil
	case driver.RemoveTrash:
		return fmt.Errorf("%w: REMOVE_ACTION=trash needs BACKEND=rbd (Cinder has no trash); use delete or keep", driver.ErrInvalid)
	}
	if err := volumes.Delete(ctx, c, v.ID, volumes.DeleteOpts{}).ExtractErr(); err != nil {
		return apiError("delete", name, err)
	}
	// Deletion is asynchronous: wait for it, so that the name is free when Remove returns.
	next := p.backoff()
	for {
		got, err := volumes.Get(ctx, c, v.ID).Extract()
		if gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
			return nil
		}
		if err != nil {
			return apiError("get", name, err)
		}
		if got.Status == "error_deleting" {
			return fmt.Errorf("cinder could not delete volume %s (%s): status error_deleting (see the cinder-volume log)", name, v.ID)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: volume %s (%s) still %q at the deadline", driver.ErrTimeout, name, v.ID, got.Status)
		case <-p.after(next()):
		}
	}
}

// Attach implements driver.Provisioner: it records this host and container as a Cinder
// attachment and returns the RBD image to map.
func (p *Provisioner) Attach(ctx context.Context, name string, req driver.AttachRequest) (driver.Attachment, error) {
	f, err := p.locate(ctx, name)
	if err != nil {
		return driver.Attachment{}, err
	}
	c, v := f.c, f.v
	var fenced []string
	for _, a := range v.Attachments {
		if p.owns(a, req.Claimed) {
			continue
		}
		h := attachedHost(a)
		if !req.TakeOver {
			return driver.Attachment{}, fmt.Errorf("%w: volume %s is attached to %s (container %s)%s; stop it there, or if that host is dead, set LOCK_BREAK=on to fence it and take the volume over",
				driver.ErrBusyElsewhere, name, h, a.ServerID, p.sameName(a))
		}
		_, holder := attacher(a)
		gone, err := p.takeOver(ctx, c, name, h, a.AttachmentID, holder)
		fenced = append(fenced, gone...)
		if err != nil {
			return driver.Attachment{Fenced: fenced}, fmt.Errorf("take volume %s over from %s: %w", name, h, err)
		}
		v.Attachments = nil // only this host's may remain, and a takeover leaves none of its own
	}
	if len(v.Attachments) == 0 && (v.Status == "attaching" || v.Status == "reserved") {
		// Attachments that were never completed: Cinder lists them only in the attachments API,
		// and says nothing of their host. This mount's own (an attempt whose answer was lost) is
		// recognised by its instance UUID and deleted; another is a host attaching right now,
		// or one that died doing so.
		pending, err := p.pendingAttachments(ctx, c, v.ID)
		if err != nil {
			return driver.Attachment{}, apiError("list attachments of", name, err)
		}
		for _, a := range pending {
			if a.Instance == InstanceUUID(req.MountID) {
				if err := p.deleteAttachment(ctx, c, name, a.ID); err != nil {
					return driver.Attachment{}, err
				}
				continue
			}
			if !req.TakeOver {
				return driver.Attachment{}, fmt.Errorf("%w: volume %s is being attached elsewhere (Cinder status %s, attachment %s for instance %s, not completed); try again, or if that host died while attaching, set LOCK_BREAK=on to fence it and take the volume over",
					driver.ErrBusyElsewhere, name, v.Status, a.ID, a.Instance)
			}
			gone, err := p.takeOver(ctx, c, name, "the host of instance "+a.Instance, a.ID, "")
			fenced = append(fenced, gone...)
			if err != nil {
				return driver.Attachment{Fenced: fenced}, fmt.Errorf("take volume %s over from instance %s: %w", name, a.Instance, err)
			}
		}
		if _, err := p.waitStatus(ctx, c, v.ID, "available"); err != nil {
			return driver.Attachment{Fenced: fenced}, fmt.Errorf("cinder attach %s: %w", name, err)
		}
	}
	for _, a := range v.Attachments {
		// This host attached it before (the plugin restarted): the same attachment serves.
		got, err := attachments.Get(ctx, c, a.AttachmentID).Extract()
		if err != nil {
			return driver.Attachment{}, apiError("get attachment", name, err)
		}
		spec, mons, err := parseConnection(got.ConnectionInfo)
		if err != nil {
			return driver.Attachment{}, fmt.Errorf("cinder attach %s: %w", name, err)
		}
		if err := p.checkIdentity(ctx, name, spec); err != nil {
			return driver.Attachment{}, err
		}
		return driver.Attachment{ID: got.ID,
			Map: driver.MapRequest{ImageSpec: spec, ReadOnly: req.ReadOnly, Monitors: mons, User: p.cfg.CephUser}}, nil
	}
	mode := "rw"
	if req.ReadOnly {
		mode = "ro"
	}
	connector := map[string]any{
		"host": p.cfg.Host, "platform": "x86_64", "os_type": "linux", "multipath": false,
		"do_local_attach": false, "mountpoint": mountpoint(p.cfg.Host, p.cfg.HostID, req.MountID),
	}
	a, err := attachments.Create(ctx, c, attachments.CreateOpts{
		VolumeUUID: v.ID, InstanceUUID: InstanceUUID(req.MountID), Connector: connector, Mode: mode,
	}).Extract()
	if err != nil {
		if gophercloud.ResponseCodeIs(err, http.StatusBadRequest) || gophercloud.ResponseCodeIs(err, http.StatusConflict) {
			return driver.Attachment{}, fmt.Errorf("%w: Cinder refused to attach volume %s (attached meanwhile by another host?): %v",
				driver.ErrBusyElsewhere, name, err)
		}
		return driver.Attachment{}, apiError("attach", name, err)
	}
	undo := func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = attachments.Delete(cctx, c, a.ID).ExtractErr()
	}
	spec, mons, err := parseConnection(a.ConnectionInfo)
	if err != nil {
		undo()
		return driver.Attachment{}, fmt.Errorf("cinder attach %s: %w", name, err)
	}
	if v.Multiattach {
		// Cinder reserves a multiattach volume again as soon as a first attachment is completed,
		// before its host has mapped the image (so before the watcher check below can see it),
		// but never while another reservation is pending: a host that finds another attachment
		// after reserving its own is the later one, and gives way. Exactly one host wins.
		holder, err := p.otherAttachment(ctx, c, v.ID, a.ID)
		if err == nil && holder != "" {
			err = fmt.Errorf("%w: volume %s (a multiattach volume) is attached to %s; this plugin attaches a volume to one host at a time: stop its container there first",
				driver.ErrBusyElsewhere, name, holder)
		} else if err != nil {
			err = apiError("list attachments of", name, err)
		}
		if err != nil {
			undo()
			return driver.Attachment{}, err
		}
	}
	if p.cfg.Watchers != nil {
		// With the attachment reserved (no other host can attach meanwhile), make sure no
		// client maps the image without one.
		live, err := p.cfg.Watchers.LiveWatchers(ctx, spec)
		if err == nil && len(live) > 0 {
			err = fmt.Errorf("%w: volume %s: its RBD image %s is open by Ceph client(s) %s that have no Cinder attachment (mapped by hand, or by a host whose attachment was deleted); unmap it there first",
				driver.ErrBusyElsewhere, name, spec, strings.Join(live, ", "))
		}
		if err != nil {
			undo()
			return driver.Attachment{}, err
		}
	}
	if err := attachments.Complete(ctx, c, a.ID).ExtractErr(); err != nil {
		undo()
		return driver.Attachment{}, apiError("complete attachment", name, err)
	}
	vol := toVolume(v, f.project) // as found before attaching: options, not status
	return driver.Attachment{
		ID: a.ID, Fenced: fenced, Volume: &vol,
		Map: driver.MapRequest{ImageSpec: spec, ReadOnly: req.ReadOnly, Monitors: mons, User: p.cfg.CephUser},
	}, nil
}

// checkIdentity makes sure that a volume attached under this host's identity is not open on
// another machine: an attachment that names this host's identity, but whose RBD image a client
// that is not this host's keeps open, is another machine's (one using a copy of this host's
// STATE_DIR, as on a cloned disk).
func (p *Provisioner) checkIdentity(ctx context.Context, name string, spec driver.ImageSpec) error {
	if p.cfg.Watchers == nil || p.cfg.HostID == "" {
		return nil
	}
	live, err := p.cfg.Watchers.ForeignWatchers(ctx, spec)
	if err != nil {
		return fmt.Errorf("volume %s: %w", name, err)
	}
	if len(live) == 0 {
		return nil
	}
	return fmt.Errorf("%w: volume %s is attached under this host's identity (host %s, host ID %s), but Ceph client(s) %s, not this host's, keep its RBD image %s open: another machine uses this host's identity (a copy of its STATE_DIR, as on a cloned disk) or maps the image by hand. On that machine, stop the plugin, remove %s from its STATE_DIR and start it again (it then makes an identity of its own); this host leaves the volume alone meanwhile",
		driver.ErrBusyElsewhere, name, p.cfg.Host, driver.ShortHostID(p.cfg.HostID), strings.Join(live, ", "), spec, driver.HostIDFile)
}

// RecordClients implements driver.Provisioner through Config.Recorder.
func (p *Provisioner) RecordClients(ctx context.Context, name string, att driver.Attachment, m driver.Mapping) error {
	if p.cfg.Recorder == nil || p.cfg.HostID == "" {
		return nil
	}
	spec := att.Map.ImageSpec
	if spec.Image == "" {
		spec = m.ImageSpec
	}
	var clients []string
	if m.Client != "" {
		clients = append(clients, m.Client)
	}
	if err := p.cfg.Recorder.RecordClients(ctx, spec, p.cfg.Host, p.cfg.HostID, clients); err != nil {
		return fmt.Errorf("volume %s: %w", name, err)
	}
	return nil
}

// takeOver fences the Ceph clients of a dead host's attachment (blocklist, lock break) and
// deletes the attachment. Fencing comes first: a holder that is only unreachable must not write
// once the volume is someone else's.
func (p *Provisioner) takeOver(ctx context.Context, c *gophercloud.ServiceClient, name, host, attachmentID, holder string) ([]string, error) {
	if p.cfg.Fencer == nil {
		return nil, fmt.Errorf("%w: this plugin has no Ceph access to fence %s with", driver.ErrInvalid, host)
	}
	got, err := attachments.Get(ctx, c, attachmentID).Extract()
	if err != nil {
		return nil, apiError("get attachment", name, err)
	}
	var fenced []string
	if spec, _, err := parseConnection(got.ConnectionInfo); err == nil {
		if fenced, err = p.cfg.Fencer.Fence(ctx, spec, holder); err != nil {
			return fenced, err
		}
	} else if len(got.ConnectionInfo) > 0 {
		return nil, fmt.Errorf("cannot tell which RBD image %s maps, so cannot fence it: %w", host, err)
	}
	if err := p.deleteAttachment(ctx, c, name, got.ID); err != nil {
		return fenced, err
	}
	if _, err := p.waitStatus(ctx, c, got.VolumeID, "available"); err != nil {
		return fenced, fmt.Errorf("after deleting the attachment of %s: %w", host, err)
	}
	return fenced, nil
}

// pendingAttachments lists a volume's attachments that are not completed (reserved, attaching).
func (p *Provisioner) pendingAttachments(ctx context.Context, c *gophercloud.ServiceClient, volumeID string) ([]attachments.Attachment, error) {
	var out []attachments.Attachment
	err := attachments.List(c, attachments.ListOpts{VolumeID: volumeID}).EachPage(ctx, func(_ context.Context, page pagination.Page) (bool, error) {
		as, err := attachments.ExtractAttachments(page)
		for _, a := range as {
			if a.Status != "attached" && a.Status != "detached" {
				out = append(out, a)
			}
		}
		return true, err
	})
	return out, err
}

// otherAttachment describes an attachment of the volume other than mine (of any host, completed
// or not), or returns "" when there is none.
func (p *Provisioner) otherAttachment(ctx context.Context, c *gophercloud.ServiceClient, volumeID, mine string) (string, error) {
	var other []attachments.Attachment
	err := attachments.List(c, attachments.ListOpts{VolumeID: volumeID}).EachPage(ctx, func(_ context.Context, page pagination.Page) (bool, error) {
		as, err := attachments.ExtractAttachments(page)
		for _, a := range as {
			if a.ID != mine && a.Status != "detached" {
				other = append(other, a)
			}
		}
		return true, err
	})
	if err != nil || len(other) == 0 {
		return "", err
	}
	// The volume's view names the host of a completed attachment.
	if v, err := volumes.Get(ctx, c, volumeID).Extract(); err == nil {
		for _, va := range v.Attachments {
			if va.AttachmentID == other[0].ID {
				return fmt.Sprintf("%s (container %s)", attachedHost(va), va.ServerID), nil
			}
		}
	}
	return fmt.Sprintf("another host (attachment %s for instance %s, %s)", other[0].ID, other[0].Instance, other[0].Status), nil
}

// deleteAttachment deletes one attachment; one already gone is fine.
func (p *Provisioner) deleteAttachment(ctx context.Context, c *gophercloud.ServiceClient, name, id string) error {
	err := attachments.Delete(ctx, c, id).ExtractErr()
	if err != nil && !gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		return apiError("delete attachment "+id+" of", name, err)
	}
	return nil
}

// parseConnection reads the RBD connection info: data.name "pool/volume-<id>", hosts, ports.
func parseConnection(ci map[string]any) (driver.ImageSpec, []string, error) {
	if t, _ := ci["driver_volume_type"].(string); t != "" && t != "rbd" {
		return driver.ImageSpec{}, nil, fmt.Errorf("the volume is on a %q backend; this plugin maps only rbd", t)
	}
	// os-initialize_connection nests the fields under "data"; the attachments API returns them
	// flat, beside driver_volume_type.
	data, ok := ci["data"].(map[string]any)
	if !ok {
		data = ci
	}
	nm, _ := data["name"].(string)
	pool, image, ok := strings.Cut(nm, "/")
	if !ok || pool == "" || image == "" {
		keys := make([]string, 0, len(ci))
		for k := range ci {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return driver.ImageSpec{}, nil, fmt.Errorf("connection info without an rbd pool/image (name %q; fields %v)", nm, keys)
	}
	hosts, _ := data["hosts"].([]any)
	ports, _ := data["ports"].([]any)
	var mons []string
	for i, h := range hosts {
		hs, _ := h.(string)
		port := "6789"
		if i < len(ports) {
			switch pv := ports[i].(type) {
			case string:
				port = pv
			case float64:
				port = strconv.Itoa(int(pv))
			}
		}
		if hs != "" {
			if strings.Contains(hs, ":") && !strings.HasPrefix(hs, "[") {
				hs = "[" + hs + "]"
			}
			mons = append(mons, hs+":"+port)
		}
	}
	return driver.ImageSpec{Pool: pool, Image: image}, mons, nil
}

// Detach implements driver.Provisioner: it deletes this host's attachment(s) of the volume.
func (p *Provisioner) Detach(ctx context.Context, name string, att driver.Attachment) error {
	f, err := p.locate(ctx, name)
	if errors.Is(err, driver.ErrNotFound) {
		return nil // the volume is gone, and its attachments with it
	}
	if err != nil {
		return err
	}
	c, v := f.c, f.v
	ids := []string{}
	if att.MountID != "" && (v.Status == "attaching" || v.Status == "reserved") {
		// An attempt whose answer never came may have left an attachment that was not
		// completed: it is found by the mount's instance UUID.
		pending, err := p.pendingAttachments(ctx, c, v.ID)
		if err != nil {
			return apiError("list attachments of", name, err)
		}
		for _, a := range pending {
			if a.Instance == InstanceUUID(att.MountID) {
				ids = append(ids, a.ID)
			}
		}
	}
	if att.ID != "" {
		ids = append(ids, att.ID)
	} else {
		// Not recorded (a crash between attach and its record): this host's attachments.
		for _, a := range v.Attachments {
			if p.owns(a, "") {
				ids = append(ids, a.AttachmentID)
			}
		}
	}
	if len(ids) > 0 && p.cfg.Recorder != nil && p.cfg.HostID != "" && att.Map.Image != "" {
		// Best effort: a record left behind is fenced only by a host taking the volume over
		// from this identity.
		_ = p.cfg.Recorder.ClearClients(ctx, att.Map.ImageSpec, p.cfg.HostID)
	}
	for _, id := range ids {
		if err := p.deleteAttachment(ctx, c, name, id); err != nil {
			return err
		}
	}
	return nil
}
