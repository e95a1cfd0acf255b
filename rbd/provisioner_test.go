package rbd

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

func provFixture() (*fakeCeph, *Provisioner) {
	f := newFake()
	return f, newProvisioner(f, ProvisionerConfig{Pool: "volumes", Host: "node-1", HostID: idA, Features: []string{"layering"}})
}

var bg = context.Background()

func TestCreateRecordsTheOptions(t *testing.T) {
	f, p := provFixture()
	opts := driver.Options{Size: 1 << 30, FSType: "xfs", MkfsOptions: []string{"-m", "crc=1"}, MountOptions: "noatime",
		Backend: map[string]string{OptDataPool: "ec", OptFeatures: "layering, exclusive-lock"}}
	if err := p.Create(bg, "db", opts); err != nil {
		t.Fatal(err)
	}
	img := f.image(Spec{Pool: "volumes", Image: "db"})
	if img == nil || img.info.Size != 1<<30 || img.info.DataPool != "ec" || strings.Join(img.info.Features, ",") != "layering,exclusive-lock" {
		t.Fatalf("image %+v", img)
	}
	if img.meta[metaFSType] != "xfs" || img.meta[metaMkfsOptions] != "-m crc=1" || img.meta[metaMountOptions] != "noatime" || img.meta[metaCreated] == "" {
		t.Errorf("metadata %v", img.meta)
	}
	if len(f.called("writeIndex")) != 0 {
		t.Error("a volume in the default pool was indexed")
	}
	if err := p.Create(bg, "db", opts); !errors.Is(err, driver.ErrExists) {
		t.Errorf("second create: %v", err)
	}
	vol, err := p.Get(bg, "db")
	if err != nil || vol.FSType != "xfs" || vol.MountOptions != "noatime" || len(vol.MkfsOptions) != 2 || vol.CreatedAt.IsZero() || vol.Status["data-pool"] != "ec" {
		t.Errorf("get: %+v, %v", vol, err)
	}
}

func TestCreateRefusesBadOptions(t *testing.T) {
	f, p := provFixture()
	for _, c := range []struct{ key, value, says string }{
		{OptPool, "a/b", "pool"},
		{OptDataPool, "", "data-pool"},
		{OptFeatures, "layering,warp-drive", "warp-drive"},
		{OptFromSnapshot, "nosnap", "from-snapshot"},
		{OptFromSnapshot, "img@a/b", "from-snapshot"},
	} {
		err := p.Create(bg, "v", driver.Options{Size: 1, Backend: map[string]string{c.key: c.value}})
		if !errors.Is(err, driver.ErrInvalid) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s=%q: %v", c.key, c.value, err)
		}
	}
	if len(f.called("Create"))+len(f.called("Clone")) != 0 {
		t.Errorf("made images: %v", f.calls)
	}
}

// A volume in another pool is indexed in the default pool, so that Get, List and Remove find it.
func TestCreateInAnotherPoolIndexesIt(t *testing.T) {
	f, p := provFixture()
	if err := p.Create(bg, "fast", driver.Options{Size: 1, Backend: map[string]string{OptPool: "ssd"}}); err != nil {
		t.Fatal(err)
	}
	if f.index["fast"] != "ssd/fast" {
		t.Fatalf("index %v", f.index)
	}
	vol, err := p.Get(bg, "fast")
	if err != nil || vol.Image != (Spec{Pool: "ssd", Image: "fast"}) {
		t.Fatalf("get %+v %v", vol, err)
	}
	f.add(Spec{Pool: "volumes", Image: "local"}, 1)
	f.add(Spec{Pool: "volumes", Image: "bad~name"}, 1)
	vols, err := p.List(bg)
	if err != nil || len(vols) != 2 || vols[0].Name != "fast" || vols[1].Name != "local" {
		t.Fatalf("list %+v %v", vols, err)
	}
	if err := p.Remove(bg, "fast", driver.RemoveDelete); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.index["fast"]; ok || f.image(Spec{Pool: "ssd", Image: "fast"}) != nil {
		t.Errorf("index %v after remove", f.index)
	}
	if _, err := p.Get(bg, "fast"); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("get after remove: %v", err)
	}
}

