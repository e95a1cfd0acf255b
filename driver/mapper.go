package driver

import "context"

// ImageSpec names an RBD image (or one of its snapshots).
type ImageSpec struct {
	Pool      string
	Namespace string // RADOS namespace; empty for the default
	Image     string
	Snap      string // empty for the image head
}

// String renders the spec the way the rbd CLI does: pool[/namespace]/image[@snap].
func (s ImageSpec) String() string {
	out := s.Pool + "/"
	if s.Namespace != "" {
		out += s.Namespace + "/"
	}
	out += s.Image
	if s.Snap != "" {
		out += "@" + s.Snap
	}
	return out
}

// MapRequest is what a Mapper needs to make an image a local block device.
type MapRequest struct {
	ImageSpec
	ReadOnly bool
	// Monitors are the v1 monitor addresses (host:port) for clients that need them (krbd).
	Monitors []string
	// User is the cephx client name without "client.".
	User string
	// Options are extra mapper options (krbd map options such as "queue_depth=128").
	Options []string
}

// Mapping is an image mapped on this host.
type Mapping struct {
	ImageSpec
	Device   string // block device path, e.g. /dev/rbd0 or /dev/loop3
	ReadOnly bool
	// Client is the address (ip:port/nonce) of the Ceph client that does the mapping's I/O, when
	// the mapper knows it (krbd: the kernel client's client_addr); "" otherwise.
	Client string `json:",omitempty"`
}

// Mapper makes RBD images block devices on this host. Every method honours ctx's deadline.
// Map is idempotent (an image already mapped returns its existing device, never a second one);
// a failed Map leaves nothing behind; Unmap of an image that is not mapped succeeds.
type Mapper interface {
	Map(ctx context.Context, req MapRequest) (Mapping, error)
	Unmap(ctx context.Context, spec ImageSpec) error
	List(ctx context.Context) ([]Mapping, error)
}
