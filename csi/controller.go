package csi

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// GetPluginInfo implements csi.IdentityServer.
func (s *Server) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: PluginName, VendorVersion: s.Version}, nil
}

// GetPluginCapabilities implements csi.IdentityServer: a controller service, no topology (every
// node reaches the whole cluster).
func (s *Server) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{{
		Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_CONTROLLER_SERVICE}},
	}}}, nil
}

// Probe implements csi.IdentityServer: ready once the start-up reconcile lets calls in.
func (s *Server) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(s.Core.Ready())}, nil
}

// ControllerGetCapabilities implements csi.ControllerServer. GET_CAPACITY is advertised where
// the backend can say (BACKEND=rbd). PUBLISH_UNPUBLISH_VOLUME is not advertised: the claim on a volume (host lock, Cinder attachment) is taken by the node that
// maps it, in NodeStage, atomically with the check for another holder (docs/CSI.md).
func (s *Server) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	var out []*csi.ControllerServiceCapability
	caps := []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_LIST_VOLUMES,
		csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	}
	if s.Capacity != nil {
		caps = append(caps, csi.ControllerServiceCapability_RPC_GET_CAPACITY)
	}
	for _, c := range caps {
		out = append(out, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
			Rpc: &csi.ControllerServiceCapability_RPC{Type: c}}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: out}, nil
}

// access is what a volume capability asks of a stage.
type access struct {
	readOnly bool // SINGLE_NODE_READER_ONLY, MULTI_NODE_READER_ONLY, or the mount flag ro
	shared   bool // MULTI_NODE_READER_ONLY: a shared read-only claim, mapped read-only
	single   bool // SINGLE_NODE_SINGLE_WRITER
	block    bool // the block access type: the raw device is published
	fsType   string
	flags    []string
}

// checkCapability accepts what the core can honour: a filesystem (mount access type) or the raw
// device (block access type) written on one node at a time, or read on many
// (MULTI_NODE_READER_ONLY: mapped read-only). Everything else is refused with the reason.
func checkCapability(c *csi.VolumeCapability) (access, error) {
	if c == nil {
		return access{}, status.Error(codes.InvalidArgument, "a volume capability is required")
	}
	var a access
	switch t := c.GetAccessType().(type) {
	case *csi.VolumeCapability_Mount:
		a.fsType, a.flags = t.Mount.GetFsType(), t.Mount.GetMountFlags()
	case *csi.VolumeCapability_Block:
		a.block = true
	default:
		return a, status.Error(codes.InvalidArgument, "the volume capability has no access type: use mount")
	}
	if a.fsType != "" && !contains(driver.FSTypes, a.fsType) {
		return a, status.Errorf(codes.InvalidArgument, "filesystem %q: allowed are %s", a.fsType, strings.Join(driver.FSTypes, ", "))
	}
	for _, f := range a.flags {
		if f != "ro" {
			return a, status.Errorf(codes.InvalidArgument, "mount flag %q: only ro is taken at publish time; give mount options when creating the volume (--opt mount-options=...)", f)
		}
		a.readOnly = true
	}
	switch m := c.GetAccessMode().GetMode(); m {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER:
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER:
		a.single = true
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY:
		a.readOnly = true
	case csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY:
		a.readOnly, a.shared = true, true
	case csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER, csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER:
		return a, status.Errorf(codes.InvalidArgument, "access mode %s: an ext4 or xfs filesystem on an RBD image can be written by one node only: "+
			"use --scope single to write it, or --scope multi --sharing readonly to read it on many nodes", m)
	default:
		return a, status.Errorf(codes.InvalidArgument, "access mode %s is not supported: use --scope single", m)
	}
	if a.block && a.readOnly && !a.shared {
		return a, errReadOnlyBlock
	}
	return a, nil
}

// errReadOnlyBlock: a read-only bind of a device node does not stop writes to the device; only the
// read-only mapping of MULTI_NODE_READER_ONLY does.
var errReadOnlyBlock = status.Error(codes.InvalidArgument, "a read-only block volume is supported only with --scope multi --sharing readonly (MULTI_NODE_READER_ONLY), which maps the device read-only: "+
	"with the other access modes the device is mapped read-write, and a read-only bind of a device node does not stop writes to it")

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

