package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var bg = context.Background()

func assertOps(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s: calls\n  %q\nwant\n  %q", what, got, want)
	}
}

func assertErr(t *testing.T, err, target error, contains ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want %v", target)
	}
	if target != nil && !errors.Is(err, target) {
		t.Errorf("err = %v, want errors.Is %v", err, target)
	}
	for _, s := range contains {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("err %q does not mention %q", err, s)
		}
	}
}

// recv waits for one value from ch, failing the test after 5 s.
func recv[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// ---------------------------------------------------------------------------------------------
// Reference counting

// failMountAndUnmap makes the first Mount fail at Mount, and the Unmap of its undo fail too.
func failMountAndUnmap(t *testing.T, e *testEnv, vol string) error {
	t.Helper()
	e.mounter.failNext("Mount", errInjected)
	e.mapper.failNext("Unmap", errors.New("rbd: sysfs write failed: device busy"))
	_, err := e.d.Mount(bg, vol, "id1")
	assertErr(t, err, errInjected, vol, "undoing it also failed", "unmap", "device busy")
	st, ok := e.state(vol)
	if !ok || st.Op != OpMount || st.OpID != "id1" || len(st.IDs) != 0 {
		t.Fatalf("state after a failed undo: %+v (found %v); want it kept with Op mount and no IDs", st, ok)
	}
	if dev := e.mapper.device(image(vol)); dev != "/dev/fake0" || st.Device != dev {
		t.Fatalf("mapping %q, state device %q: want both /dev/fake0 (the unmap failed)", dev, st.Device)
	}
	return err
}

func TestCreate(t *testing.T) {
	e := newTestDriver(t)
	if err := e.d.Create(bg, "v", map[string]string{"size": "2G", "fstype": "xfs", "mkfs-options": "-m crc=1",
		"mount-options": "noatime", "pool": "fast"}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := e.d.Create(bg, "w", nil); err != nil {
		t.Fatalf("Create with defaults: %v", err)
	}
	want := []Options{
		{Size: 2 << 30, SizeGiven: true, FSType: "xfs", MkfsOptions: []string{"-m", "crc=1"}, MountOptions: "noatime", Backend: map[string]string{"pool": "fast"},
			Given: map[string]bool{"size": true, "fstype": true, "mkfs-options": true, "mount-options": true, "pool": true}},
		{Size: 1 << 30, FSType: "ext4", Backend: map[string]string{}, Given: map[string]bool{}}, // DEFAULT_SIZE: not given
	}
	if got := e.prov.createdOptions(); !reflect.DeepEqual(got, want) {
		t.Errorf("created with\n  %+v\nwant\n  %+v", got, want)
	}
}

func TestCreateRejectsBadOptions(t *testing.T) {
	for _, c := range []struct {
		raw     map[string]string
		mention string
	}{
		{map[string]string{"colour": "red"}, `"colour"`},
		{map[string]string{"size": "1G", "Size": "2G"}, `"Size"`},
		{map[string]string{"size": "lots"}, `"lots"`},
		{map[string]string{"size": "1M"}, "minimum"},
		{map[string]string{"fstype": "btrfs"}, `"btrfs"`},
		{map[string]string{"mount-options": "rw;reboot"}, "rw;reboot"},
		{map[string]string{"mkfs-options": "/dev/sda"}, "/dev/sda"},
		{map[string]string{"pool": "a\nb"}, "pool"},
	} {
		e := newTestDriver(t)
		m := e.rec.mark()
		err := e.d.Create(bg, "v", c.raw)
		assertErr(t, err, ErrInvalid, "volume v", c.mention)
		assertOps(t, fmt.Sprintf("Create with %q (any call)", c.raw), e.rec.since(m))
	}
}

func TestCreateExisting(t *testing.T) {
	e := newTestDriver(t)
	if err := e.d.Create(bg, "v", map[string]string{"size": "1G"}); err != nil {
		t.Fatal(err)
	}
	for _, raw := range []map[string]string{{"size": "1G"}, nil, {"fstype": "ext4"}, {"size": "1024M", "pool": "other"}} {
		if err := e.d.Create(bg, "v", raw); err != nil {
			t.Errorf("Create of an existing volume with compatible options %q: %v", raw, err)
		}
	}
	err := e.d.Create(bg, "v", map[string]string{"size": "2G"})
	assertErr(t, err, ErrExists, "volume v", "size 2G", "it has 1G")
	err = e.d.Create(bg, "v", map[string]string{"size": "1G", "fstype": "xfs"})
	assertErr(t, err, ErrExists, "volume v", "fstype xfs", "it has ext4")
	if n := len(e.prov.createdOptions()); n != 1 {
		t.Errorf("%d volumes created, want 1", n)
	}

	// A volume whose filesystem the backend does not know matches any fstype.
	e.prov.add("old", 1<<30, "")
	if err := e.d.Create(bg, "old", map[string]string{"fstype": "xfs"}); err != nil {
		t.Errorf("Create of an existing volume of unknown fstype: %v", err)
	}

	e.prov.failNext("Get", errors.New("rados: connection lost"))
	err = e.d.Create(bg, "v", nil)
	assertErr(t, err, nil, "volume v", "cannot be read", "connection lost")
}

func TestCreateExistingComparesEveryGivenOption(t *testing.T) {
	e := newTestDriver(t)
	if err := e.d.Create(bg, "v", map[string]string{"mkfs-options": "-m 0", "mount-options": "noatime"}); err != nil {
		t.Fatal(err)
	}
	if err := e.d.Create(bg, "v", map[string]string{"mkfs-options": "-m 0", "mount-options": "noatime"}); err != nil {
		t.Errorf("Create again with the same options: %v", err)
	}
	err := e.d.Create(bg, "v", map[string]string{"mkfs-options": "-m 1"})
	assertErr(t, err, ErrExists, "volume v", `mkfs-options "-m 1" (it has "-m 0")`, "remove it first")
	err = e.d.Create(bg, "v", map[string]string{"mount-options": "noatime,nodiratime"})
	assertErr(t, err, ErrExists, "volume v", `mount-options "noatime,nodiratime" (it has "noatime")`)

	// The backend's own options are the backend's to compare, and only those given.
	cmp := &comparingProvisioner{fakeProvisioner: e.prov, diffs: []string{"pool fast (it is in pool volumes)"}}
	d := New(e.cfg, cmp, e.mapper, e.mounter, e.store)
	if err := d.Reconcile(bg); err != nil {
		t.Fatal(err)
	}
	if err := d.Create(bg, "v", map[string]string{"size": "1G"}); err != nil || cmp.calls != 0 {
		t.Errorf("Create without backend options: %v, %d comparisons, want nil and 0", err, cmp.calls)
	}
	err = d.Create(bg, "v", map[string]string{"pool": "fast"})
	assertErr(t, err, ErrExists, "volume v", "pool fast (it is in pool volumes)")
	if cmp.calls != 1 || cmp.asked["pool"] != "fast" {
		t.Errorf("comparer called %d times with %v, want once with pool=fast", cmp.calls, cmp.asked)
	}
	cmp.diffs = nil
	if err := d.Create(bg, "v", map[string]string{"pool": "volumes"}); err != nil {
		t.Errorf("Create with a matching backend option: %v", err)
	}
	// A comparison that cannot be made is no "compatible".
	cmp.err = fmt.Errorf("%w: Ceph is not reachable yet", ErrTimeout)
	err = d.Create(bg, "v", map[string]string{"pool": "volumes"})
	assertErr(t, err, ErrTimeout, "volume v", "cannot be compared", "not reachable")
}

// comparingProvisioner is a fakeProvisioner that compares backend options.
type comparingProvisioner struct {
	*fakeProvisioner
	diffs []string
	err   error
	calls int
	asked map[string]string
}

func (p *comparingProvisioner) Differences(_ context.Context, _ Volume, opts Options) ([]string, error) {
	p.calls++
	p.asked = opts.Backend
	return p.diffs, p.err
}

func TestCreateBackendError(t *testing.T) {
	e := newTestDriver(t)
	e.prov.failNext("Create", fmt.Errorf("%w: pool fast", ErrNotFound))
	err := e.d.Create(bg, "v", map[string]string{"pool": "fast"})
	assertErr(t, err, ErrNotFound, "volume v", "pool fast")
	if e.prov.exists("v") {
		t.Error("the volume exists after a failed Create")
	}
}

func TestBadNames(t *testing.T) {
	e := newTestDriver(t)
	m := e.rec.mark()
	for _, name := range []string{"../x", "a/b", "", ".hidden", "-x", "x y", "..", "a\x00b", strings.Repeat("a", 201)} {
		calls := map[string]error{
			"Create":  e.d.Create(bg, name, nil),
			"Remove":  e.d.Remove(bg, name),
			"Unmount": e.d.Unmount(bg, name, "id1"),
		}
		_, calls["Mount"] = e.d.Mount(bg, name, "id1")
		_, calls["Get"] = e.d.Get(bg, name)
		_, calls["Path"] = e.d.Path(bg, name)
		for call, err := range calls {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%s(%q): err = %v, want ErrInvalid", call, name, err)
			}
		}
	}
	assertOps(t, "calls with bad names (any call)", e.rec.since(m))
	for _, dir := range []string{e.cfg.MountRoot, e.files.Dir} {
		if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
			t.Errorf("%s: %v, %v; want it empty", dir, ents, err)
		}
	}
}

