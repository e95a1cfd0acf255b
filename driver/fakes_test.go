package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

// Scripted fakes for the interfaces the driver consumes. Each fake keeps its state in memory,
// counts calls per method, can fail the next call(s) or every call of a method with a given
// error, and can hold a call at a gate until the test releases it. All fakes share a recorder
// that logs every call in order ("prov.Attach v", "map.Map v", "mnt.Mount v", ...) and tracks
// how many calls are in flight at once.

// recorder is the ordered log of calls into all fakes.
type recorder struct {
	mu        sync.Mutex
	log       []string
	active    int
	maxActive int
}

func (r *recorder) begin(entry string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, entry)
	r.active++
	r.maxActive = max(r.maxActive, r.active)
}

func (r *recorder) end() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.active--
}

// mark returns a position in the log for since.
func (r *recorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.log)
}

// since returns the calls logged after mark.
func (r *recorder) since(mark int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.log[mark:])
}

// sideEffects are the calls that change something; ops filters the log down to them.
var sideEffects = []string{"prov.Create", "prov.Remove", "prov.Attach", "prov.Detach",
	"map.Map", "map.Unmap", "mnt.FormatIfBlank", "mnt.Mount", "mnt.Unmount"}

// ops returns the side-effecting calls logged after mark.
func (r *recorder) ops(mark int) []string {
	var out []string
	for _, e := range r.since(mark) {
		method, _, _ := strings.Cut(e, " ")
		if slices.Contains(sideEffects, method) {
			out = append(out, e)
		}
	}
	return out
}

func (r *recorder) maxInFlight() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.maxActive
}

// gate holds calls of one method (and key) until released.
type gate struct {
	entered chan string   // receives the key of each call that reached the gate
	release chan struct{} // closed by the test to let the calls through
	once    sync.Once
}

func (g *gate) open() { g.once.Do(func() { close(g.release) }) }

// script is the scripting shared by the fakes.
type script struct {
	prefix string
	rec    *recorder

	smu    sync.Mutex
	calls  map[string]int
	next   map[string][]error
	always map[string]error
	gates  map[string]*gate // "Method key" or "Method *"
	delay  map[string]time.Duration
}

func newScript(prefix string, rec *recorder) script {
	return script{prefix: prefix, rec: rec, calls: map[string]int{}, next: map[string][]error{},
		always: map[string]error{}, gates: map[string]*gate{}, delay: map[string]time.Duration{}}
}

// enter records a call, waits at its gate if there is one, and returns the error scripted for
// it. The caller must call done when the call returns.
func (s *script) enter(ctx context.Context, method, key string) (done func(), err error) {
	s.rec.begin(s.prefix + "." + method + " " + key)
	done = s.rec.end
	s.smu.Lock()
	s.calls[method]++
	g := s.gates[method+" "+key]
	if g == nil {
		g = s.gates[method+" *"]
	}
	if q := s.next[method]; len(q) > 0 {
		err, s.next[method] = q[0], q[1:]
	} else if e := s.always[method]; e != nil {
		err = e
	}
	d := s.delay[method]
	s.smu.Unlock()
	if cerr := ctx.Err(); cerr != nil { // as a real backend: nothing is done past the deadline
		return done, fmt.Errorf("%s.%s %s: %w", s.prefix, method, key, cerr)
	}
	runtime.Gosched() // widen the windows for races
	if d > 0 {
		time.Sleep(d)
	}
	if g != nil {
		g.entered <- key
		select {
		case <-g.release:
		case <-ctx.Done():
			return done, fmt.Errorf("%s.%s %s: %w", s.prefix, method, key, ctx.Err())
		}
	}
	return done, err
}

// failNext makes the next calls of method return errs, one each.
func (s *script) failNext(method string, errs ...error) {
	s.smu.Lock()
	defer s.smu.Unlock()
	s.next[method] = append(s.next[method], errs...)
}

// failAlways makes every call of method return err (nil: stop).
func (s *script) failAlways(method string, err error) {
	s.smu.Lock()
	defer s.smu.Unlock()
	s.always[method] = err
}

