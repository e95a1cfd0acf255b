package plugintest

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/rbd/fuse"
)

// CleanHost removes what plugins (fuse mapper) and hand-made rbd-fuse mappings left under root,
// after a failure, a simulated crash or an interrupted run, and returns the mount points it
// detached. fuseRoots are the rbd-fuse roots under root (a plugin's MOUNT_ROOT/.rbd-fuse). The
// order matters:
//  1. the mappings are listed while rbd-fuse still answers;
//  2. the rbd-fuse daemons are killed: a fenced one never completes I/O, and unmounting a
//     filesystem over it would wait forever for its final writes;
//  3. the volumes' mounts (everything not under a fuse root) are detached, deepest first;
//  4. the loop devices are detached while their backing files still have a path (Unmap finds a
//     loop by it; once the rbd-fuse mount under it is gone, the loop would stay attached to a
//     dead file, its flush stuck in the kernel);
//  5. what is left (rbd-fuse's own mounts) is detached.
func CleanHost(ctx context.Context, root string, fuseRoots ...string) []string {
	root = filepath.Clean(root)
	maps := make([][]driver.Mapping, len(fuseRoots))
	for i, r := range fuseRoots {
		maps[i], _ = fuse.New(r, "", "").List(ctx)
	}
	for _, pid := range fuse.Daemons(root) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	var detached []string
	unmount := func(keep func(string) bool) {
		mounts, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(root))
		for i := len(mounts) - 1; i >= 0; i-- {
			if mp := mounts[i].Mountpoint; !keep(mp) {
				_ = unix.Unmount(mp, unix.MNT_DETACH)
				detached = append(detached, mp)
			}
		}
	}
	underFuse := func(mp string) bool {
		for _, r := range fuseRoots {
			if mp == r || strings.HasPrefix(mp, r+"/") {
				return true
			}
		}
		return false
	}
	unmount(underFuse)
	for i, r := range fuseRoots {
		f := fuse.New(r, "", "")
		for _, m := range maps[i] {
			_ = f.Unmap(ctx, m.ImageSpec)
		}
	}
	unmount(func(string) bool { return false })
	return detached
}

// CleanHost removes what this host's plugin left: its mounts and its fuse mappings.
func (p *Process) CleanHost(ctx context.Context) []string {
	return CleanHost(ctx, p.MountRoot(), p.FuseRoot())
}

// Volume is a volume as the plugin's Get and List answer it.
type Volume struct {
	Name       string
	Mountpoint string
	Status     map[string]any
}

// Call posts one request and decodes the answer into resp (nil: ignored); a refusal (the
// answer's "Err") is *volclient.Error.
func (p *Process) Call(path string, req, resp any) error { return p.Client.Call(path, req, resp) }

// Create creates a volume with options opts.
func (p *Process) Create(name string, opts map[string]string) error {
	if err := p.Call("/VolumeDriver.Create", map[string]any{"Name": name, "Opts": opts}, nil); err != nil {
		return fmt.Errorf("create %s on %s: %w", name, p.Node, err)
	}
	return nil
}

// Mount mounts a volume for the mount ID id and returns its mount point.
func (p *Process) Mount(name, id string) (string, error) {
	var r struct{ Mountpoint string }
	if err := p.Call("/VolumeDriver.Mount", map[string]string{"Name": name, "ID": id}, &r); err != nil {
		return "", fmt.Errorf("mount %s on %s: %w", name, p.Node, err)
	}
	if r.Mountpoint == "" {
		return "", fmt.Errorf("mount %s on %s: empty mountpoint", name, p.Node)
	}
	return r.Mountpoint, nil
}

// Unmount releases the mount ID id of a volume.
func (p *Process) Unmount(name, id string) error {
	if err := p.Call("/VolumeDriver.Unmount", map[string]string{"Name": name, "ID": id}, nil); err != nil {
		return fmt.Errorf("unmount %s on %s: %w", name, p.Node, err)
	}
	return nil
}

// Remove removes a volume.
func (p *Process) Remove(name string) error {
	if err := p.Call("/VolumeDriver.Remove", map[string]string{"Name": name}, nil); err != nil {
		return fmt.Errorf("remove %s on %s: %w", name, p.Node, err)
	}
	return nil
}

// Get returns a volume as Get answers it.
func (p *Process) Get(name string) (Volume, error) {
	var r struct{ Volume Volume }
	if err := p.Call("/VolumeDriver.Get", map[string]string{"Name": name}, &r); err != nil {
		return Volume{}, fmt.Errorf("get %s on %s: %w", name, p.Node, err)
	}
	if r.Volume.Name != name {
		return r.Volume, fmt.Errorf("get %s on %s: answered %q", name, p.Node, r.Volume.Name)
	}
	return r.Volume, nil
}

// List returns the volumes List answers.
func (p *Process) List() ([]Volume, error) {
	var r struct{ Volumes []Volume }
	if err := p.Call("/VolumeDriver.List", struct{}{}, &r); err != nil {
		return nil, fmt.Errorf("list on %s: %w", p.Node, err)
	}
	return r.Volumes, nil
}
