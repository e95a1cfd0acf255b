//go:build integration

package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/moby/sys/mountinfo"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/driver/execx"
	"github.com/cephdocker/ceph-docker-plugin/plugin/plugintest"
	"github.com/cephdocker/ceph-docker-plugin/rbd"
	"github.com/cephdocker/ceph-docker-plugin/rbd/fuse"
)

// canaries are files and directories that hostile options name, in the plugin's working
// directory (relative names) and by absolute path. The suite asserts that none was read or
// written: contents, sizes, modification and access times unchanged (their access times are set
// two days back, so that under relatime any read moves them).
type canaries struct {
	dir   string // the plugin's working directory
	paths []string
	seen  map[string]canarySeen
}

type canarySeen struct {
	sum          [32]byte
	size         int64
	atime, mtime time.Time
	entries      []string
}

func plantCanaries(t *testing.T) *canaries {
	t.Helper()
	c := &canaries{dir: t.TempDir(), seen: map[string]canarySeen{}}
	for _, d := range []string{"etc", "etc/ceph", "proto"} {
		if err := os.MkdirAll(filepath.Join(c.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string][]byte{
		"etc/ceph/ceph.client.canary.keyring": []byte("[client.canary]\n\tkey = canary-not-a-key\n"),
		"etc/passwd":                          []byte("canary:x:0:0::/:/bin/sh\n"),
		"canary-log":                          randomData(t, 1<<20), // an xfs logdev= or rtdev= target
		"canary.img":                          randomData(t, 1<<20), // a journal device, undo file, image
		"proto/protofile":                     []byte("canary\n0 0\nd--755 0 0\n$\n"),
	}
	for rel, data := range files {
		writeFile(t, filepath.Join(c.dir, rel), data)
	}
	for _, rel := range []string{"etc/ceph/ceph.client.canary.keyring", "etc/passwd", "canary-log", "canary.img", "proto/protofile", "etc/ceph", "etc", "proto"} {
		c.paths = append(c.paths, filepath.Join(c.dir, rel))
	}
	// Read first (contents, entries), then set the times, then record them without reading.
	read := map[string]canarySeen{}
	for _, p := range c.paths {
		read[p] = c.look(t, p, true)
	}
	old := time.Now().Add(-48 * time.Hour).Truncate(time.Second)
	for _, p := range c.paths {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range c.paths {
		s := c.look(t, p, false)
		s.sum, s.entries = read[p].sum, read[p].entries
		c.seen[p] = s
	}
	return c
}

func (c *canaries) abs(rel string) string { return filepath.Join(c.dir, rel) }

// look stats p (without reading it: that would move its access time) and, with read, also
// reads it.
func (c *canaries) look(t *testing.T, p string, read bool) canarySeen {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatalf("canary %s: %v", p, err)
	}
	s := canarySeen{size: st.Size, atime: time.Unix(st.Atim.Unix()), mtime: time.Unix(st.Mtim.Unix())}
	if read {
		if st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			ents, err := os.ReadDir(p)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				s.entries = append(s.entries, e.Name())
			}
		} else {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			s.sum = sha256.Sum256(b)
		}
	}
	return s
}

// assertUntouched fails if any canary was read or written since plantCanaries (times first,
// before this check's own reads).
func (c *canaries) assertUntouched(t *testing.T) {
	t.Helper()
	now := map[string]canarySeen{}
	for _, p := range c.paths {
		now[p] = c.look(t, p, false)
	}
	for _, p := range c.paths {
		was, is := c.seen[p], now[p]
		if !is.atime.Equal(was.atime) || !is.mtime.Equal(was.mtime) || is.size != was.size {
			t.Errorf("canary %s was touched: atime %v -> %v, mtime %v -> %v, size %d -> %d", p, was.atime, is.atime, was.mtime, is.mtime, was.size, is.size)
		}
	}
	for _, p := range c.paths {
		was, is := c.seen[p], c.look(t, p, true)
		if is.sum != was.sum || !slices.Equal(is.entries, was.entries) {
			t.Errorf("canary %s changed: contents or entries differ (%v -> %v)", p, was.entries, is.entries)
		}
		// This check's own read moved the access time: put it back for the next check.
		if err := os.Chtimes(p, was.atime, was.mtime); err != nil {
			t.Fatal(err)
		}
	}
}