// clearFaults drops every scripted error.
func (s *script) clearFaults() {
	s.smu.Lock()
	defer s.smu.Unlock()
	s.next = map[string][]error{}
	s.always = map[string]error{}
}

// block makes calls of method with key ("*": any) wait until the gate is opened. The gate is
// opened at the end of the test in any case.
func (s *script) block(t *testing.T, method, key string) *gate {
	g := &gate{entered: make(chan string, 64), release: make(chan struct{})}
	s.smu.Lock()
	s.gates[method+" "+key] = g
	s.smu.Unlock()
	t.Cleanup(g.open)
	return g
}

// slow makes every call of method take d.
func (s *script) slow(method string, d time.Duration) {
	s.smu.Lock()
	defer s.smu.Unlock()
	s.delay[method] = d
}

func (s *script) count(method string) int {
	s.smu.Lock()
	defer s.smu.Unlock()
	return s.calls[method]
}

// ---------------------------------------------------------------------------------------------

// fakeProvisioner is an in-memory backend: volumes by name, and which host holds each.
type fakeProvisioner struct {
	script
	host string // the host whose Detach calls release a hold (the driver's Config.Node)

	mu       sync.Mutex
	vols     map[string]Volume
	holders  map[string]string          // volume -> host holding it
	readers  map[string]map[string]bool // volume -> hosts holding it read-only
	removed  []RemoveAction             // the action of each successful Remove
	created  []Options                  // the options of each successful Create
	attachID func() string              // when set, the Attachment.ID of each Attach (default "cookie")
	detached []Attachment               // the argument of each Detach call
	// attachReadsVolume makes Attach return the volume, as the real backends do.
	attachReadsVolume bool
}

var _ Provisioner = (*fakeProvisioner)(nil)

func newFakeProvisioner(rec *recorder, host string) *fakeProvisioner {
	return &fakeProvisioner{script: newScript("prov", rec), host: host,
		vols: map[string]Volume{}, holders: map[string]string{}, readers: map[string]map[string]bool{}}
}

var fakeCreatedAt = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// add makes a volume without going through Create (and without logging a call).
func (p *fakeProvisioner) add(name string, size uint64, fstype string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.vols[name] = Volume{Name: name, Image: ImageSpec{Pool: "volumes", Image: name}, Size: size,
		FSType: fstype, CreatedAt: fakeCreatedAt, Status: map[string]any{"pool": "volumes"}}
}

// setHolder records that host holds the volume ("" releases it).
func (p *fakeProvisioner) setHolder(name, host string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if host == "" {
		delete(p.holders, name)
	} else {
		p.holders[name] = host
	}
}

func (p *fakeProvisioner) holder(name string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.holders[name]
}

func (p *fakeProvisioner) exists(name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.vols[name]
	return ok
}

func (p *fakeProvisioner) removeActions() []RemoveAction {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.removed)
}

func (p *fakeProvisioner) createdOptions() []Options {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.created)
}

func (p *fakeProvisioner) Create(ctx context.Context, name string, opts Options) error {
	done, err := p.enter(ctx, "Create", name)
	defer done()
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.vols[name]; ok {
		return fmt.Errorf("%w: image volumes/%s", ErrExists, name)
	}
	p.vols[name] = Volume{Name: name, Image: ImageSpec{Pool: "volumes", Image: name}, Size: opts.Size,
		FSType: opts.FSType, MkfsOptions: opts.MkfsOptions, MountOptions: opts.MountOptions, FrontEnd: opts.FrontEnd, Root: opts.Root,
		Access: opts.Access, CreatedAt: fakeCreatedAt, Status: map[string]any{"pool": "volumes"}}
	p.created = append(p.created, opts)
	return nil
}

func (p *fakeProvisioner) get(name string) (Volume, error) {
	v, ok := p.vols[name]
	if !ok {
		return Volume{}, fmt.Errorf("%w: image volumes/%s", ErrNotFound, name)
	}
	v.Status = cloneStatus(v.Status)
	v.MkfsOptions = slices.Clone(v.MkfsOptions)
	v.Holder = p.holders[name]
	return v, nil
}

