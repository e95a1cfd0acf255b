package driver

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
)

func TestPluginCapabilities(t *testing.T) {
	e := newTestDriver(t)
	if got := newPlugin(e, time.Second).Capabilities().Capabilities.Scope; got != "global" {
		t.Errorf("scope %q, want global", got)
	}
}

func TestPluginRoundTrip(t *testing.T) {
	e := newTestDriver(t)
	p := newPlugin(e, 5*time.Second)
	if err := p.Create(&volume.CreateRequest{Name: "web-data", Options: map[string]string{"size": "1G"}}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	mr, err := p.Mount(&volume.MountRequest{Name: "web-data", ID: "c1"})
	if err != nil || mr.Mountpoint != e.path("web-data") {
		t.Fatalf("Mount = %+v, %v; want mountpoint %s", mr, err, e.path("web-data"))
	}
	pr, err := p.Path(&volume.PathRequest{Name: "web-data"})
	if err != nil || pr.Mountpoint != e.path("web-data") {
		t.Errorf("Path = %+v, %v", pr, err)
	}
	gr, err := p.Get(&volume.GetRequest{Name: "web-data"})
	if err != nil || gr.Volume.Name != "web-data" || gr.Volume.Mountpoint != e.path("web-data") ||
		gr.Volume.CreatedAt != "2024-05-06T07:08:09Z" || gr.Volume.Status["size"] != "1G" {
		t.Errorf("Get = %+v, %v", gr, err)
	}
	lr, err := p.List()
	if err != nil || len(lr.Volumes) != 1 || lr.Volumes[0].Mountpoint != e.path("web-data") {
		t.Errorf("List = %+v, %v", lr, err)
	}
	if err := p.Unmount(&volume.UnmountRequest{Name: "web-data", ID: "c1"}); err != nil {
		t.Errorf("Unmount: %v", err)
	}
	if err := p.Remove(&volume.RemoveRequest{Name: "web-data"}); err != nil {
		t.Errorf("Remove: %v", err)
	}
	e.assertGone("web-data")
	if e.prov.exists("web-data") {
		t.Error("the volume still exists")
	}
}

func TestPluginErrorsNameTheVolumeAndAreLogged(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("web-data", 1<<30, "ext4")
	p := newPlugin(e, 5*time.Second)
	e.logs.Reset()

	e.prov.failNext("Attach", errors.New("rados: ret=-110"))
	_, err := p.Mount(&volume.MountRequest{Name: "web-data", ID: "c1"})
	assertErr(t, err, nil, "web-data", "ret=-110")
	e.prov.failNext("Remove", fmt.Errorf("%w: image has watchers", ErrInUse))
	err = p.Remove(&volume.RemoveRequest{Name: "web-data"})
	assertErr(t, err, ErrInUse, "web-data")

	for _, op := range []string{"mount", "remove"} {
		found := false
		for _, en := range e.logs.AllEntries() {
			if en.Level == logrus.WarnLevel && en.Data["op"] == op && en.Data["volume"] == "web-data" && en.Data[logrus.ErrorKey] != nil {
				found = true
			}
		}
		if !found {
			t.Errorf("no warning with op=%s, volume=web-data and the error", op)
		}
	}

	// Successful calls are logged at debug level, with the same fields.
	e.logs.Reset()
	if _, err := p.Get(&volume.GetRequest{Name: "web-data"}); err != nil {
		t.Fatal(err)
	}
	if en := e.logs.LastEntry(); en == nil || en.Level != logrus.DebugLevel || en.Data["op"] != "get" || en.Data["volume"] != "web-data" {
		t.Errorf("log of a successful Get: %+v", en)
	}
}

func TestPluginGivesEachCallADeadline(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("web-data", 1<<30, "ext4")
	e.mapper.block(t, "Map", "web-data")
	// Map blocks until the call's deadline, so the deadline is what the test waits for: long enough
	// that Attach (before Map) finishes within it on a loaded machine.
	p := newPlugin(e, 500*time.Millisecond)
	_, err := p.Mount(&volume.MountRequest{Name: "web-data", ID: "c1"})
	assertErr(t, err, context.DeadlineExceeded, "web-data")
	// The undo ran past the call's deadline, on its own.
	e.assertGone("web-data")
	assertOps(t, "Mount past its deadline", e.rec.ops(0), "prov.Attach web-data", "map.Map web-data", "prov.Detach web-data")
}
