// Package krbd maps RBD images with the Linux kernel rbd driver through sysfs
// (/sys/bus/rbd/add_single_major and remove_single_major), the way `rbd device map` does, without
// running a command: the cephx secret goes straight to the kernel and never shows in a process
// listing. Like `rbd device map`, it hands the secret over in the kernel keyring (key=), not in
// the map request (secret=), which the kernel keeps readable in /sys/bus/rbd/devices/<id>/config_info.
// Devices are found again by pool/namespace/image/snapshot in /sys/bus/rbd/devices, so an image
// mapped before a plugin restart is found and never mapped twice.
package krbd

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/driver/execx"
	"github.com/cephdocker/ceph-docker-plugin/driver/undo"
)

// KRBD is the kernel rbd Mapper.
type KRBD struct {
	// SysfsRoot is where sysfs is mounted ("/sys"); tests point it at a fake tree.
	SysfsRoot string
	// DevRoot is where device nodes live ("/dev").
	DevRoot string
	// Keys provides the cephx secret for MapRequest.User.
	Keys KeySource
	// WriteFile writes a sysfs attribute; nil means the real thing. Tests inject a fake kernel.
	WriteFile func(path string, data []byte) error
	// AddKey puts a user's secret into the kernel keyring of the calling OS thread (key type
	// "ceph") and returns the key's description, for the map option key=, and a func that
	// removes the key. Nil, or an error (a seccomp profile that forbids add_key), and the secret
	// goes in the map request itself (secret=).
	AddKey func(user, secret string) (desc string, remove func(), err error)
	// Log receives the warning, given once per mapper, that the secret went in the map request
	// (nil: logrus' standard logger).
	Log logrus.FieldLogger

	fallbackOnce sync.Once
}

var _ driver.Mapper = (*KRBD)(nil)

// New returns a KRBD on the real /sys and /dev that passes secrets in the kernel keyring.
func New(keys KeySource) *KRBD {
	return &KRBD{SysfsRoot: "/sys", DevRoot: "/dev", Keys: keys, AddKey: ThreadKey}
}

// ThreadKey adds the secret to the calling thread's keyring as a "ceph" key named
// client.<user>, where libceph's key= option finds it (as `rbd device map` does with its process
// keyring). The caller must stay on its OS thread (runtime.LockOSThread) until the map is done.
func ThreadKey(user, secret string) (string, func(), error) {
	payload, err := base64.StdEncoding.DecodeString(secret)
	if err != nil {
		return "", nil, fmt.Errorf("the key of client.%s is not base64", user)
	}
	desc := "client." + user
	id, err := unix.AddKey("ceph", desc, payload, unix.KEY_SPEC_THREAD_KEYRING)
	if err != nil {
		return "", nil, fmt.Errorf("add_key ceph %s: %w", desc, err)
	}
	return desc, func() { _, _ = unix.KeyctlInt(unix.KEYCTL_INVALIDATE, id, 0, 0, 0) }, nil
}

// Available reports whether the kernel has the rbd driver loaded (MAPPER=auto uses it).
func Available(sysfsRoot string) bool {
	_, err := os.Stat(filepath.Join(sysfsRoot, "bus/rbd/add_single_major"))
	return err == nil
}

// Load loads the kernel's rbd driver with modprobe (the command, normally "modprobe") when it is
// not loaded yet, as `rbd device map` and ceph-csi do: hosts usually have the module installed
// but load it only on first use. It needs the host's /lib/modules and CAP_SYS_MODULE, which the
// managed plugin has. The error carries modprobe's own message.
func Load(ctx context.Context, sysfsRoot, modprobe string) error {
	if Available(sysfsRoot) {
		return nil
	}
	if _, err := execx.Run(ctx, execx.Cmd{Name: modprobe, Args: []string{"rbd"}}); err != nil {
		return err
	}
	if !Available(sysfsRoot) {
		return fmt.Errorf("%s rbd succeeded but %s is still missing", modprobe, filepath.Join(sysfsRoot, "bus/rbd/add_single_major"))
	}
	return nil
}