const mib = 1 << 20

// CreateVolume implements csi.ControllerServer. The parameters are the -o options of the volume
// protocol (size, fstype, mkfs-options, mount-options, pool, ...); the capacity range, when
// given, sets the size instead. The volume's ID is its name.
func (s *Server) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	name := req.GetName()
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, "a volume name is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume capabilities are required")
	}
	if req.GetVolumeContentSource() != nil {
		return nil, status.Error(codes.InvalidArgument, "volumes from snapshots or clones are not supported through CSI; use --opt from-snapshot=image@snap (BACKEND=rbd)")
	}
	params := map[string]string{}
	for k, v := range req.GetParameters() {
		params[k] = v
	}
	for _, c := range req.GetVolumeCapabilities() {
		a, err := checkCapability(c)
		if err != nil {
			return nil, err
		}
		if a.fsType != "" {
			if fs, ok := params[driver.OptFSType]; ok && fs != a.fsType {
				return nil, status.Errorf(codes.InvalidArgument, "fstype %s and the capability's filesystem %s differ", fs, a.fsType)
			}
			params[driver.OptFSType] = a.fsType
		}
	}
	if err := s.sizeFromRange(ctx, name, req.GetCapacityRange(), params); err != nil {
		if errors.Is(err, driver.ErrOtherFrontEnd) {
			// The name is taken, by a volume this front end does not serve.
			return nil, status.Error(codes.AlreadyExists, err.Error())
		}
		return nil, err
	}
	if err := s.Core.Create(ctx, name, params); err != nil {
		return nil, err
	}
	vol, err := s.Core.Describe(ctx, name)
	if err != nil {
		return nil, err
	}
	return &csi.CreateVolumeResponse{Volume: csiVolume(vol)}, nil
}

func csiVolume(v driver.Volume) *csi.Volume {
	return &csi.Volume{VolumeId: v.Name, CapacityBytes: int64(v.Size), VolumeContext: map[string]string{driver.OptFSType: v.FSType}}
}

// sizeFromRange sets params' size from the capacity range: the required bytes (at least the
// filesystem's minimum), rounded up to MiB and then as the backend rounds (Cinder: whole GiB),
// refused beyond the limit. For an existing volume within the range the size is left out, so
// that the core's idempotent Create accepts it; one outside the range is then refused by the
// core's comparison (AlreadyExists).
func (s *Server) sizeFromRange(ctx context.Context, name string, cr *csi.CapacityRange, params map[string]string) error {
	if cr == nil || (cr.GetRequiredBytes() == 0 && cr.GetLimitBytes() == 0) {
		return nil
	}
	required, limit := cr.GetRequiredBytes(), cr.GetLimitBytes()
	if required < 0 || limit < 0 || (limit > 0 && required > limit) {
		return status.Errorf(codes.InvalidArgument, "capacity range: required %d bytes, limit %d: both must be positive and required at most the limit", required, limit)
	}
	if _, ok := params[driver.OptSize]; ok {
		return status.Error(codes.InvalidArgument, "give the size either as the capacity range (--required-bytes, --limit-bytes) or as --opt size, not both")
	}
	want := uint64(required)
	if want == 0 {
		want = uint64(limit)
	}
	fs := params[driver.OptFSType]
	if fs == "" {
		fs = s.Core.DefaultFSType()
	}
	want = max(want, driver.MinSize(fs))
	mibs := (want + mib - 1) / mib
	if made := s.Core.RoundSize(mibs * mib); limit > 0 && made > uint64(limit) {
		return status.Errorf(codes.OutOfRange, "capacity range: the backend makes a volume of %s for %d required bytes (the %s minimum, whole units), above the limit of %d bytes",
			driver.FormatSize(made), required, fs, limit)
	}
	vol, err := s.Core.Describe(ctx, name)
	switch {
	case err == nil:
		if vol.Size >= uint64(required) && (limit == 0 || vol.Size <= uint64(limit)) {
			return nil
		}
	case !errors.Is(err, driver.ErrNotFound):
		return err
	}
	params[driver.OptSize] = fmt.Sprintf("%dM", mibs)
	return nil
}