func cloneStatus(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (p *fakeProvisioner) Get(ctx context.Context, name string) (Volume, error) {
	done, err := p.enter(ctx, "Get", name)
	defer done()
	if err != nil {
		return Volume{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.get(name)
}

func (p *fakeProvisioner) List(ctx context.Context) ([]Volume, error) {
	done, err := p.enter(ctx, "List", "")
	defer done()
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Volume
	for name := range p.vols {
		v, _ := p.get(name)
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (p *fakeProvisioner) Remove(ctx context.Context, name string, action RemoveAction) error {
	done, err := p.enter(ctx, "Remove", name)
	defer done()
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.vols[name]; !ok {
		return fmt.Errorf("%w: image volumes/%s", ErrNotFound, name)
	}
	if h := p.holders[name]; h != "" {
		return fmt.Errorf("%w: volume %s is held by %s", ErrInUse, name, h)
	}
	delete(p.vols, name)
	p.removed = append(p.removed, action)
	return nil
}

func (p *fakeProvisioner) Attach(ctx context.Context, name string, req AttachRequest) (Attachment, error) {
	done, err := p.enter(ctx, "Attach", name)
	defer done()
	if err != nil {
		return Attachment{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	vol, ok := p.vols[name]
	if !ok {
		return Attachment{}, fmt.Errorf("%w: image volumes/%s", ErrNotFound, name)
	}
	if req.ReadOnly || (vol.ReadOnly() && !req.IgnoreAccess) {
		return p.attachReadOnly(name, vol, req)
	}
	if rs := p.otherReaders(name, req.Host); len(rs) > 0 {
		return Attachment{}, fmt.Errorf("%w: volume %s is held read-only by %s", ErrBusyElsewhere, name, strings.Join(rs, ", "))
	}
	var fenced []string
	if h := p.holders[name]; h != "" && h != req.Host {
		if !req.TakeOver {
			return Attachment{}, fmt.Errorf("%w: volume %s is in use by %s", ErrBusyElsewhere, name, h)
		}
		fenced = []string{h}
	}
	p.holders[name] = req.Host
	id := "cookie"
	if p.attachID != nil {
		id = p.attachID()
	}
	att := Attachment{Map: MapRequest{ImageSpec: vol.Image, User: "docker", Monitors: []string{"127.0.0.1:6789"}},
		ID: id, Fenced: fenced}
	if p.attachReadsVolume {
		v := vol
		att.Volume = &v
	}
	return att, nil
}

// attachReadOnly is a shared read-only claim: refused while another host holds it read-write.
func (p *fakeProvisioner) attachReadOnly(name string, vol Volume, req AttachRequest) (Attachment, error) {
	if h := p.holders[name]; h != "" && h != req.Host {
		return Attachment{}, fmt.Errorf("%w: volume %s is in use read-write by %s", ErrBusyElsewhere, name, h)
	}
	if p.readers[name] == nil {
		p.readers[name] = map[string]bool{}
	}
	p.readers[name][req.Host] = true
	att := Attachment{Map: MapRequest{ImageSpec: vol.Image, ReadOnly: true, User: "docker", Monitors: []string{"127.0.0.1:6789"}}, ID: "shared"}
	if p.attachReadsVolume {
		v := vol
		att.Volume = &v
	}
	return att, nil
}

// otherReaders are the hosts besides host holding the volume read-only, sorted.
func (p *fakeProvisioner) otherReaders(name, host string) []string {
	var out []string
	for h := range p.readers[name] {
		if h != host {
			out = append(out, h)
		}
	}
	slices.Sort(out)
	return out
}

func (p *fakeProvisioner) Detach(ctx context.Context, name string, att Attachment) error {
	return p.detachAs(ctx, name, att, p.host)
}

// detachAs is Detach of host's claim.
func (p *fakeProvisioner) detachAs(ctx context.Context, name string, att Attachment, host string) error {
	p.mu.Lock()
	p.detached = append(p.detached, att)
	p.mu.Unlock()
	done, err := p.enter(ctx, "Detach", name)
	defer done()
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.readers[name], host)
	if p.holders[name] == host {
		delete(p.holders, name)
	}
	return nil
}

func (p *fakeProvisioner) BackendOptions() []string { return []string{"pool", OptFromVolume} }

// Differences finds none: comparingProvisioner scripts them.
func (p *fakeProvisioner) Differences(context.Context, Volume, Options) ([]string, error) {
	return nil, nil
}

// RoundSize makes what is asked for: gibProvisioner rounds.
func (p *fakeProvisioner) RoundSize(size uint64) uint64 { return size }

// RecordClients records nothing (recordingProv in fence_test.go does).
func (p *fakeProvisioner) RecordClients(context.Context, string, Attachment, Mapping) error {
	return nil
}

// ---------------------------------------------------------------------------------------------

// fakeMapper maps images to /dev/fake0, /dev/fake1, ... (a new number each time, or the lowest
// free one, as krbd does, when reuse is set).
type fakeMapper struct {
	script

	mu      sync.Mutex
	maps    map[ImageSpec]string
	seq     int
	reuse   bool
	remaps  int // Map calls for an image that was mapped already
	lastReq MapRequest
}

var _ Mapper = (*fakeMapper)(nil)

func newFakeMapper(rec *recorder) *fakeMapper {
	return &fakeMapper{script: newScript("map", rec), maps: map[ImageSpec]string{}}
}

func (m *fakeMapper) Map(ctx context.Context, req MapRequest) (Mapping, error) {
	done, err := m.enter(ctx, "Map", req.Image)
	defer done()
	if err != nil {
		return Mapping{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastReq = req
	if dev, ok := m.maps[req.ImageSpec]; ok {
		m.remaps++
		return Mapping{ImageSpec: req.ImageSpec, Device: dev, ReadOnly: req.ReadOnly}, nil
	}
	var dev string
	if m.reuse {
		used := map[string]bool{}
		for _, d := range m.maps {
			used[d] = true
		}
		for i := 0; ; i++ {
			if dev = fmt.Sprintf("/dev/fake%d", i); !used[dev] {
				break
			}
		}
	} else {
		dev = fmt.Sprintf("/dev/fake%d", m.seq)
		m.seq++
	}
	m.maps[req.ImageSpec] = dev
	return Mapping{ImageSpec: req.ImageSpec, Device: dev, ReadOnly: req.ReadOnly}, nil
}

func (m *fakeMapper) Unmap(ctx context.Context, spec ImageSpec) error {
	done, err := m.enter(ctx, "Unmap", spec.Image)
	defer done()
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.maps, spec)
	return nil
}

func (m *fakeMapper) List(ctx context.Context) ([]Mapping, error) {
	done, err := m.enter(ctx, "List", "")
	defer done()
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Mapping
	for spec, dev := range m.maps {
		out = append(out, Mapping{ImageSpec: spec, Device: dev})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out, nil
}

// device returns the device an image is mapped to ("" when not mapped).
func (m *fakeMapper) device(spec ImageSpec) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.maps[spec]
}

func (m *fakeMapper) mapped() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.maps)
}

// lose forgets a mapping behind the driver's back (a fuse process died, a reboot).
func (m *fakeMapper) lose(spec ImageSpec) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.maps, spec)
}

// inject adds a mapping the driver did not make.
func (m *fakeMapper) inject(spec ImageSpec, dev string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.maps[spec] = dev
}

func (m *fakeMapper) remapCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.remaps
}

// ---------------------------------------------------------------------------------------------

// mountCall is one successful Mount.
type mountCall struct{ dev, target, fstype, options string }

// fakeMounter keeps a mount table (target -> device) and which devices carry a filesystem.
type fakeMounter struct {
	script

	mu        sync.Mutex
	mounts    map[string]string
	fs        map[string]string // device -> filesystem on it
	formatted []string          // devices formatted, in order
	mkfsOpts  [][]string
	unwritten []bool // the hint of each FormatIfBlank call
	busy      map[string]bool
	mounted   []mountCall
	remounts  int             // Mount calls for what was mounted already
	boundRO   map[string]bool // bind target -> whether its last bind was read-only (fakeBinder)
	// dirty marks the devices whose journal needs replaying: a read-only mount of one fails with
	// EROFS, as the kernel's does on a read-only device, and a read-write mount replays it
	// (replays counts them; onReplay, when set, is called first, with the device).
	dirty    map[string]bool
	replays  int
	onReplay func(dev string)
}

var _ Mounter = (*fakeMounter)(nil)

func newFakeMounter(rec *recorder) *fakeMounter {
	return &fakeMounter{script: newScript("mnt", rec), mounts: map[string]string{},
		fs: map[string]string{}, busy: map[string]bool{}, dirty: map[string]bool{}}
}

func (m *fakeMounter) FormatIfBlank(ctx context.Context, dev, fstype string, mkfsOptions []string, unwritten bool) (string, bool, error) {
	done, err := m.enter(ctx, "FormatIfBlank", dev)
	defer done()
	if err != nil {
		return "", false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.unwritten = append(m.unwritten, unwritten)
	if fs, ok := m.fs[dev]; ok {
		return fs, false, nil
	}
	m.fs[dev] = fstype
	m.formatted = append(m.formatted, dev)
	m.mkfsOpts = append(m.mkfsOpts, slices.Clone(mkfsOptions))
	return fstype, true, nil
}

func (m *fakeMounter) Probe(ctx context.Context, dev string) (string, error) {
	done, err := m.enter(ctx, "Probe", dev)
	defer done()
	if err != nil {
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fs[dev], nil
}

func (m *fakeMounter) Mount(ctx context.Context, dev, target, fstype, options string) error {
	done, err := m.enter(ctx, "Mount", filepath.Base(target))
	defer done()
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch cur := m.mounts[target]; cur {
	case dev:
		m.remounts++
		return nil
	case "":
	default:
		return fmt.Errorf("mount %s on %s: %s is mounted there", dev, target, cur)
	}
	if m.dirty[dev] {
		if slices.Contains(strings.Split(options, ","), "ro") {
			return fmt.Errorf("mount %s on %s: %w", dev, target, syscall.EROFS)
		}
		if m.onReplay != nil {
			m.onReplay(dev)
		}
		delete(m.dirty, dev)
		m.replays++
	}
	m.mounts[target] = dev
	m.mounted = append(m.mounted, mountCall{dev, target, fstype, options})
	return nil
}

func (m *fakeMounter) Unmount(ctx context.Context, target string) error {
	done, err := m.enter(ctx, "Unmount", filepath.Base(target))
	defer done()
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.mounts[target]; ok && m.busy[target] {
		return fmt.Errorf("unmount %s: %w: target is busy", target, ErrInUse)
	}
	delete(m.mounts, target)
	return nil
}

func (m *fakeMounter) MountedDevice(target string) (string, error) {
	done, err := m.enter(context.Background(), "MountedDevice", filepath.Base(target))
	defer done()
	if err != nil {
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mounts[target], nil
}

// device returns what is mounted on target ("" when nothing is).
func (m *fakeMounter) device(target string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mounts[target]
}

func (m *fakeMounter) mountCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.mounts)
}

// setFS marks dev as carrying a filesystem (FormatIfBlank then leaves it alone).
func (m *fakeMounter) setFS(dev, fstype string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fs[dev] = fstype
}

// setBusy makes Unmount of target fail with ErrInUse while it is mounted.
func (m *fakeMounter) setBusy(target string, busy bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.busy[target] = busy
}

// lose forgets a mount behind the driver's back (a restarted daemon lost a propagated mount).
func (m *fakeMounter) lose(target string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.mounts, target)
}

func (m *fakeMounter) formattedDevices() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.formatted)
}