// An image in another pool that the index does not know (a Create killed between the two) is
// indexed by the next Create, which then reports that the volume exists.
func TestCreateIndexesAnUnindexedImage(t *testing.T) {
	f, p := provFixture()
	f.add(Spec{Pool: "ssd", Image: "half"}, 1)
	err := p.Create(bg, "half", driver.Options{Size: 1, Backend: map[string]string{OptPool: "ssd"}})
	if !errors.Is(err, driver.ErrExists) || f.index["half"] != "ssd/half" {
		t.Fatalf("err %v, index %v", err, f.index)
	}
	f.fail["writeIndex"] = errors.New("omap refused")
	err = p.Create(bg, "half", driver.Options{Size: 1, Backend: map[string]string{OptPool: "ssd"}})
	if !errors.Is(err, driver.ErrExists) {
		t.Fatalf("err %v", err)
	}
}

// A Create that fails after making its image removes it; a removal that fails too is in the error.
func TestCreateUndoesItsImage(t *testing.T) {
	for _, c := range []struct{ fail, pool string }{{"SetMetas", ""}, {"writeIndex", "ssd"}} {
		f, p := provFixture()
		f.fail[c.fail] = errors.New("osd full")
		opts := driver.Options{Size: 1, Backend: map[string]string{}}
		if c.pool != "" {
			opts.Backend[OptPool] = c.pool
		}
		err := p.Create(bg, "v", opts)
		if err == nil || !strings.Contains(err.Error(), "osd full") {
			t.Fatalf("%s: err %v", c.fail, err)
		}
		if len(f.images) != 0 {
			t.Errorf("%s: images left %v", c.fail, f.images)
		}
	}
	f, p := provFixture()
	f.fail["SetMetas"] = errors.New("osd full")
	f.fail["Remove"] = errors.New("osd gone")
	err := p.Create(bg, "v", driver.Options{Size: 1})
	if err == nil || !strings.Contains(err.Error(), "osd full") || !strings.Contains(err.Error(), "undoing it also failed") ||
		!strings.Contains(err.Error(), "remove image volumes/v") || !strings.Contains(err.Error(), "osd gone") {
		t.Fatalf("err %v", err)
	}
}

func TestCreateClone(t *testing.T) {
	f, p := provFixture()
	f.add(Spec{Pool: "volumes", Image: "gold"}, 1<<30)
	// From a volume's snapshot, grown to the size asked for.
	opts := driver.Options{Size: 2 << 30, SizeGiven: true, Backend: map[string]string{OptFromSnapshot: "gold@v1"}}
	if err := p.Create(bg, "c1", opts); err != nil {
		t.Fatal(err)
	}
	img := f.image(Spec{Pool: "volumes", Image: "c1"})
	if img.info.Parent != "volumes/gold@v1" || img.info.Size != 2<<30 || img.meta[metaFromSnapshot] != "volumes/gold@v1" {
		t.Fatalf("clone %+v meta %v", img.info, img.meta)
	}
	// Without -o size it keeps the snapshot's size; pool/image@snap names the image directly.
	if err := p.Create(bg, "c2", driver.Options{Size: 5 << 30, Backend: map[string]string{OptFromSnapshot: "volumes/gold@v1"}}); err != nil {
		t.Fatal(err)
	}
	if sz := f.image(Spec{Pool: "volumes", Image: "c2"}).info.Size; sz != 1<<30 {
		t.Errorf("size %d", sz)
	}
	vol, _ := p.Get(bg, "c2")
	if diffs, err := p.Differences(bg, vol, driver.Options{Backend: map[string]string{OptFromSnapshot: "gold@v1"}}); err != nil || len(diffs) != 0 {
		t.Errorf("differences %v %v", diffs, err)
	}
	if diffs, _ := p.Differences(bg, vol, driver.Options{Backend: map[string]string{OptFromSnapshot: "gold@v2"}}); len(diffs) != 1 || !strings.Contains(diffs[0], "cloned from volumes/gold@v1") {
		t.Errorf("differences %v", diffs)
	}
	// A missing source; a failure after the clone removes it.
	if err := p.Create(bg, "c3", driver.Options{Size: 1, Backend: map[string]string{OptFromSnapshot: "nope@v1"}}); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("missing source: %v", err)
	}
	for _, method := range []string{"ProtectSnap", "Clone", "Info", "Resize"} {
		f.fail = map[string]error{method: errors.New(method + " failed")}
		err := p.Create(bg, "c4", opts)
		if err == nil || !strings.Contains(err.Error(), method+" failed") || f.image(Spec{Pool: "volumes", Image: "c4"}) != nil {
			t.Errorf("%s: err %v, clone left: %v", method, err, f.image(Spec{Pool: "volumes", Image: "c4"}) != nil)
		}
	}
}

