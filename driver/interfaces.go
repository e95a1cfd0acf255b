package driver

import (
	"context"
	"slices"
	"time"
)

// The interfaces the driver consumes. Each is small and declared here, by its consumer; the
// backends (rbd, cinder) and mappers (krbd, fuse) implement them.

// Provisioner is a volume backend: direct RBD or Cinder.
type Provisioner interface {
	// Create makes a volume. ErrExists when a volume of that name exists already (the driver
	// then checks that the request is compatible with it). Invalid backend options: ErrInvalid.
	Create(ctx context.Context, name string, opts Options) error
	// Get describes a volume wherever it is in the cluster. ErrNotFound when there is none.
	Get(ctx context.Context, name string) (Volume, error)
	// List returns every volume the backend manages (not only this host's).
	List(ctx context.Context) ([]Volume, error)
	// Remove deletes (or trashes, or forgets) a volume. ErrInUse while any client uses it.
	Remove(ctx context.Context, name string, action RemoveAction) error
	// Attach claims the volume for this host and says how to map it. When another host holds
	// it: ErrBusyElsewhere naming the holder, unless req.TakeOver, in which case the holder is
	// fenced first. Attaching again what this host holds succeeds.
	Attach(ctx context.Context, name string, req AttachRequest) (Attachment, error)
	// Detach releases this host's claim. Detaching what is not attached succeeds.
	Detach(ctx context.Context, name string, att Attachment) error
	// BackendOptions are the -o keys this backend accepts beyond the common ones.
	BackendOptions() []string
	// Differences lists each backend option in opts.Backend that vol does not match, as
	// "option value (it has other)", so that an idempotent Create of an existing volume
	// succeeds only if the volume is what was asked for (pool, volume-type, a clone's source,
	// ...). A source that can no longer be read is no difference. An error means the
	// comparison could not be made (the backend is not reachable).
	Differences(ctx context.Context, vol Volume, opts Options) ([]string, error)
	// RoundSize is the size the backend makes for a request of size bytes (Cinder: whole GiB):
	// Create asks for it, and an idempotent Create compares with it.
	RoundSize(size uint64) uint64
	// RecordClients records, with this host's claim, the Ceph clients this host uses the
	// volume through (see fence.go), for a host that may have to fence them. Called after
	// every Map of a read-write mapping; an error fails the Mount.
	RecordClients(ctx context.Context, name string, att Attachment, m Mapping) error
}

// Every capability a backend has is a method of Provisioner, not an optional interface found by
// a type assertion, so that a wrapper (rbd.Lazy, the metrics Observer) cannot drop one silently:
// the compiler refuses a wrapper that lacks a method.

// Mounter formats and mounts block devices.
type Mounter interface {
	// FormatIfBlank makes a filesystem on dev only if dev carries no filesystem and no partition
	// table. It returns the filesystem type found or made. unwritten says the backend has made
	// sure that both ends of the device were never written (Volume.Unwritten): dev is then
	// formatted without being read. made says it formatted dev (a new filesystem).
	FormatIfBlank(ctx context.Context, dev, fstype string, mkfsOptions []string, unwritten bool) (found string, made bool, err error)
	// Mount mounts dev on target (created if missing). Mounting the same dev there again succeeds.
	Mount(ctx context.Context, dev, target, fstype, options string) error
	// Unmount unmounts target and removes the directory. Not mounted is success; ErrInUse when busy.
	Unmount(ctx context.Context, target string) error
	// Probe returns the filesystem type dev carries, "" when it carries none (blank). It never
	// writes: a read-only first mount asks it instead of FormatIfBlank.
	Probe(ctx context.Context, dev string) (string, error)
	// MountedDevice returns the device mounted on target, or "" when nothing is.
	MountedDevice(target string) (string, error)
}

// StateStore persists each volume's local state (this host's mounts) across plugin restarts.
type StateStore interface {
	Load(name string) (State, bool, error)
	Save(st State) error
	Delete(name string) error
	All() ([]State, error)
}

// RemoveAction is what Remove does with the backend volume.
type RemoveAction string

