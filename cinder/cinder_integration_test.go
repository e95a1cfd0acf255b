//go:build integration

package cinder

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/snapshots"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumetypes"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/plugin/plugintest"
	"github.com/cephdocker/ceph-docker-plugin/rbd"
)

// Integration tests against the real lab Keystone + Cinder (scripts/openstack-up.sh), as the
// demo user (role member in project demo).

func labAuth(t *testing.T) gophercloud.AuthOptions {
	t.Helper()
	return plugintest.MustOpenStack(t).AuthOptions()
}

func newProv(t *testing.T, host string) *Provisioner {
	return New(Config{Auth: labAuth(t), Region: os.Getenv("OS_REGION_NAME"), Host: host, CephUser: "docker"})
}

func tctx(t *testing.T, d time.Duration) context.Context { return plugintest.Context(t, d) }

func uniq(prefix string) string { return plugintest.Uniq(prefix) }

// opts are the options of a Create with -o size=size.
func opts(size uint64, backend map[string]string) driver.Options {
	return driver.Options{Size: size, SizeGiven: true, FSType: "ext4", Backend: backend}
}

// optsNoSize are the options of a Create without -o size: DEFAULT_SIZE (10 GiB) fills in.
func optsNoSize(backend map[string]string) driver.Options {
	return driver.Options{Size: 10 << 30, FSType: "ext4", Backend: backend}
}