type hostileCase struct {
	name string            // volume name ("" = a fresh valid one)
	opts map[string]string // -o options
	want []string          // the refusal must contain each
}

// hostileCreates are refused at Create: hostile names, and hostile mkfs-options and
// mount-options values. Each names what it refuses and what is allowed.
func hostileCreates(c *canaries) []hostileCase {
	x := func(mkfs string, want ...string) hostileCase {
		return hostileCase{opts: map[string]string{"size": "1G", "fstype": "xfs", "mkfs-options": mkfs}, want: append([]string{"mkfs-options"}, want...)}
	}
	e := func(mkfs string, want ...string) hostileCase {
		return hostileCase{opts: map[string]string{"mkfs-options": mkfs}, want: append([]string{"mkfs-options"}, want...)}
	}
	m := func(fstype, mount string, want ...string) hostileCase {
		return hostileCase{opts: map[string]string{"size": "1G", "fstype": fstype, "mount-options": mount}, want: append([]string{"mount-options"}, want...)}
	}
	n := func(name string) hostileCase {
		return hostileCase{name: name, opts: map[string]string{}, want: []string{"volume name"}}
	}
	big := strings.Repeat("-m 1 ", 13108) // 64 KiB
	return []hostileCase{
		// Names: each would be an image name and a directory under MOUNT_ROOT.
		n("../etc"), n("a/b"), n("/etc/passwd"), n("."), n(".."), n("vol\x00x"), n("vol\nx"),
		n("ｖｏｌ"), n("vol\u2215x"), n(strings.Repeat("a", 201)), n("-d"),
		// ext4: options that name a directory, a file or a device, in any form getopt reads.
		e("-d etc/ceph", "-d is not allowed for ext4", "allowed are"),
		e("-d "+c.abs("etc/ceph"), "-d is not allowed"),
		e("-d /etc/ceph", "-d is not allowed"),
		e("-detc", "-d is not allowed"),
		e("-qd etc", "-d is not allowed"),
		e("-l canary-log", "-l is not allowed"),
		e("-z canary.img", "-z is not allowed"),
		e("-M "+c.abs("etc"), "-M is not allowed"),
		e("-J device="+c.abs("canary.img"), `"device" is not allowed`, "size=V"),
		e("-J device=/dev/loop0", `"device" is not allowed`),
		e("-O journal_dev", `"journal_dev" is not allowed`, "feature names"),
		e("-E root_owner=../../etc", "root_owner takes numeric uid:gid"),
		e("-E root_owner=0:0:/etc", "root_owner takes numeric uid:gid"),
		e("-E root_owner=0:0,offset=0", `"offset" is not allowed`, "stride=V"),
		e("-E stride=16,,/dev/sda", `"" is not allowed`),
		e("-E stride=/dev/sda", "stride takes a number"),
		e("-L ../etc", "label takes"),
		e("-T ../../etc/x", "usage types"),
		e("canary.img", `"canary.img" is not an option`),
		e("/dev/sda", `"/dev/sda" is not an option`),
		e("-m 1 -- -d etc", "'--' are not allowed"),
		e("-m 1\n-d etc", "control character", "only printable ASCII is allowed"),
		e("-m 1\x00-d etc", "control character"),
		e("\u2010d etc", "non-ASCII", "U+2010"),
		e("-d ｅｔｃ", "non-ASCII"),
		e("-m 1 -e panic", "continue, remount-ro"),
		e(big, "the limit is 4096"),
		// xfs: the log and realtime devices, data files, protofiles, config files.
		x("-l logdev=/dev/loop0,size=64m", `"logdev" is not allowed for xfs`, "lazy-count=V"),
		x("-l logdev=canary-log", `"logdev" is not allowed`),
		x("-lsize=64m,logdev="+c.abs("canary-log"), `"logdev" is not allowed`),
		x("-r rtdev=/dev/sdb", "-r is not allowed for xfs"),
		x("-r rtdev=canary.img", "-r is not allowed"),
		x("-d file,name=canary.img,size=64m", `"file" is not allowed`, "agcount=V"),
		x("-d su=64k,sw=4,name=/dev/sdb", `"name" is not allowed`),
		x("-p "+c.abs("proto/protofile"), "-p is not allowed"),
		x("-c options=/etc/ceph/ceph.conf", "-c is not allowed"),
		x("-f", "-f is not allowed"),
		x("-m crc=1,uuid=../x", `"uuid" is not allowed`),
		// Mount options naming files or devices, or giving setuid and device nodes effect.
		m("ext4", "journal_path="+c.abs("canary.img"), `"journal_path=`, "is not allowed for ext4", "allowed are"),
		m("ext4", "journal_dev=2049", `"journal_dev=2049" is not allowed`),
		m("ext4", "usrjquota=canary.img,jqfmt=vfsv0", `"usrjquota=canary.img" is not allowed`),
		m("xfs", "logdev=/dev/loop0", `"logdev=/dev/loop0" is not allowed for xfs`),
		m("xfs", "rtdev=canary.img", `"rtdev=canary.img" is not allowed`),
		m("ext4", "noatime,suid", `"suid"`, "always mounted nosuid,nodev"),
		m("ext4", "dev", `"dev"`, "nosuid,nodev"),
		m("ext4", "errors=panic", "continue, remount-ro"),
		m("ext4", "noatime\nro", "control character"),
		m("ext4", "noatime\x00,ro", "control character"),
		m("ext4", "noatime,,ro", "empty entry"),
		m("ext4", "ｎoatime", "non-ASCII"),
		m("ext4", strings.Repeat("noatime,", 8192), "the limit is 4096"),
		m("ext4", "commit=5;rm -rf /", "commit takes a number"),
		m("xfs", "data=journal", `"data=journal" is not allowed for xfs`),
	}
}