const (
	RemoveDelete RemoveAction = "delete" // delete it
	RemoveTrash  RemoveAction = "trash"  // move it to the rbd trash (recoverable)
	RemoveKeep   RemoveAction = "keep"   // keep the data under KeptName; Docker forgets it
)

// Options are a volume's creation options, parsed and validated.
type Options struct {
	Size         uint64 // bytes
	SizeGiven    bool   // -o size was given; false: Size is DEFAULT_SIZE (a clone keeps its source's size)
	FSType       string // ext4 | xfs
	MkfsOptions  []string
	MountOptions string            // comma-separated, as for mount -o
	Root         RootOptions       // the filesystem root's owner and mode, applied when formatted
	Access       string            // AccessReadWrite ("" too) or AccessReadOnly (access.go)
	Backend      map[string]string // backend-specific options (pool, features, project-id, ...)
	// FrontEnd is the protocol the volume is created through (FrontEndVolume, FrontEndCSI),
	// recorded with the volume by the backend; "" records nothing.
	FrontEnd string
	// Given are the -o keys the request gave (nil: not known, all taken as given): a copy of
	// another volume (-o from-volume) takes the options not given from its source (CopyOf).
	Given map[string]bool
}

// Volume is a volume as the backend knows it.
type Volume struct {
	Name         string
	Image        ImageSpec
	Size         uint64
	FSType       string // "" when unknown (an image not created by the plugin): DEFAULT_FSTYPE
	MkfsOptions  []string
	MountOptions string
	Root         RootOptions // as stored: checked by CheckStored before use
	// Access is the volume's access as stored: "" or AccessReadWrite, AccessReadOnly (checked by
	// CheckStored before use).
	Access    string
	CreatedAt time.Time
	// Holder names who holds the volume, if anyone does ("host-b (client 10.0.0.2:0/123)").
	Holder string
	// Status holds backend-specific facts for `docker volume inspect`.
	Status map[string]any
	// FrontEnd is the protocol the volume was created through, as recorded at Create ("" for a
	// volume made before the record existed, or by hand).
	FrontEnd string
	// Unwritten is set by an Attach whose backend made sure, after claiming the volume, that the
	// first and last SignatureWindow bytes were never written (they read as zeros): the first
	// Mount then formats without reading the device first.
	Unwritten bool
}

// SignatureWindow is how much of each end of a device can hold a signature: every one blkid
// looks for (filesystem superblocks, partition tables and their backups, RAID and LVM labels,
// ZFS labels) lies within the first or the last MiB.
const SignatureWindow = 1 << 20

// KnownStore persists the names of the volumes the backend last described, with their
// creation times, so that Get can answer for them after a restart while the backend is
// unreachable (see Driver.known).
type KnownStore interface {
	LoadKnown() (map[string]time.Time, error)
	SaveKnown(map[string]time.Time) error
}

// KeptName is the name a volume removed with REMOVE_ACTION=keep gets in the backend: the data
// stays, under a name that is not a valid volume name (so that List and Get no longer see it and
// the name is free again) and that sorts next to the original: "db~removed-20261122T054900.123Z"
// (milliseconds: a name created and removed twice in a second gets two). An operator restores it
// by renaming it back (rbd rename, openstack volume set --name).
func KeptName(name string, at time.Time) string {
	return name + "~removed-" + at.UTC().Format("20060102T150405.000Z")
}

// AttachRequest is a host's claim on a volume.
type AttachRequest struct {
	Host     string // this host's name
	MountID  string // Docker's caller ID of the mount that made the claim
	TakeOver bool   // LOCK_BREAK=on: fence a holder and take the volume over
	// ReadOnly asks for a shared read-only claim: any number of hosts may hold one at once, and
	// none while a host holds the volume read-write (refused with ErrBusyElsewhere naming the
	// writer), and the reverse (a read-write claim is refused naming the readers). The backend
	// makes the claim read-only also when the volume's access is readonly (Volume.Access), and
	// says which it made in Attachment.Map.ReadOnly. A read-only claim is never taken over by
	// fencing: readers cannot write, and a writer waits for them (or an operator) to let go.
	ReadOnly bool
	// IgnoreAccess makes a read-write claim of a volume whose access is readonly: only the
	// plugin's own replay of a journal, at the first read-only use of a volume whose journal
	// needs it (driver/replay.go), asks for it, never a container's use. It comes without
	// TakeOver: the claim is refused, as any read-write claim, while another host holds the
	// volume, read-only or read-write.
	IgnoreAccess bool
	// Claimed is the backend's record of the claim (Attachment.ID) that this host's state holds
	// for the volume, when it attaches again what it held (after a restart): a claim written
	// under NODE_NAME alone (the older name-only format) is this host's only if its
	// own state names it.
	Claimed string
}

