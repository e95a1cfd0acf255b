package csi

import (
	"context"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// NodeGetCapabilities implements csi.NodeServer: staging (swarm needs it: it publishes only
// what it staged), and SINGLE_NODE_SINGLE_WRITER / SINGLE_NODE_MULTI_WRITER.
func (s *Server) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	var out []*csi.NodeServiceCapability
	for _, c := range []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
		csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	} {
		out = append(out, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{
			Rpc: &csi.NodeServiceCapability_RPC{Type: c}}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: out}, nil
}

// NodeGetInfo implements csi.NodeServer: the node's identity is NODE_NAME, the name the core
// records as the holder of what this node claims. No topology: every node reaches the cluster.
func (s *Server) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: s.Node.NodeID()}, nil
}

// NodeStageVolume implements csi.NodeServer: claim, map, format if blank, mount (the core), and
// a bind mount at the staging path; for the block access type, claim and map only. With
// MULTI_NODE_READER_ONLY the claim is shared and read-only, the mapping read-only, nothing is
// formatted, and every bind is read-only; the writer modes refuse a readonly volume.
func (s *Server) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "a volume ID is required")
	}
	if req.GetStagingTargetPath() == "" {
		return nil, status.Error(codes.InvalidArgument, "a staging target path is required")
	}
	a, err := checkCapability(req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	err = s.Node.Stage(ctx, req.GetVolumeId(), driver.StageRequest{StagingPath: req.GetStagingTargetPath(), ReadOnly: a.readOnly,
		Shared: a.shared, Single: a.single, Block: a.block})
	if err != nil {
		return nil, err
	}
	return &csi.NodeStageVolumeResponse{}, nil
}

// NodeUnstageVolume implements csi.NodeServer.
func (s *Server) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "a volume ID is required")
	}
	if req.GetStagingTargetPath() == "" {
		return nil, status.Error(codes.InvalidArgument, "a staging target path is required")
	}
	if err := s.Node.Unstage(ctx, req.GetVolumeId(), req.GetStagingTargetPath()); err != nil {
		return nil, err
	}
	return &csi.NodeUnstageVolumeResponse{}, nil
}

// NodePublishVolume implements csi.NodeServer: a bind mount of the staging path at the target,
// or for the block access type of the device node on a file at the target.
func (s *Server) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "a volume ID is required")
	}
	if req.GetTargetPath() == "" {
		return nil, status.Error(codes.InvalidArgument, "a target path is required")
	}
	a, err := checkCapability(req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	if req.GetStagingTargetPath() == "" {
		return nil, status.Error(codes.FailedPrecondition, "a staging target path is required: this plugin stages every volume first")
	}
	if a.block && req.GetReadonly() && !a.shared {
		return nil, errReadOnlyBlock
	}
	err = s.Node.Publish(ctx, req.GetVolumeId(), driver.PublishRequest{StagingPath: req.GetStagingTargetPath(),
		Target: req.GetTargetPath(), ReadOnly: req.GetReadonly() || a.readOnly})
	if err != nil {
		return nil, err
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

// NodeUnpublishVolume implements csi.NodeServer: unmounts and removes the target.
func (s *Server) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "a volume ID is required")
	}
	if req.GetTargetPath() == "" {
		return nil, status.Error(codes.InvalidArgument, "a target path is required")
	}
	if err := s.Node.Unpublish(ctx, req.GetVolumeId(), req.GetTargetPath()); err != nil {
		return nil, err
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}