// plantedCase is an option value another actor writes into the volume's backend record after
// Create: RBD image metadata (rbd image-meta set, as client.admin) or Cinder volume properties
// (openstack volume set --property, as Keystone's admin).
type plantedCase struct {
	fstype, mkfs, mount string
	want                []string
	rbdOnly             bool
}

func plantedCases(c *canaries) []plantedCase {
	return []plantedCase{
		{mkfs: "-d etc/ceph", want: []string{"mkfs-options -d is not allowed"}},
		{mkfs: "-d " + c.abs("etc/ceph"), want: []string{"mkfs-options -d is not allowed"}},
		{mkfs: "-qdetc", want: []string{"mkfs-options -d is not allowed"}},
		{mkfs: "-m 1\n-d etc", want: []string{"mkfs-options has a control character"}},
		{mkfs: "-m\u00a01 -L data", want: []string{"mkfs-options has a non-ASCII character (U+00A0"}},
		{mkfs: "-E root_owner=../../etc", want: []string{"root_owner takes numeric uid:gid"}},
		{mkfs: "-E nodiscard,offset=0,root_owner=0:0", want: []string{`"offset" is not allowed`}},
		{mkfs: "canary.img", want: []string{`"canary.img" is not an option`}},
		{mkfs: "\u2010d etc", want: []string{"non-ASCII"}},
		{fstype: "xfs", mkfs: "-l logdev=" + c.abs("canary-log") + ",size=64m", want: []string{`"logdev" is not allowed`}},
		{fstype: "xfs", mkfs: "-r rtdev=canary.img", want: []string{"mkfs-options -r is not allowed"}},
		{fstype: "xfs", mkfs: "-d file,name=canary.img,size=64m", want: []string{`"file" is not allowed`}},
		{mount: "noatime,suid,dev", want: []string{`mount-options "suid"`}},
		{mount: "journal_path=" + c.abs("canary.img"), want: []string{`mount-options "journal_path=`}},
		{fstype: "xfs", mount: "logdev=" + c.abs("canary-log"), want: []string{`mount-options "logdev=`}},
		{fstype: "btrfs", want: []string{`fstype "btrfs"`, "allowed are ext4, xfs"}},
		{fstype: "../../etc", want: []string{`fstype "../../etc"`}},
		// Cinder caps a property value at 255 bytes; RBD metadata takes 64 KiB.
		{mkfs: strings.Repeat("-m 1 ", 13108), want: []string{"the limit is 4096"}, rbdOnly: true},
		{mkfs: strings.Repeat("-m 1 ", 49) + "-d etc", want: []string{"mkfs-options -d is not allowed"}},
	}
}