// Attachment is what Attach returns: how to map the volume, and the backend's record of the claim.
type Attachment struct {
	Map    MapRequest
	ID     string   // backend attachment id (Cinder); empty for rbd
	Fenced []string // clients fenced to take the volume over
	// Volume is the volume as Attach read it, when the backend reads it anyway (saves the
	// first Mount a Get); nil otherwise.
	Volume *Volume `json:"-"`
	// MountID is the caller ID the claim was made for. It is recorded before Attach is called,
	// so that an Attach whose answer never came (a timeout, a crash) can still be undone: the
	// backend finds the claim by it (Cinder: the attachment's derived instance UUID).
	MountID string
}

// State is one volume's persisted local state on this host.
type State struct {
	Name string
	// IDs are Docker's mount caller IDs using the volume on this host, in the order of their
	// first use.
	IDs []string
	// Uses counts the uses of each ID in IDs: dockerd mounts a container's volume again with the
	// same ID for each nested use (`docker cp` in and out, and its stat) and unmounts once per
	// use, so the volume is released only when every use of every ID is gone. An ID missing
	// from Uses has one use: state written before uses were counted. (IDs alone stays the set
	// of holders, so that a plugin of that earlier format still reads this state correctly.)
	Uses map[string]int `json:",omitempty"`
	// Op is the operation in flight (OpMount or OpUnmount), with its caller ID: a crash
	// mid-operation leaves it set and reconcile finishes or undoes it.
	Op      Op     `json:",omitempty"`
	OpID    string `json:",omitempty"`
	Image   ImageSpec
	FSType  string
	Options string     `json:",omitempty"` // mount options
	Attach  Attachment // as returned by Provisioner.Attach
	Device  string     `json:",omitempty"` // the mapped device, once mapped
	Path    string     // the mount point ("" when Raw)
	// Raw: mapped without a filesystem (CSI's block access type): nothing is formatted or
	// mounted, the device is what each use gets.
	Raw     bool `json:",omitempty"`
	Updated time.Time
	// Boot is the kernel boot (Config.BootID) the record was written in: a record of an earlier
	// boot holds no live mount, since a reboot ended every container (empty: not known).
	Boot string `json:",omitempty"`
}

// UsesOf is how many uses id has on this host (0: it is not among the IDs).
func (st *State) UsesOf(id string) int {
	if !slices.Contains(st.IDs, id) {
		return 0
	}
	if n := st.Uses[id]; n > 0 {
		return n
	}
	return 1
}

// TotalUses is the number of uses of every ID together.
func (st *State) TotalUses() int {
	n := 0
	for _, id := range st.IDs {
		n += st.UsesOf(id)
	}
	return n
}

// AddUse records one more use of id and returns its count.
func (st *State) AddUse(id string) int {
	n := st.UsesOf(id)
	if n == 0 {
		st.IDs = append(st.IDs, id)
	}
	if st.Uses == nil {
		st.Uses = map[string]int{}
	}
	st.Uses[id] = n + 1
	return n + 1
}

// DropUse forgets one use of id and returns how many it has left; its last use removes it
// from IDs. Dropping a use of an unknown ID does nothing.
func (st *State) DropUse(id string) int {
	n := st.UsesOf(id)
	if n <= 1 {
		st.IDs = slices.DeleteFunc(st.IDs, func(s string) bool { return s == id })
		delete(st.Uses, id)
		if len(st.Uses) == 0 {
			st.Uses = nil
		}
		return 0
	}
	st.Uses[id] = n - 1
	return n - 1
}