// ---------------------------------------------------------------------------------------------
// Remove

func TestRemoveRefusedWhileMounted(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "id1")
	e.mustMount("v", "id2")
	err := e.d.Remove(bg, "v")
	assertErr(t, err, ErrInUse, "volume v", "host-a", "2 container")
	if n := e.prov.count("Remove"); n != 0 {
		t.Errorf("the backend's Remove was called %d times", n)
	}
	e.assertUp("v", "id1", "id2")

	e.mustUnmount("v", "id1")
	e.mustUnmount("v", "id2")
	if err := e.d.Remove(bg, "v"); err != nil {
		t.Fatalf("Remove after the last Unmount: %v", err)
	}
	if e.prov.exists("v") {
		t.Error("the volume still exists")
	}
}

func TestRemoveAction(t *testing.T) {
	for _, c := range []struct{ set, want RemoveAction }{
		{RemoveDelete, RemoveDelete}, {RemoveTrash, RemoveTrash}, {RemoveKeep, RemoveKeep}, {"", RemoveDelete},
	} {
		e := newTestDriver(t, func(cfg *Config) { cfg.RemoveAction = c.set })
		e.prov.add("v", 1<<30, "ext4")
		if err := e.d.Remove(bg, "v"); err != nil {
			t.Fatalf("Remove with action %q: %v", c.set, err)
		}
		if got := e.prov.removeActions(); !slices.Equal(got, []RemoveAction{c.want}) {
			t.Errorf("configured %q: the backend got %q, want %q", c.set, got, c.want)
		}
	}
}

