// Package csi serves the Container Storage Interface (identity, controller and node services)
// on the driver core, for Docker swarm's cluster volumes (interface types docker.csicontroller/1.0
// and docker.csinode/1.0). It validates requests, translates them into the core's calls and
// translates the core's sentinel errors into CSI status codes; the volume semantics (options,
// one host at a time, crash-safe state, reconcile) are the core's.
package csi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// PluginName is the CSI driver name (GetPluginInfo).
const PluginName = "ceph-docker-plugin.cephdocker.github.io"

// Core is what the controller needs of the driver core.
type Core interface {
	Ready() bool
	Create(ctx context.Context, name string, raw map[string]string) error
	Describe(ctx context.Context, name string) (driver.Volume, error)
	Volumes(ctx context.Context) ([]driver.Volume, error)
	Remove(ctx context.Context, name string) error
	RoundSize(size uint64) uint64
	DefaultFSType() string
}

// NodeCore is what the node service needs of the driver core.
type NodeCore interface {
	NodeID() string
	Stage(ctx context.Context, name string, req driver.StageRequest) error
	Unstage(ctx context.Context, name, stagingPath string) error
	Publish(ctx context.Context, name string, req driver.PublishRequest) error
	Unpublish(ctx context.Context, name, target string) error
}

// Capacity says how many bytes a new volume made with the given parameters (the -o options)
// can have. Only a backend that can say has one.
type Capacity interface {
	Capacity(ctx context.Context, params map[string]string) (uint64, error)
}

var (
	_ Core     = (*driver.Driver)(nil)
	_ NodeCore = (*driver.Node)(nil)
)

// Server implements the three CSI services.
type Server struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer

	Core Core
	Node NodeCore
	// Capacity, when set, answers GetCapacity (GET_CAPACITY is advertised only then).
	Capacity Capacity
	Version  string
	// Timeout bounds each call (a shorter deadline from the caller wins).
	Timeout time.Duration
	Log     *logrus.Entry
	// Observer, when set, is told of every call's outcome and duration (metrics), with the
	// CSI method's name as the operation.
	Observer CallObserver
}

// CallObserver is told of each call (driver.Observer has this method).
type CallObserver interface {
	Call(op string, err error, took time.Duration)
}

// Serve registers the services on a gRPC server and serves ln until it is closed.
func (s *Server) Serve(ln net.Listener) error {
	g := grpc.NewServer(grpc.UnaryInterceptor(s.intercept))
	csi.RegisterIdentityServer(g, s)
	csi.RegisterControllerServer(g, s)
	csi.RegisterNodeServer(g, s)
	return g.Serve(ln)
}

// volumeIDer is every request that names a volume.
type volumeIDer interface{ GetVolumeId() string }

// intercept gives each call its deadline, logs it (method, volume, duration; never the request,
// which may carry secrets) and translates the core's errors into status codes.
func (s *Server) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	start := time.Now()
	resp, err := h(ctx, req)
	op, took := info.FullMethod[strings.LastIndex(info.FullMethod, "/")+1:], time.Since(start)
	if s.Observer != nil {
		s.Observer.Call(op, err, took) // the core's error: its sentinels, not the status code
	}
	log := s.Log.WithFields(logrus.Fields{"op": op, "duration": took.Round(time.Millisecond)})
	if v, ok := req.(volumeIDer); ok && v.GetVolumeId() != "" {
		log = log.WithField("volume", v.GetVolumeId())
	} else if r, ok := req.(*csi.CreateVolumeRequest); ok {
		log = log.WithField("volume", r.GetName())
	}
	if err != nil {
		err = Status(err)
		log.WithField("code", status.Code(err).String()).WithError(err).Warn("request failed")
		return nil, err
	}
	log.Debug("request done")
	return resp, nil
}

// Status translates an error of the core into a CSI status: the sentinels of driver/errors.go
// into the codes the CSI spec gives them. An error that is already a status is kept.
func Status(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, driver.ErrBusyElsewhere), errors.Is(err, driver.ErrInUse), errors.Is(err, driver.ErrNotStaged):
		code = codes.FailedPrecondition
	case errors.Is(err, driver.ErrReadOnly):
		// The volume is read-only (a writable use of it, a blank one read-only): its state, not
		// the request, is what stops the call.
		code = codes.FailedPrecondition
	case errors.Is(err, driver.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, driver.ErrExists):
		code = codes.AlreadyExists
	case errors.Is(err, driver.ErrOtherFrontEnd):
		code = codes.FailedPrecondition // a volume of the volume plugin: not this front end's to use
	case errors.Is(err, driver.ErrNoSpace):
		code = codes.ResourceExhausted
	case errors.Is(err, driver.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, driver.ErrPermission):
		code = codes.PermissionDenied
	case errors.Is(err, driver.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case isNetError(err) || strings.Contains(err.Error(), "unreachable"):
		// A backend that could not be reached (Cinder's errors say "unreachable").
		code = codes.Unavailable
	}
	return status.Error(code, err.Error())
}

func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}

// Listen opens the CSI endpoint: unix:///path, unix:path or a plain path. A stale socket is
// removed first.
func Listen(endpoint string) (net.Listener, string, error) {
	path := endpoint
	if rest, ok := strings.CutPrefix(endpoint, "unix://"); ok {
		path = rest
	} else if rest, ok := strings.CutPrefix(endpoint, "unix:"); ok {
		path = rest
	}
	if !filepath.IsAbs(path) {
		return nil, "", fmt.Errorf("CSI endpoint %q: use unix:///absolute/path", endpoint)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, "", err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, "", fmt.Errorf("remove the stale socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, "", fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, "", err
	}
	return ln, path, nil
}