func TestDifferences(t *testing.T) {
	_, p := provFixture()
	vol := driver.Volume{Image: Spec{Pool: "volumes", Image: "v"}, Status: map[string]any{"features": "exclusive-lock,layering,operations", "data-pool": "ec"}}
	for _, c := range []struct {
		opts map[string]string
		want []string
	}{
		{map[string]string{OptPool: "volumes", OptDataPool: "ec", OptFeatures: "layering,exclusive-lock,data-pool"}, nil},
		{map[string]string{OptPool: "ssd"}, []string{"pool ssd (it is in pool volumes)"}},
		{map[string]string{OptDataPool: "volumes"}, []string{"data-pool volumes (it has ec)"}},
		{map[string]string{OptFeatures: "layering"}, []string{"features layering (it has exclusive-lock,layering)"}},
		{map[string]string{OptFromSnapshot: "x"}, []string{"from-snapshot x (not image@snapshot or volume@snapshot)"}},
		{map[string]string{OptFromSnapshot: "volumes/a@s"}, []string{"from-snapshot volumes/a@s (it is not a clone)"}},
	} {
		got, err := p.Differences(bg, vol, driver.Options{Backend: c.opts})
		if err != nil || strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("%v: %q %v, want %q", c.opts, got, err, c.want)
		}
	}
	vol.Status = map[string]any{"parent": "volumes/a@s"}
	if got, _ := p.Differences(bg, vol, driver.Options{Backend: map[string]string{OptFromSnapshot: "volumes/b@s"}}); len(got) != 1 || !strings.Contains(got[0], "a clone of volumes/a@s") {
		t.Errorf("parent link: %q", got)
	}
	if got, _ := p.Differences(bg, driver.Volume{Status: map[string]any{}}, driver.Options{Backend: map[string]string{OptDataPool: "ec"}}); len(got) != 1 || !strings.Contains(got[0], "it has none") {
		t.Errorf("no data pool: %q", got)
	}
	if p.RoundSize(12345) != 12345 || len(p.BackendOptions()) != 5 || !slices.Contains(p.BackendOptions(), OptFromVolume) {
		t.Error("RoundSize or BackendOptions")
	}
}

func TestRemoveFollowsTheAction(t *testing.T) {
	f, p := provFixture()
	spec := Spec{Pool: "volumes", Image: "v"}
	f.add(spec, 1).watchers = []Watcher{{Addr: "10.0.0.2:0/1"}}
	if err := p.Remove(bg, "v", driver.RemoveDelete); !errors.Is(err, driver.ErrInUse) || !strings.Contains(err.Error(), "10.0.0.2:0/1") {
		t.Fatalf("in use: %v", err)
	}
	f.image(spec).watchers = nil
	if err := p.Remove(bg, "v", driver.RemoveKeep); err != nil {
		t.Fatal(err)
	}
	if names, _ := f.List(bg, "volumes", ""); len(names) != 1 || !strings.HasPrefix(names[0], "v~removed-") {
		t.Fatalf("kept as %v", names)
	}
	f.add(spec, 1)
	if err := p.Remove(bg, "v", driver.RemoveTrash); err != nil || len(f.called("Trash")) != 1 {
		t.Fatalf("trash: %v", err)
	}
	f.add(spec, 1)
	f.fail["Remove"] = &OpError{Op: "remove", What: "volumes/v", Kind: driver.ErrInUse, Err: errors.New("busy")}
	if err := p.Remove(bg, "v", driver.RemoveDelete); !errors.Is(err, driver.ErrInUse) || !strings.Contains(err.Error(), "REMOVE_ACTION=trash") {
		t.Errorf("snapshots: %v", err)
	}
	for _, method := range []string{"Rename", "Trash"} {
		f.fail = map[string]error{method: errors.New("no")}
		action := map[string]driver.RemoveAction{"Rename": driver.RemoveKeep, "Trash": driver.RemoveTrash}[method]
		if err := p.Remove(bg, "v", action); err == nil {
			t.Errorf("%s failure not reported", method)
		}
	}
}