func (k *KRBD) busPath(name string) string { return filepath.Join(k.SysfsRoot, "bus/rbd", name) }

func (k *KRBD) write(path string, data []byte) error {
	if k.WriteFile != nil {
		return k.WriteFile(path, data)
	}
	// sysfs attributes exist already: never create, and write in one call.
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	return errors.Join(werr, cerr)
}

// validToken: the kernel splits the map request on white space and the options on commas.
func validToken(s string) bool {
	return s != "" && !strings.ContainsAny(s, " \t\n\r,\x00")
}

func checkRequest(req driver.MapRequest) error {
	var bad []string
	if !validToken(req.Pool) {
		bad = append(bad, fmt.Sprintf("pool %q", req.Pool))
	}
	if !validToken(req.Image) {
		bad = append(bad, fmt.Sprintf("image %q", req.Image))
	}
	if req.Namespace != "" && !validToken(req.Namespace) {
		bad = append(bad, fmt.Sprintf("namespace %q", req.Namespace))
	}
	if req.Snap != "" && !validToken(req.Snap) {
		bad = append(bad, fmt.Sprintf("snapshot %q", req.Snap))
	}
	if !validToken(req.User) || strings.Contains(req.User, "=") {
		bad = append(bad, fmt.Sprintf("user %q", req.User))
	}
	if len(req.Monitors) == 0 {
		bad = append(bad, "no monitor addresses")
	}
	for _, m := range req.Monitors {
		if !validToken(m) {
			bad = append(bad, fmt.Sprintf("monitor %q", m))
		}
	}
	for _, o := range req.Options {
		if !validToken(o) || strings.HasPrefix(o, "secret=") || strings.HasPrefix(o, "name=") || strings.HasPrefix(o, "key=") {
			bad = append(bad, fmt.Sprintf("option %q", o))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: krbd map %s: bad %s", driver.ErrInvalid, req.ImageSpec, strings.Join(bad, ", "))
	}
	return nil
}

// mapLine builds what is written to add_single_major:
// "<mon1>,<mon2> name=<user>,<auth>[,options] <pool> <image> [<snap>]", where auth is
// key=<keyring description> or secret=<key>.
func mapLine(req driver.MapRequest, auth string, timeout time.Duration) string {
	opts := []string{"name=" + req.User, auth}
	if req.ReadOnly {
		opts = append(opts, "ro")
	}
	if req.Namespace != "" {
		opts = append(opts, "_pool_ns="+req.Namespace)
	}
	if timeout > 0 {
		// The kernel's own bound on reaching the cluster (default 60 s).
		opts = append(opts, "mount_timeout="+strconv.Itoa(int(math.Ceil(timeout.Seconds()))))
	}
	opts = append(opts, req.Options...)
	line := strings.Join(req.Monitors, ",") + " " + strings.Join(opts, ",") + " " + req.Pool + " " + req.Image
	if req.Snap != "" {
		line += " " + req.Snap
	}
	return line
}

// Map maps the image, or returns its existing mapping.
func (k *KRBD) Map(ctx context.Context, req driver.MapRequest) (driver.Mapping, error) {
	if err := checkRequest(req); err != nil {
		return driver.Mapping{}, err
	}
	existing, err := k.find(req.ImageSpec)
	if err != nil {
		return driver.Mapping{}, err
	}
	if len(existing) > 0 {
		m := existing[0]
		if m.ReadOnly != req.ReadOnly {
			return driver.Mapping{}, fmt.Errorf("%w: %s is already mapped at %s with read-only=%v; unmap it first",
				driver.ErrInUse, req.ImageSpec, m.Device, m.ReadOnly)
		}
		return m, nil
	}
	if k.Keys == nil {
		return driver.Mapping{}, fmt.Errorf("krbd map %s: no key source configured", req.ImageSpec)
	}
	key, err := k.Keys.Key(req.User)
	if err != nil {
		return driver.Mapping{}, fmt.Errorf("krbd map %s: %w", req.ImageSpec, err)
	}
	var timeout time.Duration
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout <= 0 {
			return driver.Mapping{}, fmt.Errorf("krbd map %s: %w: %w", req.ImageSpec, driver.ErrTimeout, ctx.Err())
		}
	}
	done := make(chan error, 1)
	go func() { done <- k.mapWrite(req, key, timeout) }()
	select {
	case err := <-done:
		if err != nil {
			return driver.Mapping{}, mapError(req.ImageSpec, err)
		}
	case <-ctx.Done():
		// The kernel may still complete the map after we gave up: take it back then, so that a
		// failed Map leaves nothing behind.
		go func() {
			if err := <-done; err == nil {
				cctx, cancel := undo.Context(ctx)
				defer cancel()
				if err := k.Unmap(cctx, req.ImageSpec); err != nil {
					k.log().WithField("image", req.ImageSpec.String()).WithError(err).
						Warn("krbd: the kernel mapped the image after the caller gave up, and unmapping it failed: unmap it by hand")
				}
			}
		}()
		return driver.Mapping{}, fmt.Errorf("krbd map %s: the kernel did not finish mapping before the deadline: %w: %w",
			req.ImageSpec, driver.ErrTimeout, ctx.Err())
	}
	// The kernel has created the device by the time the write returns.
	found, err := k.find(req.ImageSpec)
	if err != nil {
		return driver.Mapping{}, err
	}
	if len(found) == 0 {
		return driver.Mapping{}, fmt.Errorf("krbd map %s: the kernel accepted the request but no device appeared in %s",
			req.ImageSpec, k.busPath("devices"))
	}
	return found[0], nil
}