// DeleteVolume implements csi.ControllerServer: the core's Remove (REMOVE_ACTION applies). A
// volume that does not exist is success; one in use anywhere is FailedPrecondition.
func (s *Server) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "a volume ID is required")
	}
	if err := driver.ValidateName(req.GetVolumeId()); err != nil {
		return &csi.DeleteVolumeResponse{}, nil // no volume can have that ID
	}
	err := s.Core.Remove(ctx, req.GetVolumeId())
	if err != nil && !errors.Is(err, driver.ErrNotFound) {
		return nil, err
	}
	return &csi.DeleteVolumeResponse{}, nil
}

// ValidateVolumeCapabilities implements csi.ControllerServer.
func (s *Server) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "a volume ID is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume capabilities are required")
	}
	vol, err := s.Core.Describe(ctx, req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	for _, c := range req.GetVolumeCapabilities() {
		a, err := checkCapability(c)
		if err == nil && a.fsType != "" && a.fsType != vol.FSType {
			err = fmt.Errorf("the volume has an %s filesystem, not %s", vol.FSType, a.fsType)
		}
		if err != nil {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: status.Convert(err).Message()}, nil
		}
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext: req.GetVolumeContext(), VolumeCapabilities: req.GetVolumeCapabilities(), Parameters: req.GetParameters(),
	}}, nil
}

// tokenPrefix marks ListVolumes' tokens: the next page starts after the volume named in it, so
// that a volume added or removed between pages shifts nothing.
const tokenPrefix = "after:"

// ListVolumes implements csi.ControllerServer, in name order, paged by max_entries.
func (s *Server) ListVolumes(ctx context.Context, req *csi.ListVolumesRequest) (*csi.ListVolumesResponse, error) {
	after := ""
	if t := req.GetStartingToken(); t != "" {
		var ok bool
		if after, ok = strings.CutPrefix(t, tokenPrefix); !ok || driver.ValidateName(after) != nil {
			return nil, status.Errorf(codes.Aborted, "starting token %q was not made by this plugin", t)
		}
	}
	if req.GetMaxEntries() < 0 {
		return nil, status.Error(codes.InvalidArgument, "max_entries must not be negative")
	}
	vols, err := s.Core.Volumes(ctx)
	if err != nil {
		return nil, err
	}
	sort.Slice(vols, func(i, j int) bool { return vols[i].Name < vols[j].Name })
	out := &csi.ListVolumesResponse{}
	for _, v := range vols {
		if v.Name <= after {
			continue
		}
		if m := int(req.GetMaxEntries()); m > 0 && len(out.Entries) == m {
			out.NextToken = tokenPrefix + out.Entries[m-1].Volume.VolumeId
			break
		}
		out.Entries = append(out.Entries, &csi.ListVolumesResponse_Entry{Volume: &csi.Volume{VolumeId: v.Name, CapacityBytes: int64(v.Size)}})
	}
	return out, nil
}

// GetCapacity implements csi.ControllerServer (BACKEND=rbd): the free bytes of the pool the
// parameters name (RBD_POOL by default), as Ceph computes them for the pool's replication and
// fullest OSD. Capabilities the plugin cannot honour have no capacity (0).
func (s *Server) GetCapacity(ctx context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	if s.Capacity == nil {
		return nil, status.Error(codes.Unimplemented, "GetCapacity is not offered with this backend (Cinder does not tell a project its pools' free space)")
	}
	fs := req.GetParameters()[driver.OptFSType]
	for _, c := range req.GetVolumeCapabilities() {
		a, err := checkCapability(c)
		if err != nil {
			return &csi.GetCapacityResponse{}, nil
		}
		if a.fsType != "" {
			fs = a.fsType
		}
	}
	if fs == "" {
		fs = s.Core.DefaultFSType()
	}
	n, err := s.Capacity.Capacity(ctx, req.GetParameters())
	if err != nil {
		return nil, err
	}
	return &csi.GetCapacityResponse{AvailableCapacity: int64(min(n, math.MaxInt64)),
		MinimumVolumeSize: wrapperspb.Int64(int64(driver.MinSize(fs)))}, nil
}