func TestDetachReleasesOnlyThisHostsLock(t *testing.T) {
	f, p := provFixture()
	spec := Spec{Pool: "volumes", Image: "v"}
	other := Locker{Client: "client.42", Cookie: HostCookie("node-2", idB)}
	f.add(spec, 1).lockers = []Locker{other, {Client: "client.1", Cookie: HostCookie("node-1", idA)}}
	f.fail["ClearHolder"] = errors.New("omap refused") // logged, not fatal
	if err := p.Detach(bg, "v", driver.Attachment{}); err != nil {
		t.Fatal(err)
	}
	if l := f.image(spec).lockers; len(l) != 1 || l[0] != other {
		t.Errorf("locks left %+v", l)
	}
	// Gone already, or never there: success.
	if err := p.Detach(bg, "gone", driver.Attachment{}); err != nil {
		t.Errorf("missing volume: %v", err)
	}
	if err := p.Detach(bg, "gone", driver.Attachment{Map: driver.MapRequest{ImageSpec: Spec{Pool: "volumes", Image: "gone"}}}); err != nil {
		t.Errorf("missing image: %v", err)
	}
	f.fail["Lockers"] = errors.New("osd down")
	if err := p.Detach(bg, "v", driver.Attachment{}); err == nil {
		t.Error("a failed lock listing is success")
	}
}

func TestRecordClients(t *testing.T) {
	f, p := provFixture()
	spec := Spec{Pool: "volumes", Image: "v"}
	if err := p.RecordClients(bg, "v", driver.Attachment{}, driver.Mapping{ImageSpec: spec, Client: "10.0.0.1:0/7"}); err != nil {
		t.Fatal(err)
	}
	if len(f.records) != 1 || f.records[0].ID != idA || f.records[0].Clients[1] != "10.0.0.1:0/7" || f.called("RecordClients")[0] != spec.String() {
		t.Fatalf("records %+v", f.records)
	}
	noID := newProvisioner(f, ProvisionerConfig{Pool: "volumes", Host: "node-1"})
	if err := noID.RecordClients(bg, "v", driver.Attachment{}, driver.Mapping{ImageSpec: spec}); err != nil || len(f.records) != 1 {
		t.Errorf("without an identity something was recorded: %v", err)
	}
}

func TestGetAndListFailures(t *testing.T) {
	f, p := provFixture()
	f.fail["readIndex"] = errors.New("omap read failed")
	if _, err := p.Get(bg, "v"); err == nil || !strings.Contains(err.Error(), "omap read failed") {
		t.Errorf("get: %v", err)
	}
	if _, err := p.List(bg); err == nil {
		t.Error("list without the index")
	}
	f.fail = map[string]error{"List": errors.New("no pool")}
	if _, err := p.List(bg); err == nil {
		t.Error("list without the pool")
	}
	f.fail = map[string]error{"Describe": errors.New("osd down")}
	if _, err := p.Get(bg, "v"); err == nil || !strings.Contains(err.Error(), "osd down") {
		t.Errorf("get: %v", err)
	}
	f.fail = map[string]error{"ImageID": errors.New("osd down")}
	if err := p.Create(bg, "v", driver.Options{Size: 1}); err == nil {
		t.Error("create without knowing whether the name is taken")
	}
}

func TestVolumeOf(t *testing.T) {
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	d := Description{Info: ImageInfo{Size: 7, Features: []string{"layering"}, Parent: "p/i@s", DataPool: "ec"},
		Meta:    map[string]string{metaFSType: "ext4", metaCreated: created.Format(time.RFC3339), metaFromSnapshot: "p/i@s"},
		Lockers: []Locker{{Client: "client.4", Cookie: HostCookie("node-2", ""), Addr: "10.0.0.2:0/1"}}}
	v := volumeOf("v", Spec{Pool: "p", Image: "v"}, d)
	if v.Size != 7 || !v.CreatedAt.Equal(created) || v.Status["parent"] != "p/i@s" || v.Status[OptFromSnapshot] != "p/i@s" ||
		v.Status["data-pool"] != "ec" || v.Holder != "host node-2 (client.4 at 10.0.0.2:0/1)" {
		t.Errorf("%+v", v)
	}
}