// mapWrite writes the map request, with the secret in the kernel keyring when it can. It runs on
// a goroutine of its own, locked to its OS thread: the thread keyring holding the secret is that
// thread's, and the thread ends with the goroutine.
func (k *KRBD) mapWrite(req driver.MapRequest, key string, timeout time.Duration) error {
	add := k.busPath("add_single_major")
	if k.AddKey != nil {
		runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
		desc, remove, err := k.AddKey(req.User, key)
		if err == nil {
			err = k.write(add, []byte(mapLine(req, "key="+desc, timeout)))
			remove()
			if !errors.Is(err, syscall.ENOKEY) {
				return err
			}
		}
		k.warnSecretInRequest(err)
	} else {
		k.warnSecretInRequest(errors.New("this mapper is configured without the kernel keyring"))
	}
	return k.write(add, []byte(mapLine(req, "secret="+key, timeout)))
}

func (k *KRBD) log() logrus.FieldLogger {
	if k.Log != nil {
		return k.Log
	}
	return logrus.StandardLogger()
}

// warnSecretInRequest says, once, that the cephx secret goes in the map request itself, where
// root can read it back from /sys/bus/rbd/devices/*/config_info. why never carries the secret.
func (k *KRBD) warnSecretInRequest(why error) {
	k.fallbackOnce.Do(func() {
		k.log().WithError(why).Warn("krbd: the kernel keyring cannot hold the cephx secret, so it goes in the map request (secret=), " +
			"where root on this host can read it from /sys/bus/rbd/devices/*/config_info; allow add_key and keyctl to the plugin (seccomp) to keep it out")
	})
}