// planter writes a volume's stored options as another actor would.
type planter func(t *testing.T, fstype, mkfs, mount string)

// rbdPlanter writes the image's metadata with go-ceph as client.admin (the rbd CLI reads a value
// that starts with '-' as an option of its own).
func rbdPlanter(t *testing.T, l lab, b backend, p *plugin, name string) planter {
	spec := driver.ImageSpec{Pool: b.pool, Image: b.image(p, name)}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	admin, err := rbd.Connect(ctx, rbd.Config{ConfPath: l.conf, User: "admin", Keyring: l.adminKeyring})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	return func(t *testing.T, fstype, mkfs, mount string) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for k, v := range map[string]string{"fstype": fstype, "mkfs-options": mkfs, "mount-options": mount} {
			var err error
			if v == "" {
				err = admin.RemoveMeta(ctx, spec, "docker-plugin."+k)
			} else {
				err = admin.SetMeta(ctx, spec, "docker-plugin."+k, v)
			}
			if err != nil && !errors.Is(err, driver.ErrNotFound) {
				t.Fatalf("plant %s=%.40q in %s as client.admin: %v", k, v, spec, err)
			}
		}
	}
}

// cinderPlanter writes the volume's properties (what `openstack volume set --property` writes)
// through gophercloud as Keystone's admin, not as the plugin's user. An empty value stands for
// "not set": the plugin reads both the same way.
func cinderPlanter(t *testing.T, b backend, p *plugin, name string) planter {
	id := strings.TrimPrefix(b.image(p, name), "volume-")
	admin := plugintest.MustOpenStackAdmin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	provider, err := openstack.AuthenticatedClient(ctx, admin.AuthOptions())
	if err != nil {
		t.Fatalf("authenticate as the lab's Keystone admin: %v", err)
	}
	client, err := openstack.NewBlockStorageV3(provider, gophercloud.EndpointOpts{Region: admin.Region})
	if err != nil {
		t.Fatal(err)
	}
	return func(t *testing.T, fstype, mkfs, mount string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		v, err := volumes.Get(ctx, client, id).Extract()
		if err != nil {
			t.Fatalf("volume %s as admin: %v", id, err)
		}
		meta := v.Metadata
		for k, v := range map[string]string{"fstype": fstype, "mkfs-options": mkfs, "mount-options": mount} {
			meta["docker-plugin."+k] = v
		}
		if _, err := volumes.Update(ctx, client, id, volumes.UpdateOpts{Metadata: meta}).Extract(); err != nil {
			t.Fatalf("set properties of volume %s as admin: %v", id, err)
		}
	}
}

// The hostile-input suite through the plugin binary's socket, with each backend: hostile names
// and option values refused at Create, and options planted in the backend by another actor
// refused at Mount. Each refusal names the volume and the option; no canary file is read or
// written; the volume, finally mounted with clean options, holds nothing but lost+found.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	eachBackend(t, labEnv(t), testHostileInput)
}

