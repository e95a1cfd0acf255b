package cinder

import (
	"context"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
)

// WaitStatus polls volume id through c until its status is want, as Create waits for a new
// volume: an error status, or ctx's end, fails it. Polls start at 50 ms (or poll, if shorter) and
// are at most poll apart. For tools that drive Cinder beside the plugin (cmd/cdp-bench).
func WaitStatus(ctx context.Context, c *gophercloud.ServiceClient, id, want string, poll time.Duration) (*volumes.Volume, error) {
	return New(Config{Poll: poll}).waitStatus(ctx, c, id, want)
}
