package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver/execx"
	"github.com/cephdocker/ceph-docker-plugin/rbd/fuse"
)

// raw does by hand, with the CLI tools an operator would type, what the plugin does: rbd create,
// rbd-fuse + losetup (this host has no krbd), mkfs.ext4, mount; and back.
type raw struct {
	conf, user, keyring string
	root                string // rbd-fuse mounts: root/<pool>/<image>/<image>, as the plugin's mapper lays them out
	mnt                 string // filesystems: mnt/<image>
}

func (r *raw) run(ctx context.Context, name string, args ...string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	res, err := execx.Run(cctx, execx.Cmd{Name: name, Args: args})
	return strings.TrimSpace(string(res.Stdout)), err
}

func (r *raw) rbd(ctx context.Context, args ...string) (string, error) {
	return r.run(ctx, "rbd", append([]string{"-c", r.conf, "--id", r.user, "--keyring", r.keyring}, args...)...)
}

// rawMap is one image mapped and (maybe) mounted by hand.
type rawMap struct {
	pool, image string
	dir         string // rbd-fuse mount
	dev         string // loop device
	target      string // filesystem mount point ("" if not mounted)
}

// mapImage: rbd-fuse for the image, wait for its file, attach a loop device with losetup.
func (r *raw) mapImage(ctx context.Context, pool, image string) (*rawMap, error) {
	m := &rawMap{pool: pool, image: image, dir: filepath.Join(r.root, pool, image)}
	if err := os.MkdirAll(m.dir, 0o700); err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	_, err := execx.Run(cctx, execx.Cmd{Name: "rbd-fuse", Args: []string{"-c", r.conf, "-p", pool, "-r", image, m.dir},
		Env: []string{"CEPH_ARGS=--id " + r.user + " --keyring " + r.keyring}})
	if err != nil {
		return nil, err
	}
	file := filepath.Join(m.dir, image)
	for {
		if _, err := os.Stat(file); err == nil {
			break
		}
		if cctx.Err() != nil {
			return m, fmt.Errorf("rbd-fuse does not show %s", file)
		}
		time.Sleep(5 * time.Millisecond)
	}
	dev, err := r.run(ctx, "losetup", "--find", "--show", file)
	if err != nil {
		return m, err
	}
	m.dev = dev
	return m, nil
}

// mkfsMount formats the device with the plugin's fast options and mounts it.
func (r *raw) mkfsMount(ctx context.Context, m *rawMap) error {
	if _, err := r.run(ctx, "mkfs.ext4", "-q", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1", m.dev); err != nil {
		return err
	}
	target := filepath.Join(r.mnt, m.image)
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	if _, err := r.run(ctx, "mount", "-t", "ext4", m.dev, target); err != nil {
		return err
	}
	m.target = target
	return nil
}

// unmapImage undoes mapImage and mkfsMount: umount, losetup -d, unmount rbd-fuse and wait for
// the daemon to exit (as the plugin does: the image has a watcher until then).
func (r *raw) unmapImage(ctx context.Context, m *rawMap) error {
	if m.target != "" {
		if _, err := r.run(ctx, "umount", m.target); err != nil {
			return err
		}
		_ = os.Remove(m.target)
		m.target = ""
	}
	if m.dev != "" {
		if _, err := r.run(ctx, "losetup", "-d", m.dev); err != nil {
			return err
		}
		m.dev = ""
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		// The loop device lets go of its backing file asynchronously: umount may say busy once.
		_, err := r.run(ctx, "umount", m.dir)
		if err == nil {
			break
		}
		var ee *execx.Error
		if errors.As(err, &ee) && strings.Contains(ee.Stderr, "not mounted") {
			break
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
	for len(fuse.Daemons(m.dir)) > 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("rbd-fuse for %s did not exit", m.dir)
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = os.Remove(m.dir)
	return nil
}