// mapError explains a failed add_single_major write. It never includes what was written.
func mapError(spec driver.ImageSpec, err error) error {
	var errno syscall.Errno
	errors.As(err, &errno)
	switch errno {
	case syscall.ENOENT:
		return fmt.Errorf("krbd map %s: %w: the image or pool does not exist (%v)", spec, driver.ErrNotFound, errno)
	case syscall.EACCES, syscall.EPERM:
		return fmt.Errorf("krbd map %s: %w: the cephx user may not use it, or must be allowed to blocklist (%v)", spec, driver.ErrPermission, errno)
	case syscall.ENXIO:
		return fmt.Errorf("krbd map %s: the kernel refused the image, most often for image features it does not support: create it with RBD_FEATURES=layering,exclusive-lock (%v)", spec, errno)
	case syscall.ETIMEDOUT:
		return fmt.Errorf("krbd map %s: %w: the monitors did not answer the kernel client (%v)", spec, driver.ErrTimeout, errno)
	case syscall.EBUSY:
		return fmt.Errorf("krbd map %s: %w: another client holds the exclusive lock (%v)", spec, driver.ErrBusyElsewhere, errno)
	case syscall.EINVAL:
		return fmt.Errorf("krbd map %s: %w: the kernel rejected the map options (%v)", spec, driver.ErrInvalid, errno)
	}
	return fmt.Errorf("krbd map %s: writing to add_single_major failed: %w", spec, err)
}

// Unmap removes every kernel mapping of the image. Not mapped is success; ErrInUse while the
// device is open (mounted).
func (k *KRBD) Unmap(ctx context.Context, spec driver.ImageSpec) error {
	found, err := k.find(spec)
	if err != nil {
		return err
	}
	for _, m := range found {
		id := strings.TrimPrefix(filepath.Base(m.Device), "rbd")
		done := make(chan error, 1)
		go func() { done <- k.write(k.busPath("remove_single_major"), []byte(id)) }()
		select {
		case err = <-done:
		case <-ctx.Done():
			return fmt.Errorf("krbd unmap %s (%s): %w: %w", spec, m.Device, driver.ErrTimeout, ctx.Err())
		}
		switch {
		case err == nil, errors.Is(err, syscall.ENOENT):
		case errors.Is(err, syscall.EBUSY):
			return fmt.Errorf("krbd unmap %s: %w: %s is still open (mounted or used by a process)", spec, driver.ErrInUse, m.Device)
		default:
			return fmt.Errorf("krbd unmap %s (%s): %w", spec, m.Device, err)
		}
	}
	return nil
}

// List returns the images this kernel has mapped, ordered by device id.
func (k *KRBD) List(ctx context.Context) ([]driver.Mapping, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dir := k.busPath("devices")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("krbd list: %w", err)
	}
	type dev struct {
		id int
		m  driver.Mapping
	}
	var devs []dev
	for _, e := range entries {
		id, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		m, ok := k.readDevice(filepath.Join(dir, e.Name()), id)
		if ok {
			devs = append(devs, dev{id, m})
		}
	}
	sort.Slice(devs, func(i, j int) bool { return devs[i].id < devs[j].id })
	out := make([]driver.Mapping, 0, len(devs))
	for _, d := range devs {
		out = append(out, d.m)
	}
	return out, nil
}

func readAttr(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// readDevice reads one /sys/bus/rbd/devices/<id>. A device being torn down may vanish mid-read:
// then ok is false.
func (k *KRBD) readDevice(dir string, id int) (driver.Mapping, bool) {
	pool, image := readAttr(dir, "pool"), readAttr(dir, "name")
	if pool == "" || image == "" {
		return driver.Mapping{}, false
	}
	snap := readAttr(dir, "current_snap")
	if snap == "-" {
		snap = ""
	}
	dev := "rbd" + strconv.Itoa(id)
	return driver.Mapping{
		ImageSpec: driver.ImageSpec{Pool: pool, Namespace: readAttr(dir, "pool_ns"), Image: image, Snap: snap},
		Device:    filepath.Join(k.DevRoot, dev),
		ReadOnly:  readAttr(filepath.Join(k.SysfsRoot, "block", dev), "ro") == "1",
		// The kernel client's address (ip:port/nonce), as the OSDs see it: what a host taking
		// the image over must blocklist. It stays the same while the image is mapped.
		Client: readAttr(dir, "client_addr"),
	}, true
}

func (k *KRBD) find(spec driver.ImageSpec) ([]driver.Mapping, error) {
	all, err := k.List(context.Background())
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(m driver.Mapping) bool { return m.ImageSpec != spec }), nil
}