func TestRemoveBackendErrors(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.prov.failNext("Remove", fmt.Errorf("%w: image has 2 snapshots", ErrInUse))
	err := e.d.Remove(bg, "v")
	assertErr(t, err, ErrInUse, "volume v", "2 snapshots")
	if !e.prov.exists("v") {
		t.Error("the volume is gone after a failed Remove")
	}

	err = e.d.Remove(bg, "nope")
	assertErr(t, err, ErrNotFound, "volume nope")

	// Held by another host: the backend refuses.
	e.prov.setHolder("v", "host-b")
	err = e.d.Remove(bg, "v")
	assertErr(t, err, ErrInUse, "volume v", "host-b")
}

func TestRemoveFinishesAnInterruptedMount(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.crashing(FaultMountMapped, func() { _, _ = e.d.Mount(bg, "v", "id1") })
	m := e.rec.mark()
	if err := e.d.Remove(bg, "v"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	assertOps(t, "Remove after a crashed Mount", e.rec.ops(m), "mnt.Unmount v", "map.Unmap v", "prov.Detach v", "prov.Remove v")
	e.assertGone("v")
	if e.prov.exists("v") {
		t.Error("the volume still exists")
	}
}

// ---------------------------------------------------------------------------------------------
// Get, List, Path

func TestGet(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")

	info, err := e.d.Get(bg, "v")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"size": "1G", "fstype": "ext4", "image": "volumes/v", "pool": "volumes"}
	if info.Name != "v" || info.Mountpoint != "" || !info.CreatedAt.Equal(fakeCreatedAt) || !reflect.DeepEqual(info.Status, want) {
		t.Errorf("Get of an unmounted volume: %+v; want status %v", info, want)
	}

	e.mustMount("v", "id1")
	e.mustMount("v", "id2")
	info, err = e.d.Get(bg, "v")
	if err != nil {
		t.Fatal(err)
	}
	want = map[string]any{"size": "1G", "fstype": "ext4", "image": "volumes/v", "pool": "volumes",
		"device": "/dev/fake0", "mounts": []string{"id1", "id2"}, "host": "host-a"}
	if info.Mountpoint != e.path("v") || !reflect.DeepEqual(info.Status, want) {
		t.Errorf("Get of a mounted volume: %+v; want mountpoint %s and status %v", info, e.path("v"), want)
	}

	// Held by another host.
	e.prov.add("w", 2<<30, "xfs")
	e.prov.setHolder("w", "host-b (client 10.0.0.2:0/123)")
	info, err = e.d.Get(bg, "w")
	if err != nil {
		t.Fatal(err)
	}
	want = map[string]any{"size": "2G", "fstype": "xfs", "image": "volumes/w", "pool": "volumes",
		"holder": "host-b (client 10.0.0.2:0/123)"}
	if info.Mountpoint != "" || !reflect.DeepEqual(info.Status, want) {
		t.Errorf("Get of a volume held elsewhere: %+v; want no mountpoint and status %v", info, want)
	}

	// Unknown filesystem: the default.
	e.prov.add("x", 1536<<20, "")
	info, err = e.d.Get(bg, "x")
	if err != nil {
		t.Fatal(err)
	}
	if info.Status["fstype"] != "ext4" || info.Status["size"] != "1536M" {
		t.Errorf("Get of a volume of unknown fstype: status %v", info.Status)
	}

	_, err = e.d.Get(bg, "nope")
	assertErr(t, err, ErrNotFound, "volume nope")
}

