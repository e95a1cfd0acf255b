package csi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// fakeCore is a Core of volumes in memory that records each Create's options; round is the
// backend's rounding (Cinder: whole GiB).
type fakeCore struct {
	vols    map[string]driver.Volume
	creates []map[string]string
	round   uint64
	err     error // returned by every call when set
}

func newFakeCore() *fakeCore { return &fakeCore{vols: map[string]driver.Volume{}, round: 1} }

func (c *fakeCore) Ready() bool { return true }

func (c *fakeCore) Create(_ context.Context, name string, raw map[string]string) error {
	if c.err != nil {
		return c.err
	}
	c.creates = append(c.creates, raw)
	size := uint64(10 << 30)
	if s, ok := raw[driver.OptSize]; ok {
		var err error
		if size, err = driver.ParseSize(s); err != nil {
			return err
		}
		size = c.RoundSize(size)
	}
	if v, ok := c.vols[name]; ok {
		if _, given := raw[driver.OptSize]; given && v.Size != size {
			return fmt.Errorf("create volume %s: %w: other size", name, driver.ErrExists)
		}
		return nil
	}
	fs := raw[driver.OptFSType]
	if fs == "" {
		fs = "ext4"
	}
	c.vols[name] = driver.Volume{Name: name, Size: size, FSType: fs}
	return nil
}

func (c *fakeCore) Describe(_ context.Context, name string) (driver.Volume, error) {
	if c.err != nil {
		return driver.Volume{}, c.err
	}
	v, ok := c.vols[name]
	if !ok {
		return v, fmt.Errorf("volume %s: %w", name, driver.ErrNotFound)
	}
	return v, nil
}

func (c *fakeCore) Volumes(context.Context) ([]driver.Volume, error) {
	var out []driver.Volume
	for _, v := range c.vols {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name > out[j].Name }) // not in order
	return out, c.err
}

func (c *fakeCore) Remove(_ context.Context, name string) error {
	if c.err != nil {
		return c.err
	}
	if _, ok := c.vols[name]; !ok {
		return fmt.Errorf("volume %s: %w", name, driver.ErrNotFound)
	}
	delete(c.vols, name)
	return nil
}

func (c *fakeCore) RoundSize(s uint64) uint64 { return (s + c.round - 1) / c.round * c.round }
func (c *fakeCore) DefaultFSType() string     { return "ext4" }

func newServer(c *fakeCore) *Server {
	l := logrus.New()
	l.Out = io.Discard
	return &Server{Core: c, Timeout: 5 * time.Second, Log: logrus.NewEntry(l)}
}

func mountCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode}}
}

func wantCode(t *testing.T, what string, err error, code codes.Code, contains string) {
	t.Helper()
	err = Status(err) // as the interceptor translates it
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), contains) {
		t.Errorf("%s: %v; want %s mentioning %q", what, err, code, contains)
	}
}

