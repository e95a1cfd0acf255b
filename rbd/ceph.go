package rbd

import (
	"context"
	"time"
)

// ceph is what the Provisioner asks of the cluster: *Cluster in the plugin, a fake in unit tests.
// It is declared here, by its only consumer, in three parts.
type ceph interface {
	images
	hostLocks
	User() string
	Monitors(ctx context.Context) ([]string, error)
	PoolAvail(ctx context.Context, pool string) (uint64, error)
}

// images are the image calls: create, snapshot, clone, flatten, describe, metadata, removal, and the index of
// volumes in other pools.
type images interface {
	ImageID(ctx context.Context, spec Spec) (string, error)
	Describe(ctx context.Context, spec Spec) (Description, error)
	Info(ctx context.Context, spec Spec) (ImageInfo, error)
	List(ctx context.Context, pool, namespace string) ([]string, error)
	Create(ctx context.Context, spec Spec, opts CreateOptions) error
	CreateSnap(ctx context.Context, spec Spec) error
	ListSnaps(ctx context.Context, spec Spec) ([]string, error)
	ProtectSnap(ctx context.Context, spec Spec) error
	UnprotectSnap(ctx context.Context, spec Spec) error
	RemoveSnap(ctx context.Context, spec Spec) error
	Clone(ctx context.Context, parent, child Spec, opts CreateOptions) error
	Flatten(ctx context.Context, spec Spec) error
	Resize(ctx context.Context, spec Spec, size uint64) error
	SetMetas(ctx context.Context, spec Spec, kv map[string]string) error
	Remove(ctx context.Context, spec Spec) error
	Rename(ctx context.Context, spec Spec, newName string) error
	Trash(ctx context.Context, spec Spec, delay time.Duration) error
	EndsUnwritten(ctx context.Context, info ImageInfo, window uint64) bool
	readIndex(ctx context.Context, pool string) (map[string][]byte, error)
	writeIndex(ctx context.Context, pool, name, value string) error
	dropIndex(ctx context.Context, pool, name string) error
}

// hostLocks are the calls that tell and change who holds an image: host locks, watchers,
// fencing and the holder's record.
type hostLocks interface {
	Lockers(ctx context.Context, spec Spec) ([]Locker, error)
	LockHost(ctx context.Context, spec Spec, imageID, cookie, desc string) error
	LockHostShared(ctx context.Context, spec Spec, imageID, cookie, desc string) error
	BreakHostLock(ctx context.Context, spec Spec, l Locker) error
	BreakLock(ctx context.Context, spec Spec, holder string, clients ...string) ([]string, error)
	ClientAddr() (string, error)
	WaitUnwatched(ctx context.Context, spec Spec, reserve time.Duration) ([]Watcher, error)
	WaitForeign(ctx context.Context, spec Spec, local LocalClients, reserve time.Duration) ([]Watcher, error)
	RecordClients(ctx context.Context, spec Spec, host, id string, extra []string) (HolderRecord, error)
	ClearHolder(ctx context.Context, spec Spec, id string) error
}

var _ ceph = (*Cluster)(nil)