func testHostileInput(t *testing.T, b backend) {
	l := labEnv(t)
	c := plantCanaries(t)
	p := newPlugin(t, l, "host-a", b.env...)
	p.Cwd = c.dir // relative names in options would resolve here
	p.start()

	refused := 0
	for i, hc := range hostileCreates(c) {
		name := hc.name
		if name == "" {
			name = uniq("hostile")
		}
		msg := p.fail("/VolumeDriver.Create", map[string]any{"Name": name, "Opts": hc.opts})
		for _, w := range hc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("case %d %q %q: refusal %.300q does not contain %q", i, name, hc.opts, msg, w)
			}
		}
		if hc.name == "" {
			if !strings.Contains(msg, name) {
				t.Errorf("case %d %q: refusal %.200q does not name the volume", i, hc.opts, msg)
			}
			// Nothing was created.
			if g := p.fail("/VolumeDriver.Get", map[string]string{"Name": name}); !strings.Contains(g, "not found") && !strings.Contains(g, "no volume named") {
				t.Errorf("case %d %q: after the refused create, get says %q", i, hc.opts, g)
			}
		}
		refused++
	}

	// Options planted after Create, by another actor.
	name := uniq("planted")
	p.create(name, map[string]string{"size": "1G", "fstype": "ext4"})
	t.Cleanup(func() { _ = p.try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil) })
	var plant planter
	if b.name == "rbd" {
		plant = rbdPlanter(t, l, b, p, name)
	} else {
		plant = cinderPlanter(t, b, p, name)
	}
	for i, pc := range plantedCases(c) {
		if pc.rbdOnly && b.name != "rbd" {
			continue
		}
		fstype := pc.fstype
		if fstype == "" {
			fstype = "ext4"
		}
		plant(t, fstype, pc.mkfs, pc.mount)
		msg := p.fail("/VolumeDriver.Mount", map[string]string{"Name": name, "ID": "hostile"})
		for _, w := range append([]string{"mount volume " + name, "nothing was formatted or mounted", "remove the bad key"}, pc.want...) {
			if !strings.Contains(msg, w) {
				t.Errorf("planted %d (%q %.60q %q): refusal %.400q does not contain %q", i, pc.fstype, pc.mkfs, pc.mount, msg, w)
			}
		}
		if i == 0 {
			t.Logf("planted %q: %s", pc.mkfs, msg)
		}
		p.unmount(name, "hostile") // as dockerd does after a failed Mount
		p.assertClean()
		b.assertReleased(p, name)
		refused++
	}
	c.assertUntouched(t)

	// With clean options planted, the first Mount formats the volume (so no refused case had
	// formatted it: the label is the clean one), with nosuid,nodev, and nothing was copied in.
	plant(t, "ext4", "-m 1 -L clean", "noatime")
	path := p.mount(name, "clean")
	ents, err := os.ReadDir(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "lost+found" {
		t.Errorf("the new filesystem holds %v, want only lost+found", ents)
	}
	dev, _ := p.get(name).Volume.Status["device"].(string)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := execx.Run(ctx, execx.Cmd{Name: "blkid", Args: []string{"-p", "-o", "value", "-s", "LABEL", dev}})
	if err != nil || strings.TrimSpace(string(res.Stdout)) != "clean" {
		t.Errorf("label of %s: %q, %v; want clean (formatted only by the clean Mount)", dev, res.Stdout, err)
	}
	mi, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(path))
	if err != nil || len(mi) != 1 {
		t.Fatalf("mountinfo of %s: %v %v", path, mi, err)
	}
	for _, o := range []string{"nosuid", "nodev", "noatime"} {
		if !slices.Contains(strings.Split(mi[0].Options, ","), o) {
			t.Errorf("%s is mounted %q, want %s", path, mi[0].Options, o)
		}
	}
	p.unmount(name, "clean")
	p.remove(name)
	p.assertClean()
	c.assertUntouched(t)
	t.Logf("%s: %d hostile names and option values refused, each naming the option; canaries untouched", b.name, refused)
}