// Every sentinel of the core reaches the orchestrator as the code the CSI spec gives it.
func TestStatusCodes(t *testing.T) {
	for _, c := range []struct {
		err  error
		code codes.Code
	}{
		{fmt.Errorf("mount volume v: %w: volume v is in use by host-b", driver.ErrBusyElsewhere), codes.FailedPrecondition},
		{fmt.Errorf("remove volume v: %w: mounted here", driver.ErrInUse), codes.FailedPrecondition},
		{fmt.Errorf("%w: not staged", driver.ErrNotStaged), codes.FailedPrecondition},
		{fmt.Errorf("volume v: %w", driver.ErrNotFound), codes.NotFound},
		{fmt.Errorf("create volume v: %w: other size", driver.ErrExists), codes.AlreadyExists},
		{fmt.Errorf("volume v %w: made through the volume plugin", driver.ErrOtherFrontEnd), codes.FailedPrecondition},
		{fmt.Errorf("create volume v: it %w: %w", driver.ErrExists, driver.ErrOtherFrontEnd), codes.AlreadyExists},
		{fmt.Errorf("%w: unknown option", driver.ErrInvalid), codes.InvalidArgument},
		{fmt.Errorf("stage volume v: %w", fakeReadOnly{fmt.Errorf("%w: volume v is read-only", driver.ErrInvalid)}), codes.FailedPrecondition},
		{fmt.Errorf("cinder create v: %w (%w): VolumeLimitExceeded", driver.ErrInvalid, driver.ErrNoSpace), codes.ResourceExhausted},
		{fmt.Errorf("rbd create volumes/v: %w: EDQUOT", driver.ErrNoSpace), codes.ResourceExhausted},
		{fmt.Errorf("%w: cephx", driver.ErrPermission), codes.PermissionDenied},
		{fmt.Errorf("%w: Ceph is not reachable yet", driver.ErrTimeout), codes.DeadlineExceeded},
		{fmt.Errorf("cinder get v: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{fmt.Errorf("cinder get v: Cinder unreachable or failing: dial tcp: connection refused"), codes.Unavailable},
		{fmt.Errorf("keystone: %w", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}), codes.Unavailable},
		{fmt.Errorf("something else"), codes.Internal},
		{status.Error(codes.OutOfRange, "kept"), codes.OutOfRange},
	} {
		got := Status(c.err)
		if status.Code(got) != c.code || !strings.Contains(status.Convert(got).Message(), status.Convert(c.err).Message()) {
			t.Errorf("Status(%v) = %v, want %s with the message", c.err, got, c.code)
		}
	}
}

// fakeReadOnly marks an error with driver.ErrReadOnly, as the core marks its refusals of a
// read-only volume (which wrap ErrInvalid too).
type fakeReadOnly struct{ error }

func (e fakeReadOnly) Unwrap() error        { return e.error }
func (e fakeReadOnly) Is(target error) bool { return target == driver.ErrReadOnly }

// The access modes the core honours pass; the others are refused with the reason.
func TestCheckCapability(t *testing.T) {
	m := csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
	for _, mode := range []csi.VolumeCapability_AccessMode_Mode{m, csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER} {
		if a, err := checkCapability(mountCap(mode)); err != nil || a.readOnly || a.single {
			t.Errorf("%s: %+v, %v", mode, a, err)
		}
	}
	if a, err := checkCapability(mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER)); err != nil || !a.single {
		t.Errorf("SINGLE_NODE_SINGLE_WRITER: %+v, %v", a, err)
	}
	if a, err := checkCapability(mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY)); err != nil || !a.readOnly {
		t.Errorf("SINGLE_NODE_READER_ONLY: %+v, %v", a, err)
	}
	if a, err := checkCapability(mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY)); err != nil || !a.readOnly || !a.shared || a.single {
		t.Errorf("MULTI_NODE_READER_ONLY: %+v, %v", a, err)
	}
	for _, mode := range []csi.VolumeCapability_AccessMode_Mode{csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER} {
		_, err := checkCapability(mountCap(mode))
		wantCode(t, mode.String(), err, codes.InvalidArgument, "written by one node only")
		wantCode(t, mode.String(), err, codes.InvalidArgument, "--sharing readonly to read it on many nodes")
	}
	blockCap := func(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
		return &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode}}
	}
	if a, err := checkCapability(blockCap(m)); err != nil || !a.block || a.readOnly {
		t.Errorf("block: %+v, %v", a, err)
	}
	_, err := checkCapability(blockCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY))
	wantCode(t, "read-only block", err, codes.InvalidArgument, "only with --scope multi --sharing readonly")
	if a, err := checkCapability(blockCap(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY)); err != nil || !a.block || !a.readOnly || !a.shared {
		t.Errorf("block, MULTI_NODE_READER_ONLY: %+v, %v", a, err)
	}
	c := mountCap(m)
	c.GetMount().FsType = "btrfs"
	_, err = checkCapability(c)
	wantCode(t, "btrfs", err, codes.InvalidArgument, "allowed are ext4, xfs")
	c = mountCap(m)
	c.GetMount().MountFlags = []string{"nosuid"}
	_, err = checkCapability(c)
	wantCode(t, "mount flags", err, codes.InvalidArgument, "mount-options")
	_, err = checkCapability(nil)
	wantCode(t, "no capability", err, codes.InvalidArgument, "required")
}