func (m *fakeMounter) mountCalls() []mountCall {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.mounted)
}

func (m *fakeMounter) remountCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.remounts
}

// ---------------------------------------------------------------------------------------------

// flakyStore wraps a StateStore and fails chosen Saves.
type flakyStore struct {
	StateStore

	mu     sync.Mutex
	saves  int           // Saves since the last failSave
	failAt map[int]error // Save number -> error
}

var errInjected = errors.New("injected failure")

// failSave makes the n-th Save from now (1-based) fail with err.
func (s *flakyStore) failSave(n int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.saves = 0
	s.failAt = map[int]error{n: err}
}

func (s *flakyStore) Save(st State) error {
	s.mu.Lock()
	s.saves++
	err, fail := s.failAt[s.saves]
	delete(s.failAt, s.saves)
	s.mu.Unlock()
	if fail {
		// Worded as FileStore words its errors.
		return fmt.Errorf("save state of volume %s: %w", st.Name, err)
	}
	return s.StateStore.Save(st)
}

// ---------------------------------------------------------------------------------------------

// crash is what the Fault hook panics with to simulate the process dying at a step.
type crash FaultStep

// testEnv is a Driver on fakes and a real FileStore.
type testEnv struct {
	t       *testing.T
	cfg     Config
	rec     *recorder
	prov    *fakeProvisioner
	mapper  *fakeMapper
	mounter *fakeMounter
	files   *FileStore
	store   *flakyStore
	logs    *logtest.Hook
	d       *Driver

	crashMu sync.Mutex
	crashAt FaultStep
}

