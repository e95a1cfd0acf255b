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

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// fakeCeph stands in for the cluster in the Provisioner's unit tests: images in memory, the
// index, host locks; it records the calls and fails those scripted to fail.
type fakeCeph struct {
	mu     sync.Mutex
	images map[string]*fakeImage // by pool/image
	index  map[string]string     // nil: no index object
	calls  []string
	fail   map[string]error // by method: every call fails with it

	self         string    // this connection's address
	live         []Watcher // what WaitUnwatched returns
	foreign      []Watcher // what WaitForeign returns
	afterWait    func()    // run by WaitUnwatched before it returns (the holder lets go, say)
	fenced       []string  // what BreakLock finds to fence itself
	breakClients []string  // the clients BreakLock was given to fence
	records      []HolderRecord
	unwritten    bool
	mons         []string
	avail        map[string]uint64 // max_avail by pool
	nextID       int
}

type fakeImage struct {
	info     ImageInfo
	meta     map[string]string
	lockers  []Locker
	watchers []Watcher
	snaps    map[string]bool // the snapshots made by CreateSnap: protected or not
}

var _ ceph = (*fakeCeph)(nil)

func newFake() *fakeCeph {
	return &fakeCeph{images: map[string]*fakeImage{}, fail: map[string]error{}, self: "10.0.0.1:0/100", mons: []string{"10.0.0.9:6789"}}
}

// add puts an image in the fake.
func (f *fakeCeph) add(spec Spec, size uint64) *fakeImage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addLocked(spec, size)
}

func (f *fakeCeph) addLocked(spec Spec, size uint64) *fakeImage {
	f.nextID++
	img := &fakeImage{info: ImageInfo{Spec: spec, ID: "id" + string(rune('a'+f.nextID)), Size: size, Features: []string{"layering"}}, meta: map[string]string{}}
	f.images[spec.String()] = img
	return img
}

func (f *fakeCeph) image(spec Spec) *fakeImage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.images[spec.String()]
}

// enter records a call of method on what and returns its scripted error.
func (f *fakeCeph) enter(method, what string) error {
	f.calls = append(f.calls, method+" "+what)
	return f.fail[method]
}

// called lists the calls of method, by what they were about.
func (f *fakeCeph) called(method string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if m, what, _ := strings.Cut(c, " "); m == method {
			out = append(out, what)
		}
	}
	return out
}

func notFound(op string, spec Spec) error {
	return &OpError{Op: op, What: spec.String(), Kind: driver.ErrNotFound, Err: errors.New("no such image")}
}

func (f *fakeCeph) find(method string, spec Spec) (*fakeImage, error) {
	if err := f.enter(method, spec.String()); err != nil {
		return nil, err
	}
	head := spec
	head.Snap = ""
	img, ok := f.images[head.String()]
	if !ok {
		return nil, notFound(method, spec)
	}
	return img, nil
}

func (f *fakeCeph) User() string { return "docker" }

func (f *fakeCeph) PoolAvail(_ context.Context, pool string) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("PoolAvail", pool); err != nil {
		return 0, err
	}
	n, ok := f.avail[pool]
	if !ok {
		return 0, fmt.Errorf("rbd df: %w: no pool %q", driver.ErrNotFound, pool)
	}
	return n, nil
}

func (f *fakeCeph) Monitors(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("Monitors", "mon"); err != nil {
		return nil, err
	}
	return f.mons, nil
}

func (f *fakeCeph) ImageID(_ context.Context, spec Spec) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, err := f.find("ImageID", spec)
	if err != nil {
		return "", err
	}
	return img.info.ID, nil
}

func (f *fakeCeph) Describe(_ context.Context, spec Spec) (Description, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, err := f.find("Describe", spec)
	if err != nil {
		return Description{}, err
	}
	return Description{Info: img.info, Meta: copyMeta(img.meta), Watchers: slices.Clone(img.watchers), Lockers: slices.Clone(img.lockers)}, nil
}