// byHand maps a volume's image as client.admin through rbd-fuse + a loop device, runs fn on the
// device, and unmaps it.
func byHand(t *testing.T, l lab, pool, image string, fn func(dev string)) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "fuse")
	f := fuse.New(root, l.conf, l.adminKeyring)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	spec := driver.ImageSpec{Pool: pool, Image: image}
	m, err := f.Map(ctx, driver.MapRequest{ImageSpec: spec, User: "admin"})
	if err != nil {
		t.Fatalf("map %s by hand: %v", spec, err)
	}
	defer func() {
		if err := f.Unmap(ctx, spec); err != nil {
			t.Fatalf("unmap %s by hand: %v", spec, err)
		}
	}()
	fn(m.Device)
}

// runTool runs a tool by hand. mkfs.btrfs stats every mount point of the host to check that the
// device is not mounted, and fails on a dead FUSE mount (ENOTCONN): a test running beside this one
// may have killed an rbd-fuse whose mount its plugin has not replaced yet, so that is retried for
// up to 90 s.
func runTool(t *testing.T, name string, args ...string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		_, err := execx.Run(ctx, execx.Cmd{Name: name, Args: args})
		cancel()
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "Transport endpoint is not connected") || time.Now().After(deadline) {
			t.Fatalf("%s: %v", name, err)
		}
		t.Logf("%s: %v; retrying", name, err)
		time.Sleep(time.Second)
	}
}

// A volume whose device carries a filesystem the plugin does not make (written by hand) is refused
// at Mount, naming what was found, and left released; one carrying the other supported
// filesystem than recorded is mounted as what it is.
func TestForeignFilesystem(t *testing.T) {
	t.Parallel()
	eachBackend(t, labEnv(t), testForeignFilesystem)
}

func testForeignFilesystem(t *testing.T, b backend) {
	l := labEnv(t)
	p := newPlugin(t, l, "host-a", b.env...)
	p.start()
	name := uniq("foreign")
	p.create(name, map[string]string{"size": "1G", "fstype": "ext4"})
	t.Cleanup(func() { _ = p.try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil) })
	image := b.image(p, name)
	for _, fs := range []struct{ name, mkfs string }{{"vfat", "mkfs.vfat"}, {"btrfs", "mkfs.btrfs"}} {
		byHand(t, l, b.pool, image, func(dev string) {
			runTool(t, "wipefs", "-a", dev)
			runTool(t, fs.mkfs, dev)
		})
		msg := p.fail("/VolumeDriver.Mount", map[string]string{"Name": name, "ID": "c1"})
		for _, w := range []string{"mount volume " + name, "carries a " + fs.name + " filesystem", "mounts only ext4 and xfs", "copy the data out"} {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: refusal %q does not contain %q", fs.name, msg, w)
			}
		}
		t.Logf("%s on the device: %s", fs.name, msg)
		p.unmount(name, "c1")
		p.assertClean()
		b.assertReleased(p, name)
	}
	// xfs on a volume recorded as ext4: mounted as xfs, with a warning.
	byHand(t, l, b.pool, image, func(dev string) {
		runTool(t, "wipefs", "-a", dev)
		runTool(t, "mkfs.xfs", "-q", "-K", dev)
	})
	path := p.mount(name, "c2")
	mi, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(path))
	if err != nil || len(mi) != 1 || mi[0].FSType != "xfs" {
		t.Fatalf("mount of a volume carrying xfs: %+v %v", mi, err)
	}
	if !strings.Contains(p.logs(), "another supported filesystem than recorded") {
		t.Error("no warning that the device has xfs while ext4 was recorded")
	}
	p.unmount(name, "c2")
	p.remove(name)
	p.assertClean()
}