// CreateVolume: the parameters are -o options; the capacity range sets the size (rounded up to
// MiB, at least the filesystem's minimum, as the backend rounds, within the limit); an existing
// volume within the range is accepted, one outside it is AlreadyExists.
func TestCreateVolume(t *testing.T) {
	core := newFakeCore()
	s := newServer(core)
	caps := []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)}
	create := func(name string, cr *csi.CapacityRange, params map[string]string) (*csi.CreateVolumeResponse, error) {
		return s.CreateVolume(context.Background(), &csi.CreateVolumeRequest{Name: name, CapacityRange: cr, Parameters: params, VolumeCapabilities: caps})
	}
	r, err := create("a", &csi.CapacityRange{RequiredBytes: 1000}, map[string]string{"pool": "fast"})
	if err != nil || r.Volume.VolumeId != "a" || r.Volume.CapacityBytes != 16<<20 {
		t.Fatalf("create a: %v, %v", r, err)
	}
	if got := core.creates[0]; got[driver.OptSize] != "16M" || got["pool"] != "fast" {
		t.Errorf("create options %v", got)
	}
	if r, err := create("a", &csi.CapacityRange{RequiredBytes: 10 << 20, LimitBytes: 20 << 20}, nil); err != nil || r.Volume.CapacityBytes != 16<<20 {
		t.Errorf("create a again within the range: %v, %v", r, err)
	}
	if _, given := core.creates[1][driver.OptSize]; given {
		t.Errorf("an existing volume within the range was compared by size: %v", core.creates[1])
	}
	_, err = create("a", &csi.CapacityRange{RequiredBytes: 32 << 20}, nil)
	wantCode(t, "create a bigger", err, codes.AlreadyExists, "other size")
	if r, err := create("x", &csi.CapacityRange{RequiredBytes: 1 << 20}, map[string]string{"fstype": "xfs"}); err != nil || r.Volume.CapacityBytes != 300<<20 {
		t.Errorf("xfs: %v, %v (the xfs minimum is 300M)", r, err)
	}
	core.round = 1 << 30 // Cinder
	if r, err := create("c", &csi.CapacityRange{RequiredBytes: 1 << 30, LimitBytes: 1 << 30}, nil); err != nil || r.Volume.CapacityBytes != 1<<30 {
		t.Errorf("cinder 1G: %v, %v", r, err)
	}
	_, err = create("d", &csi.CapacityRange{RequiredBytes: 100 << 20, LimitBytes: 500 << 20}, nil)
	wantCode(t, "cinder below a GiB limit", err, codes.OutOfRange, "above the limit")
	_, err = create("e", &csi.CapacityRange{RequiredBytes: 1 << 30}, map[string]string{"size": "2G"})
	wantCode(t, "size twice", err, codes.InvalidArgument, "not both")
	_, err = create("", nil, nil)
	wantCode(t, "no name", err, codes.InvalidArgument, "name")
	_, err = s.CreateVolume(context.Background(), &csi.CreateVolumeRequest{Name: "f"})
	wantCode(t, "no capabilities", err, codes.InvalidArgument, "capabilities")
	core.vols["vp"] = driver.Volume{Name: "vp", Size: 1 << 30}
	core.err = fmt.Errorf("volume vp %w: it was created through Docker's volume protocol", driver.ErrOtherFrontEnd)
	_, err = create("vp", &csi.CapacityRange{RequiredBytes: 1 << 30}, nil)
	wantCode(t, "a volume of the volume plugin", err, codes.AlreadyExists, "volume protocol")
	core.err = fmt.Errorf("volume g: %w: Ceph is not reachable yet", driver.ErrTimeout)
	_, err = create("g", nil, nil)
	if got := Status(err); status.Code(got) != codes.DeadlineExceeded {
		t.Errorf("backend outage: %v", got)
	}
}

// ListVolumes pages in name order with tokens naming the last volume of a page; a volume
// removed between pages shifts nothing; a token not made here is Aborted.
func TestListVolumesPages(t *testing.T) {
	core := newFakeCore()
	for _, n := range []string{"e", "b", "d", "a", "c"} {
		core.vols[n] = driver.Volume{Name: n, Size: 1 << 30}
	}
	s := newServer(core)
	list := func(token string) (*csi.ListVolumesResponse, error) {
		return s.ListVolumes(context.Background(), &csi.ListVolumesRequest{MaxEntries: 2, StartingToken: token})
	}
	names := func(r *csi.ListVolumesResponse) string {
		var out []string
		for _, e := range r.Entries {
			out = append(out, e.Volume.VolumeId)
		}
		return strings.Join(out, ",")
	}
	r, err := list("")
	if err != nil || names(r) != "a,b" || r.NextToken == "" {
		t.Fatalf("page 1: %v, %v", r, err)
	}
	delete(core.vols, "b")
	r, err = list(r.NextToken)
	if err != nil || names(r) != "c,d" {
		t.Fatalf("page 2: %v, %v", r, err)
	}
	r, err = list(r.NextToken)
	if err != nil || names(r) != "e" || r.NextToken != "" {
		t.Fatalf("page 3: %v, %v", r, err)
	}
	_, err = list("invalid-token")
	wantCode(t, "bad token", err, codes.Aborted, "not made by this plugin")
}

// DeleteVolume is idempotent; ValidateVolumeCapabilities confirms what the core honours and
// says why not otherwise.
func TestDeleteAndValidate(t *testing.T) {
	core := newFakeCore()
	core.vols["v"] = driver.Volume{Name: "v", Size: 1 << 30, FSType: "ext4"}
	s := newServer(core)
	ctx := context.Background()
	for _, id := range []string{"v", "v", "no/such id"} {
		if _, err := s.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
			t.Errorf("DeleteVolume %q: %v", id, err)
		}
	}
	core.vols["v"] = driver.Volume{Name: "v", Size: 1 << 30, FSType: "ext4"}
	ok, err := s.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "v",
		VolumeCapabilities: []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)}})
	if err != nil || ok.Confirmed == nil {
		t.Errorf("validate SINGLE_NODE_WRITER: %v, %v", ok, err)
	}
	no, err := s.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "v",
		VolumeCapabilities: []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)}})
	if err != nil || no.Confirmed != nil || !strings.Contains(no.Message, "written by one node only") {
		t.Errorf("validate MULTI_NODE_MULTI_WRITER: %v, %v", no, err)
	}
	ro, err := s.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "v",
		VolumeCapabilities: []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY)}})
	if err != nil || ro.Confirmed == nil {
		t.Errorf("validate MULTI_NODE_READER_ONLY: %v, %v", ro, err)
	}
	_, err = s.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "w",
		VolumeCapabilities: []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)}})
	if got := Status(err); status.Code(got) != codes.NotFound {
		t.Errorf("validate a missing volume: %v", got)
	}
}