func copyMeta(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (f *fakeCeph) Info(_ context.Context, spec Spec) (ImageInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, err := f.find("Info", spec)
	if err != nil {
		return ImageInfo{}, err
	}
	return img.info, nil
}

func (f *fakeCeph) List(_ context.Context, pool, _ string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("List", pool); err != nil {
		return nil, err
	}
	var out []string
	for _, img := range f.images {
		if img.info.Spec.Pool == pool {
			out = append(out, img.info.Spec.Image)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (f *fakeCeph) Create(_ context.Context, spec Spec, opts CreateOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("Create", spec.String()); err != nil {
		return err
	}
	if _, ok := f.images[spec.String()]; ok {
		return &OpError{Op: "create", What: spec.String(), Kind: driver.ErrExists, Err: errors.New("exists")}
	}
	img := f.addLocked(spec, opts.Size)
	img.info.Features, img.info.DataPool = opts.Features, opts.DataPool
	return nil
}

func (f *fakeCeph) CreateSnap(_ context.Context, spec Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, err := f.find("CreateSnap", spec)
	if err != nil {
		return err
	}
	if _, ok := img.snaps[spec.Snap]; ok {
		return &OpError{Op: "snap create", What: spec.String(), Kind: driver.ErrExists, Err: errors.New("exists")}
	}
	if img.snaps == nil {
		img.snaps = map[string]bool{}
	}
	img.snaps[spec.Snap] = false
	return nil
}

func (f *fakeCeph) ListSnaps(_ context.Context, spec Spec) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, err := f.find("ListSnaps", spec)
	if err != nil {
		return nil, err
	}
	return slices.Sorted(maps.Keys(img.snaps)), nil
}

// ProtectSnap protects a snapshot made by CreateSnap; other snapshots (of images added by the
// test) are taken to exist.
func (f *fakeCeph) ProtectSnap(_ context.Context, spec Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, err := f.find("ProtectSnap", spec)
	if err != nil {
		return err
	}
	if _, ok := img.snaps[spec.Snap]; ok {
		img.snaps[spec.Snap] = true
	}
	return nil
}

// UnprotectSnap refuses while the snapshot has a clone, as clone format 1 does.
func (f *fakeCeph) UnprotectSnap(_ context.Context, spec Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, err := f.find("UnprotectSnap", spec)
	if err != nil {
		return err
	}
	if _, ok := img.snaps[spec.Snap]; !ok {
		return notFound("snap unprotect", spec)
	}
	for _, o := range f.images {
		if o.info.Parent == spec.String() {
			return &OpError{Op: "snap unprotect", What: spec.String(), Kind: driver.ErrInUse, Err: errors.New("the snapshot has clones")}
		}
	}
	img.snaps[spec.Snap] = false
	return nil
}

func (f *fakeCeph) RemoveSnap(_ context.Context, spec Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, err := f.find("RemoveSnap", spec)
	if err != nil {
		return err
	}
	protected, ok := img.snaps[spec.Snap]
	switch {
	case !ok:
		return notFound("snap rm", spec)
	case protected:
		return &OpError{Op: "snap rm", What: spec.String(), Kind: driver.ErrInUse, Err: errors.New("the snapshot is protected")}
	}
	delete(img.snaps, spec.Snap)
	return nil
}

func (f *fakeCeph) Flatten(_ context.Context, spec Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, err := f.find("Flatten", spec)
	if err == nil {
		img.info.Parent = ""
	}
	return err
}

func (f *fakeCeph) Clone(_ context.Context, parent, child Spec, opts CreateOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, err := f.find("Clone", parent)
	if err != nil {
		return err
	}
	img := f.addLocked(child, p.info.Size)
	img.info.Parent, img.info.Features, img.info.DataPool = parent.String(), opts.Features, opts.DataPool
	return nil
}

func (f *fakeCeph) Resize(_ context.Context, spec Spec, size uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, err := f.find("Resize", spec)
	if err == nil {
		img.info.Size = size
	}
	return err
}

func (f *fakeCeph) SetMetas(_ context.Context, spec Spec, kv map[string]string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, err := f.find("SetMetas", spec)
	if err == nil {
		for k, v := range kv {
			img.meta[k] = v
		}
	}
	return err
}

func (f *fakeCeph) Remove(_ context.Context, spec Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, err := f.find("Remove", spec)
	if err != nil {
		return err
	}
	if len(img.snaps) > 0 {
		return &OpError{Op: "remove", What: spec.String(), Kind: driver.ErrInUse, Err: errors.New("the image has snapshots")}
	}
	delete(f.images, spec.String())
	return nil
}

func (f *fakeCeph) Rename(_ context.Context, spec Spec, newName string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, err := f.find("Rename", spec)
	if err != nil {
		return err
	}
	delete(f.images, spec.String())
	img.info.Spec.Image = newName
	f.images[img.info.Spec.String()] = img
	return nil
}

func (f *fakeCeph) Trash(_ context.Context, spec Spec, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.find("Trash", spec); err != nil {
		return err
	}
	delete(f.images, spec.String())
	return nil
}

func (f *fakeCeph) EndsUnwritten(context.Context, ImageInfo, uint64) bool { return f.unwritten }

func (f *fakeCeph) readIndex(_ context.Context, pool string) (map[string][]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("readIndex", pool); err != nil {
		return nil, err
	}
	if f.index == nil {
		return nil, &OpError{Op: "read index", What: pool, Kind: driver.ErrNotFound, Err: errors.New("no index")}
	}
	out := map[string][]byte{}
	for k, v := range f.index {
		out[k] = []byte(v)
	}
	return out, nil
}

func (f *fakeCeph) writeIndex(_ context.Context, pool, name, value string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("writeIndex", pool+" "+name+"="+value); err != nil {
		return err
	}
	if f.index == nil {
		f.index = map[string]string{}
	}
	f.index[name] = value
	return nil
}

func (f *fakeCeph) dropIndex(_ context.Context, pool, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("dropIndex", pool+" "+name); err != nil {
		return err
	}
	delete(f.index, name)
	return nil
}

func (f *fakeCeph) Lockers(_ context.Context, spec Spec) ([]Locker, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, err := f.find("Lockers", spec)
	if err != nil {
		return nil, err
	}
	return slices.Clone(img.lockers), nil
}

func (f *fakeCeph) LockHost(_ context.Context, spec Spec, _, cookie, _ string) error {
	return f.lockHost("LockHost", spec, cookie, false)
}

func (f *fakeCeph) LockHostShared(_ context.Context, spec Spec, _, cookie, _ string) error {
	return f.lockHost("LockHostShared", spec, cookie, true)
}

// lockHost is cls_lock's rule: shared locks coexist, an exclusive lock stands alone, and the
// same cookie (the fake has one client per cookie) taking the lock again holds it already.
func (f *fakeCeph) lockHost(method string, spec Spec, cookie string, shared bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, err := f.find(method, spec)
	if err != nil {
		return err
	}
	mine := Locker{Client: "client.1", Cookie: cookie, Addr: f.self, Shared: shared}
	for _, l := range img.lockers {
		switch {
		case l.Cookie == cookie:
			return nil // EEXIST
		case !shared || !l.Shared:
			return &OpError{Op: "host lock", What: spec.String(), Kind: driver.ErrBusyElsewhere, Err: errors.New("another client holds the host lock")}
		}
	}
	img.lockers = append(img.lockers, mine)
	return nil
}

func (f *fakeCeph) BreakHostLock(_ context.Context, spec Spec, l Locker) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, err := f.find("BreakHostLock", spec)
	if err != nil {
		return err
	}
	img.lockers = slices.DeleteFunc(img.lockers, func(o Locker) bool { return o.Cookie == l.Cookie })
	return nil
}

func (f *fakeCeph) BreakLock(_ context.Context, spec Spec, holder string, clients ...string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("BreakLock", spec.String()+" "+holder); err != nil {
		return nil, err
	}
	// Like the cluster's: the clients given are fenced with the ones it finds itself.
	f.breakClients = append(f.breakClients, clients...)
	fenced := slices.Clone(f.fenced)
	for _, a := range clients {
		if a = normalizeAddr(a); !slices.Contains(fenced, a) {
			fenced = append(fenced, a)
		}
	}
	return fenced, nil
}

func (f *fakeCeph) ClientAddr() (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.self, f.enter("ClientAddr", "")
}

func (f *fakeCeph) WaitUnwatched(_ context.Context, spec Spec, _ time.Duration) ([]Watcher, error) {
	f.mu.Lock()
	err := f.enter("WaitUnwatched", spec.String())
	after := f.afterWait
	live := slices.Clone(f.live)
	f.mu.Unlock()
	if after != nil {
		after()
	}
	return live, err
}

func (f *fakeCeph) WaitForeign(_ context.Context, spec Spec, _ LocalClients, _ time.Duration) ([]Watcher, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.foreign), f.enter("WaitForeign", spec.String())
}

func (f *fakeCeph) RecordClients(_ context.Context, spec Spec, host, id string, extra []string) (HolderRecord, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rec := HolderRecord{Host: host, ID: id, Clients: append([]string{f.self}, extra...)}
	if err := f.enter("RecordClients", spec.String()); err != nil {
		return rec, err
	}
	f.records = append(f.records, rec)
	return rec, nil
}

func (f *fakeCeph) ClearHolder(_ context.Context, spec Spec, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.enter("ClearHolder", spec.String()+" "+id)
}