// newTestDriver returns a reconciled Driver on fresh fakes; mods adjust its Config first.
func newTestDriver(t *testing.T, mods ...func(*Config)) *testEnv {
	t.Helper()
	e := newUnreconciledDriver(t, mods...)
	if err := e.d.Reconcile(context.Background()); err != nil {
		t.Fatalf("Reconcile of an empty state: %v", err)
	}
	return e
}

// newUnreconciledDriver is newTestDriver without the Reconcile: calls wait.
func newUnreconciledDriver(t *testing.T, mods ...func(*Config)) *testEnv {
	t.Helper()
	logger := logrus.New()
	logger.Out = io.Discard
	logger.Level = logrus.DebugLevel
	e := &testEnv{t: t, rec: &recorder{}, logs: logtest.NewLocal(logger)}
	e.cfg = Config{Node: "host-a", MountRoot: t.TempDir(), Defaults: OptionDefaults{Size: 1 << 30, FSType: "ext4"},
		RemoveAction: RemoveDelete, CleanupTimeout: 5 * time.Second, Log: logrus.NewEntry(logger), Fault: e.fault}
	for _, mod := range mods {
		mod(&e.cfg)
	}
	e.prov = newFakeProvisioner(e.rec, e.cfg.Node)
	e.mapper = newFakeMapper(e.rec)
	e.mounter = newFakeMounter(e.rec)
	files, err := NewFileStore(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	e.files = files
	e.store = &flakyStore{StateStore: files}
	e.d = New(e.cfg, e.prov, e.mapper, e.mounter, e.store)
	return e
}

// restart simulates a restart of the plugin: a new Driver over the same state directory and
// the same fakes (the cluster, the kernel's mappings and the mount table survive). It is not
// reconciled yet.
func (e *testEnv) restart() *Driver {
	files := &FileStore{Dir: e.files.Dir}
	e.store = &flakyStore{StateStore: files}
	e.d = New(e.cfg, e.prov, e.mapper, e.mounter, e.store)
	return e.d
}

func (e *testEnv) fault(step FaultStep) {
	e.crashMu.Lock()
	at := e.crashAt
	e.crashMu.Unlock()
	if at != "" && step == at {
		panic(crash(step))
	}
}

// crashing runs fn with the process "dying" at step, and checks that it did.
func (e *testEnv) crashing(step FaultStep, fn func()) {
	e.t.Helper()
	e.crashMu.Lock()
	e.crashAt = step
	e.crashMu.Unlock()
	var got any
	func() {
		defer func() { got = recover() }()
		fn()
	}()
	e.crashMu.Lock()
	e.crashAt = ""
	e.crashMu.Unlock()
	if got != crash(step) {
		e.t.Fatalf("expected a crash at %s, got %v", step, got)
	}
}

func (e *testEnv) path(name string) string { return filepath.Join(e.cfg.MountRoot, name) }

func image(name string) ImageSpec { return ImageSpec{Pool: "volumes", Image: name} }

// state loads a volume's persisted state from the real FileStore.
func (e *testEnv) state(name string) (State, bool) {
	e.t.Helper()
	st, ok, err := e.files.Load(name)
	if err != nil {
		e.t.Fatalf("load state of %s: %v", name, err)
	}
	return st, ok
}

// mustMount mounts and checks the mount point.
func (e *testEnv) mustMount(name, id string) {
	e.t.Helper()
	p, err := e.d.Mount(context.Background(), name, id)
	if err != nil {
		e.t.Fatalf("Mount(%s, %s): %v", name, id, err)
	}
	if p != e.path(name) {
		e.t.Fatalf("Mount(%s, %s) = %q, want %q", name, id, p, e.path(name))
	}
}

func (e *testEnv) mustUnmount(name, id string) {
	e.t.Helper()
	if err := e.d.Unmount(context.Background(), name, id); err != nil {
		e.t.Fatalf("Unmount(%s, %s): %v", name, id, err)
	}
}

// assertGone checks that nothing of the volume is left on this host: no state, no mapping, no
// mount, no hold in the backend, no lock.
func (e *testEnv) assertGone(name string) {
	e.t.Helper()
	if st, ok := e.state(name); ok {
		e.t.Errorf("state of %s remains: %+v", name, st)
	}
	if dev := e.mapper.device(image(name)); dev != "" {
		e.t.Errorf("%s is still mapped at %s", name, dev)
	}
	if dev := e.mounter.device(e.path(name)); dev != "" {
		e.t.Errorf("%s is still mounted (%s)", e.path(name), dev)
	}
	if h := e.prov.holder(name); h != "" {
		e.t.Errorf("%s is still held by %s", name, h)
	}
	if n := e.d.locks.size(); n != 0 {
		e.t.Errorf("%d volume locks remain", n)
	}
}

// assertUp checks that the volume is held, mapped and mounted here with the given IDs.
func (e *testEnv) assertUp(name string, ids ...string) State {
	e.t.Helper()
	st, ok := e.state(name)
	if !ok {
		e.t.Fatalf("no state for %s", name)
	}
	if !slices.Equal(st.IDs, ids) || st.Op != "" || st.OpID != "" {
		e.t.Errorf("state of %s: IDs %q, Op %q/%q; want IDs %q and no Op", name, st.IDs, st.Op, st.OpID, ids)
	}
	dev := e.mapper.device(image(name))
	if dev == "" {
		e.t.Errorf("%s is not mapped", name)
	} else if st.Device != dev {
		e.t.Errorf("state of %s records device %s, the mapping is %s", name, st.Device, dev)
	}
	if got := e.mounter.device(e.path(name)); got == "" || got != dev {
		e.t.Errorf("%s has %q mounted, want %q", e.path(name), got, dev)
	}
	if h := e.prov.holder(name); h != e.cfg.Node {
		e.t.Errorf("%s is held by %q, want %q", name, h, e.cfg.Node)
	}
	return st
}

// assertUses checks that name is up with exactly these uses per caller ID.
func (e *testEnv) assertUses(name string, uses map[string]int) {
	e.t.Helper()
	ids := slices.Sorted(maps.Keys(uses))
	st, ok := e.state(name)
	if !ok {
		e.t.Fatalf("no state for %s", name)
	}
	got := map[string]int{}
	for _, id := range st.IDs {
		got[id] = st.UsesOf(id)
	}
	if !maps.Equal(got, uses) {
		e.t.Errorf("uses of %s: %v, want %v", name, got, uses)
	}
	if !slices.Equal(slices.Sorted(slices.Values(st.IDs)), ids) {
		e.t.Errorf("IDs of %s: %q, want %q", name, st.IDs, ids)
	}
	e.assertUp(name, st.IDs...)
}

// lockRefs is how many callers hold or wait for a volume's lock.
func (d *Driver) lockRefs(name string) int {
	d.locks.mu.Lock()
	defer d.locks.mu.Unlock()
	if vl := d.locks.m[name]; vl != nil {
		return vl.refs
	}
	return 0
}

// waitFor polls cond (state the fakes or the driver expose, not time) for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