func TestListAndPath(t *testing.T) {
	e := newTestDriver(t)
	for _, n := range []string{"a", "b", "c"} {
		e.prov.add(n, 1<<30, "ext4")
	}
	e.mustMount("b", "id1")
	vols, err := e.d.List(bg)
	if err != nil {
		t.Fatal(err)
	}
	want := []VolumeInfo{{Name: "a", CreatedAt: fakeCreatedAt}, {Name: "b", Mountpoint: e.path("b"), CreatedAt: fakeCreatedAt},
		{Name: "c", CreatedAt: fakeCreatedAt}}
	if !reflect.DeepEqual(vols, want) {
		t.Errorf("List = %+v, want %+v", vols, want)
	}
	for n, wantPath := range map[string]string{"a": "", "b": e.path("b")} {
		if p, err := e.d.Path(bg, n); err != nil || p != wantPath {
			t.Errorf("Path(%s) = %q, %v; want %q", n, p, err, wantPath)
		}
	}

	e.mustUnmount("b", "id1")
	vols, err = e.d.List(bg)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vols {
		if v.Mountpoint != "" {
			t.Errorf("List after the unmount: %s has mountpoint %s", v.Name, v.Mountpoint)
		}
	}

	e.prov.failNext("List", errors.New("rados: timed out"))
	_, err = e.d.List(bg)
	assertErr(t, err, nil, "list volumes", "rados: timed out")
}

// ---------------------------------------------------------------------------------------------
// The protocol adapter

func newPlugin(e *testEnv, timeout time.Duration) *Plugin {
	return &Plugin{D: e.d, Timeout: timeout, Log: e.cfg.Log}
}

// gibProvisioner is a backend that sizes volumes in whole GiB, as Cinder does.
type gibProvisioner struct{ *fakeProvisioner }

func (gibProvisioner) RoundSize(s uint64) uint64 { return (s + 1<<30 - 1) >> 30 << 30 }

// A backend with a size granularity gets the rounded size, and a repeated Create with the same
// unrounded size is compatible with what it made.
func TestCreateRoundsToTheBackendsSizes(t *testing.T) {
	e := newTestDriver(t)
	d := New(e.cfg, gibProvisioner{e.prov}, e.mapper, e.mounter, e.store)
	if err := d.Reconcile(bg); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := d.Create(bg, "v", map[string]string{"size": "200M"}); err != nil {
			t.Fatalf("Create #%d with size 200M: %v", i+1, err)
		}
	}
	if got := e.prov.createdOptions(); len(got) != 1 || got[0].Size != 1<<30 {
		t.Fatalf("created %+v, want one volume of 1G", got)
	}
	err := d.Create(bg, "v", map[string]string{"size": "1500M"})
	assertErr(t, err, ErrExists, "volume v", "size 2G", "it has 1G")
}