type call struct {
	op  string
	err error
}

type recordCalls struct{ calls chan call }

func (r recordCalls) Call(op string, err error, _ time.Duration) { r.calls <- call{op, err} }

// Over a real socket: the interceptor gives the client the CSI code of the core's error, and the
// observer the core's own error (with its sentinel) under the CSI method's name.
func TestServeTranslatesAndObserves(t *testing.T) {
	core := newFakeCore()
	core.vols["v"] = driver.Volume{Name: "v", Size: 1 << 30}
	obs := recordCalls{make(chan call, 4)}
	s := newServer(core)
	s.Observer = obs
	ln, path, err := Listen("unix://" + filepath.Join(t.TempDir(), "csi.sock"))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { ln.Close() })
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = csi.NewControllerClient(conn).CreateVolume(context.Background(), &csi.CreateVolumeRequest{Name: "v",
		VolumeCapabilities: []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)},
		Parameters:         map[string]string{"size": "2G"}})
	if status.Code(err) != codes.AlreadyExists {
		t.Errorf("CreateVolume of an existing volume with another size: %v, want AlreadyExists", err)
	}
	select {
	case c := <-obs.calls:
		if c.op != "CreateVolume" || !errors.Is(c.err, driver.ErrExists) {
			t.Errorf("observed %q, %v; want CreateVolume with the core's ErrExists", c.op, c.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the observer was not told of the call")
	}
	if _, _, err := Listen("csi.sock"); err == nil {
		t.Error("Listen accepted a relative endpoint")
	}
}

type fakeCapacity struct {
	n    uint64
	err  error
	seen map[string]string
}

func (f *fakeCapacity) Capacity(_ context.Context, params map[string]string) (uint64, error) {
	f.seen = params
	return f.n, f.err
}

func advertises(t *testing.T, s *Server, want csi.ControllerServiceCapability_RPC_Type) bool {
	t.Helper()
	r, err := s.ControllerGetCapabilities(context.Background(), &csi.ControllerGetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range r.Capabilities {
		if c.GetRpc().GetType() == want {
			return true
		}
	}
	return false
}

// GetCapacity is advertised and answered only with a Capacity (BACKEND=rbd): the backend's
// figure for the parameters, with the filesystem's minimum size; a capability the plugin cannot
// honour has none; the backend's errors are translated.
func TestGetCapacity(t *testing.T) {
	s := newServer(newFakeCore())
	if advertises(t, s, csi.ControllerServiceCapability_RPC_GET_CAPACITY) {
		t.Error("GET_CAPACITY advertised without a Capacity")
	}
	_, err := s.GetCapacity(context.Background(), &csi.GetCapacityRequest{})
	wantCode(t, "GetCapacity without a Capacity", err, codes.Unimplemented, "not offered")

	fc := &fakeCapacity{n: 5 << 30}
	s.Capacity = fc
	if !advertises(t, s, csi.ControllerServiceCapability_RPC_GET_CAPACITY) {
		t.Error("GET_CAPACITY not advertised with a Capacity")
	}
	r, err := s.GetCapacity(context.Background(), &csi.GetCapacityRequest{Parameters: map[string]string{"pool": "fast", "fstype": "xfs"},
		VolumeCapabilities: []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)}})
	if err != nil || r.AvailableCapacity != 5<<30 || r.MinimumVolumeSize.GetValue() != int64(driver.MinSize("xfs")) || fc.seen["pool"] != "fast" {
		t.Errorf("GetCapacity: %v, %v (parameters seen %v)", r, err, fc.seen)
	}
	r, err = s.GetCapacity(context.Background(), &csi.GetCapacityRequest{
		VolumeCapabilities: []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)}})
	if err != nil || r.AvailableCapacity != 0 {
		t.Errorf("GetCapacity for a mode not honoured: %v, %v; want 0", r, err)
	}
	fc.err = fmt.Errorf("%w: pool nope does not exist", driver.ErrInvalid)
	_, err = s.GetCapacity(context.Background(), &csi.GetCapacityRequest{Parameters: map[string]string{"pool": "nope"}})
	wantCode(t, "GetCapacity of an unknown pool", err, codes.InvalidArgument, "does not exist")
}
