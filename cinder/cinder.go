// Package cinder is the Cinder backend: volumes are Cinder volumes (RBD backend) found by their
// Docker name, authenticated by Keystone v3 (password or application credential), and a host
// that mounts a volume records the container as a Cinder attachment (its host name, a UUID derived
// from Docker's mount ID, and the full ID as the attachment's mount point), so that `openstack
// volume show` says which container on which host holds it. The RBD pool/image and monitors come
// from the attachment's connection info; the host maps them with its own cephx user.
package cinder

import (
	"context"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// Backend option keys.
const (
	OptProjectID        = "project-id"
	OptVolumeType       = "volume-type"
	OptAvailabilityZone = "availability-zone"
	OptSnapshotID       = "snapshot-id"
	OptSourceVolumeID   = "source-volume-id"
	// OptFromVolume makes the volume a copy of another volume, named as Docker names it.
	OptFromVolume = driver.OptFromVolume
)

// Metadata the plugin keeps on the Cinder volumes it creates.
const (
	metaPrefix       = driver.MetaPrefix
	metaManaged      = driver.MetaPrefix + "managed-by"
	metaFSType       = driver.MetaFSType
	metaMkfsOptions  = driver.MetaMkfsOptions
	metaMountOptions = driver.MetaMountOptions
	metaFromVolume   = driver.MetaPrefix + OptFromVolume // the name of the volume a copy was made from
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
	return []string{OptProjectID, OptVolumeType, OptAvailabilityZone, OptSnapshotID, OptSourceVolumeID, OptFromVolume}
}