func mustCreate(t *testing.T, p *Provisioner, name string, o driver.Options) driver.Volume {
	t.Helper()
	if err := p.Create(tctx(t, 90*time.Second), name, o); err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	t.Cleanup(func() { _ = p.Remove(tctx(t, 60*time.Second), name, driver.RemoveDelete) })
	v, err := p.Get(tctx(t, 30*time.Second), name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestCreateWithEachOption(t *testing.T) {
	p := newProv(t, "host-a")
	base := mustCreate(t, p, uniq("opt"), opts(1<<30, map[string]string{OptVolumeType: "rbd", OptAvailabilityZone: "nova"}))
	if base.Size != 1<<30 || base.Status["volume-type"] != "rbd" || base.Status["availability-zone"] != "nova" || base.FSType != "ext4" {
		t.Fatalf("volume = %+v", base)
	}
	if err := p.Create(tctx(t, 30*time.Second), base.Name, opts(1<<30, nil)); !errors.Is(err, driver.ErrExists) {
		t.Fatalf("create again: %v, want ErrExists", err)
	}
	// From another volume.
	clone := mustCreate(t, p, uniq("clone"), opts(1<<30, map[string]string{OptSourceVolumeID: base.Status["cinder-id"].(string)}))
	if clone.Status["cinder-status"] != "available" {
		t.Fatalf("clone = %+v", clone)
	}
	// From a snapshot.
	c, err := p.client(tctx(t, 30*time.Second), "")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := snapshots.Create(tctx(t, 30*time.Second), c, snapshots.CreateOpts{VolumeID: base.Status["cinder-id"].(string), Name: uniq("snap")}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = snapshots.Delete(tctx(t, 30*time.Second), c, snap.ID).ExtractErr()
		for i := 0; i < 60; i++ { // the volume cannot go before its snapshot
			if _, err := snapshots.Get(tctx(t, 10*time.Second), c, snap.ID).Extract(); err != nil {
				return
			}
			time.Sleep(500 * time.Millisecond)
		}
	})
	for i := 0; ; i++ {
		s, err := snapshots.Get(tctx(t, 10*time.Second), c, snap.ID).Extract()
		if err == nil && s.Status == "available" {
			break
		}
		if i > 120 {
			t.Fatalf("snapshot not available: %+v %v", s, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	fromSnap := mustCreate(t, p, uniq("fromsnap"), opts(2<<30, map[string]string{OptSnapshotID: snap.ID}))
	if fromSnap.Size != 2<<30 {
		t.Fatalf("from snapshot = %+v", fromSnap)
	}
	// Without -o size, a copy has its source's size, not DEFAULT_SIZE.
	for what, src := range map[string]string{OptSnapshotID: snap.ID, OptSourceVolumeID: base.Status["cinder-id"].(string)} {
		v := mustCreate(t, p, uniq("nosize"), optsNoSize(map[string]string{what: src}))
		if v.Size != base.Size {
			t.Errorf("created with %s and no size: %s, want the source's %s", what, driver.FormatSize(v.Size), driver.FormatSize(base.Size))
		}
	}
	// An idempotent Create compares the backend options it gives with the existing volume; a
	// volume type may be given by name or ID.
	types, err := volumetypes.List(c, nil).AllPages(tctx(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	all, err := volumetypes.ExtractVolumeTypes(types)
	if err != nil {
		t.Fatal(err)
	}
	rbdTypeID := ""
	for _, vt := range all {
		if vt.Name == "rbd" {
			rbdTypeID = vt.ID
		}
	}
	baseID := base.Status["cinder-id"].(string)
	for _, tc := range []struct {
		vol     driver.Volume
		backend map[string]string
		want    string
	}{
		{base, map[string]string{OptVolumeType: "rbd", OptAvailabilityZone: "nova"}, ""},
		{base, map[string]string{OptVolumeType: rbdTypeID}, ""},
		{base, map[string]string{OptVolumeType: "__DEFAULT__"}, "volume-type __DEFAULT__ (it has rbd)"},
		{base, map[string]string{OptAvailabilityZone: "az2"}, "availability-zone az2 (it has nova)"},
		{base, map[string]string{OptSourceVolumeID: baseID}, "source-volume-id " + baseID + " (it has none)"},
		{clone, map[string]string{OptSourceVolumeID: baseID}, ""},
		{fromSnap, map[string]string{OptSnapshotID: snap.ID}, ""},
		{fromSnap, map[string]string{OptSnapshotID: "other"}, "snapshot-id other (it has " + snap.ID + ")"},
	} {
		diffs, err := p.Differences(tctx(t, 30*time.Second), tc.vol, driver.Options{Backend: tc.backend})
		if err != nil {
			t.Fatalf("Differences of %s: %v", tc.vol.Name, err)
		}
		got := strings.Join(diffs, "; ")
		if got != tc.want {
			t.Errorf("Differences of %s with %v = %q, want %q", tc.vol.Name, tc.backend, got, tc.want)
		}
	}
	// Bad values come back as ErrInvalid/NotFound with Cinder's reason.
	err = p.Create(tctx(t, 30*time.Second), uniq("bad"), opts(1<<30, map[string]string{OptVolumeType: "no-such-type"}))
	if err == nil || !strings.Contains(err.Error(), "no-such-type") {
		t.Fatalf("unknown volume type: %v", err)
	}
}

func TestAttachDetachRecordsHostAndContainer(t *testing.T) {
	p := newProv(t, "host-a")
	v := mustCreate(t, p, uniq("att"), opts(1<<30, nil))
	const mountID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	att, err := p.Attach(tctx(t, 60*time.Second), v.Name, driver.AttachRequest{Host: "host-a", MountID: mountID})
	if err != nil {
		t.Fatal(err)
	}
	if att.ID == "" || att.Map.Pool == "" || !strings.HasPrefix(att.Map.Image, "volume-") || len(att.Map.Monitors) == 0 || att.Map.User != "docker" {
		t.Fatalf("attachment = %+v", att)
	}
	got, _ := p.Get(tctx(t, 30*time.Second), v.Name)
	if got.Status["cinder-status"] != "in-use" || !strings.Contains(got.Holder, "host-a") || !strings.Contains(got.Holder, InstanceUUID(mountID)) {
		t.Fatalf("while attached: %+v", got)
	}
	// Another host is refused, naming the holder.
	other := newProv(t, "host-b")
	_, err = other.Attach(tctx(t, 30*time.Second), v.Name, driver.AttachRequest{Host: "host-b", MountID: "x"})
	if !errors.Is(err, driver.ErrBusyElsewhere) || !strings.Contains(err.Error(), "host-a") {
		t.Fatalf("host-b attach: %v", err)
	}
	if err := other.Remove(tctx(t, 30*time.Second), v.Name, driver.RemoveDelete); !errors.Is(err, driver.ErrInUse) {
		t.Fatalf("remove while attached: %v", err)
	}
	// The same host again (a restarted plugin) gets the same attachment.
	again, err := p.Attach(tctx(t, 30*time.Second), v.Name, driver.AttachRequest{Host: "host-a", MountID: mountID})
	if err != nil || again.ID != att.ID {
		t.Fatalf("re-attach: %+v, %v (first %s)", again, err, att.ID)
	}
	if err := p.Detach(tctx(t, 60*time.Second), v.Name, att); err != nil {
		t.Fatal(err)
	}
	if err := p.Detach(tctx(t, 60*time.Second), v.Name, att); err != nil {
		t.Fatalf("detach twice: %v", err)
	}
	for i := 0; ; i++ {
		got, _ = p.Get(tctx(t, 30*time.Second), v.Name)
		if got.Status["cinder-status"] == "available" && got.Holder == "" {
			break
		}
		if i > 60 {
			t.Fatalf("after detach: %+v", got)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// A token that stops being valid (expired or revoked) is replaced transparently.
func TestExpiredTokenReauthenticates(t *testing.T) {
	p := newProv(t, "host-a")
	if _, err := p.List(tctx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	c, _ := p.client(tctx(t, 10*time.Second), "")
	old := c.ProviderClient.Token()
	c.ProviderClient.SetToken("gAAAAABinvalidated-token")
	if _, err := p.List(tctx(t, 30*time.Second)); err != nil {
		t.Fatalf("list with an invalid token: %v (want a transparent re-authentication)", err)
	}
	if tok := c.ProviderClient.Token(); tok == old || tok == "gAAAAABinvalidated-token" {
		t.Fatal("no new token was fetched")
	}
}

// A project the user has no role in: a clear error.
func TestProjectWithoutRole(t *testing.T) {
	cmd := exec.Command("sh", "-c", "set -a; . "+plugintest.AdminEnvFile()+"; exec /usr/bin/openstack project show admin -f value -c id")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("admin project id: %v", err)
	}
	adminProject := strings.TrimSpace(string(out))
	p := newProv(t, "host-a")
	err = p.Create(tctx(t, 30*time.Second), uniq("norole"), opts(1<<30, map[string]string{OptProjectID: adminProject}))
	if !errors.Is(err, driver.ErrPermission) || !strings.Contains(err.Error(), adminProject) || !strings.Contains(err.Error(), "role") {
		t.Fatalf("create in a project without a role: %v", err)
	}
}

// Wrong password: ErrPermission naming the user, and never the password.
func TestWrongPassword(t *testing.T) {
	auth := labAuth(t)
	auth.Password = "wrong-password-5d1e"
	p := New(Config{Auth: auth, Host: "host-a"})
	_, err := p.List(tctx(t, 30*time.Second))
	if !errors.Is(err, driver.ErrPermission) || !strings.Contains(err.Error(), auth.Username) || strings.Contains(err.Error(), auth.Password) {
		t.Fatalf("wrong password: %v", err)
	}
}

// Keystone that does not answer: the call fails by its deadline and says Keystone.
func TestKeystoneUnreachable(t *testing.T) {
	auth := labAuth(t)
	auth.IdentityEndpoint = "http://127.0.0.1:9/v3" // nothing listens there
	p := New(Config{Auth: auth, Host: "host-a"})
	start := time.Now()
	_, err := p.List(tctx(t, 3*time.Second))
	if time.Since(start) > 5*time.Second || err == nil || !strings.Contains(err.Error(), "Keystone") {
		t.Fatalf("unreachable Keystone: %v after %v", err, time.Since(start))
	}
}

// myProject returns the id of one of the demo user's projects, by name.
func myProject(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("/usr/bin/openstack", "project", "list", "--my-projects", "-f", "value", "-c", "ID", "-c", "Name").Output()
	if err != nil {
		t.Fatalf("openstack project list --my-projects: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if id, n, _ := strings.Cut(line, " "); n == name {
			return id
		}
	}
	t.Fatalf("the demo user has no project %s (scripts/openstack/bootstrap.py makes it): %s", name, out)
	return ""
}

// -o project-id: the volume is made in that project, and found there by name afterwards, on
// any host (a fresh provisioner knows nothing of where it was made): Get, List, Attach, Detach
// and Remove all reach it.
func TestProjectIDVolumeFoundEverywhere(t *testing.T) {
	demo2 := myProject(t, "demo2")
	creator := newProv(t, "host-a")
	name := uniq("proj")
	if err := creator.Create(tctx(t, 90*time.Second), name, opts(1<<30, map[string]string{OptProjectID: demo2})); err != nil {
		t.Fatalf("create in project demo2: %v", err)
	}
	t.Cleanup(func() { _ = newProv(t, "cleanup").Remove(tctx(t, 60*time.Second), name, driver.RemoveDelete) })

	p := newProv(t, "host-b")
	v, err := p.Get(tctx(t, 30*time.Second), name)
	if err != nil || v.Status["project-id"] != demo2 {
		t.Fatalf("get from another host: %+v, %v (want project-id %s)", v, err, demo2)
	}
	// Not in the configured project: Cinder's own listing there does not have it.
	c, err := p.client(tctx(t, 30*time.Second), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.find(tctx(t, 30*time.Second), c, name); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("the volume is in the configured project too: %v", err)
	}
	all, err := p.List(tctx(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	listed := false
	for _, l := range all {
		listed = listed || (l.Name == name && l.Status["project-id"] == demo2)
	}
	if !listed {
		t.Fatalf("List has no %s in project %s", name, demo2)
	}
	// The same name again, in the configured project: it exists (names are Docker's, global).
	if err := p.Create(tctx(t, 30*time.Second), name, opts(1<<30, nil)); !errors.Is(err, driver.ErrExists) || !strings.Contains(err.Error(), demo2) {
		t.Fatalf("create of the same name in another project: %v", err)
	}
	att, err := p.Attach(tctx(t, 60*time.Second), name, driver.AttachRequest{Host: "host-b", MountID: "m1"})
	if err != nil || att.Map.Pool == "" || !strings.HasPrefix(att.Map.Image, "volume-") {
		t.Fatalf("attach: %+v, %v", att, err)
	}
	if v, _ := p.Get(tctx(t, 30*time.Second), name); v.Status["cinder-status"] != "in-use" || !strings.Contains(v.Holder, "host-b") {
		t.Fatalf("while attached: %+v", v)
	}
	if err := p.Remove(tctx(t, 30*time.Second), name, driver.RemoveDelete); !errors.Is(err, driver.ErrInUse) {
		t.Fatalf("remove while attached: %v", err)
	}
	if err := p.Detach(tctx(t, 60*time.Second), name, att); err != nil {
		t.Fatal(err)
	}
	if err := p.Remove(tctx(t, 60*time.Second), name, driver.RemoveDelete); err != nil {
		t.Fatalf("remove: %v", err)
	}
	if _, err := creator.Get(tctx(t, 30*time.Second), name); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("get after remove: %v", err)
	}
}

// An image mapped outside Cinder's attachments (here: `rbd watch`, which holds a watch as a
// mapping does) is refused by a new attachment, which is undone; once the client is gone the
// attachment goes through.
func TestAttachRefusesAnImageOpenWithoutAttachment(t *testing.T) {
	conf, user, kr, admin := os.Getenv("CEPH_CONF"), os.Getenv("CEPH_USER"), os.Getenv("CEPH_KEYRING"), os.Getenv("CEPH_ADMIN_KEYRING")
	if conf == "" || user == "" || kr == "" || admin == "" {
		t.Fatal("CEPH_CONF, CEPH_USER, CEPH_KEYRING and CEPH_ADMIN_KEYRING must be set: run `make test`")
	}
	c, err := rbd.Connect(tctx(t, 30*time.Second), rbd.Config{ConfPath: conf, User: user, Keyring: kr, OpTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	a, b := newProv(t, "host-a"), newProv(t, "host-b")
	a.cfg.Watchers, b.cfg.Watchers = c, c // as the plugin's rbd.Guard does
	v := mustCreate(t, a, uniq("watched"), opts(1<<30, nil))

	att, err := a.Attach(tctx(t, 60*time.Second), v.Name, driver.AttachRequest{Host: "host-a", MountID: "m1"})
	if err != nil {
		t.Fatalf("attach of an unwatched image: %v", err)
	}
	spec := att.Map.ImageSpec
	if err := a.Detach(tctx(t, 60*time.Second), v.Name, att); err != nil {
		t.Fatal(err)
	}

	// A client opens the image without an attachment; it exits when its stdin closes.
	watch := exec.Command("rbd", "-c", conf, "-n", "client.admin", "-k", admin, "watch", spec.Pool+"/"+spec.Image)
	stdin, err := watch.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = watch.Process.Kill(); _ = watch.Wait() })
	for i := 0; ; i++ {
		ws, err := c.Watchers(tctx(t, 10*time.Second), spec)
		if err == nil && len(ws) > 0 {
			break
		}
		if i > 100 {
			t.Fatalf("rbd watch did not watch %s: %v", spec, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// 25 s: the wait for the watch to lapse ends 10 s before the deadline.
	_, err = b.Attach(tctx(t, 25*time.Second), v.Name, driver.AttachRequest{Host: "host-b", MountID: "m2"})
	if !errors.Is(err, driver.ErrBusyElsewhere) || !strings.Contains(err.Error(), "no Cinder attachment") || !strings.Contains(err.Error(), spec.String()) {
		t.Fatalf("attach while a client watches the image: %v, want ErrBusyElsewhere naming the image", err)
	}
	got, err := b.Get(tctx(t, 30*time.Second), v.Name)
	if err != nil || got.Holder != "" || got.Status["cinder-status"] != "available" {
		t.Fatalf("after the refused attach: %+v, %v; want it available, unattached", got, err)
	}

	stdin.Close()
	if err := watch.Wait(); err != nil {
		t.Logf("rbd watch: %v", err)
	}
	att, err = b.Attach(tctx(t, 60*time.Second), v.Name, driver.AttachRequest{Host: "host-b", MountID: "m2"})
	if err != nil {
		t.Fatalf("attach once the client is gone: %v", err)
	}
	if err := b.Detach(tctx(t, 60*time.Second), v.Name, att); err != nil {
		t.Fatal(err)
	}
}
