package rbd

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// Every call of a closed cluster fails at once with ErrInvalid saying so (the image calls, the
// header reads of Describe and the host locks, the monitor commands), before it reaches
// librados; EndsUnwritten then says "not known".
func TestClosedClusterRefusesEveryCall(t *testing.T) {
	c := newCluster(Config{User: "docker"}.withDefaults(), nil)
	c.Close()
	v := Spec{Pool: "volumes", Image: "v"}
	s := Spec{Pool: "volumes", Image: "v", Snap: "s"}
	errOf := func(_ any, err error) error { return err }
	calls := map[string]error{
		"Describe":        errOf(c.Describe(bg, v)),
		"Info":            errOf(c.Info(bg, v)),
		"Resize":          c.Resize(bg, v, 1<<20),
		"Rename":          c.Rename(bg, v, "w"),
		"Trash":           c.Trash(bg, v, time.Hour),
		"TrashList":       errOf(c.TrashList(bg, "volumes", "")),
		"SetMeta":         c.SetMeta(bg, v, "k", "v"),
		"SetMetas":        c.SetMetas(bg, v, map[string]string{"k": "v"}),
		"GetMeta":         errOf(c.GetMeta(bg, v, "k")),
		"ListMeta":        errOf(c.ListMeta(bg, v)),
		"RemoveMeta":      c.RemoveMeta(bg, v, "k"),
		"Watchers":        errOf(c.Watchers(bg, v)),
		"OtherWatchers":   errOf(c.OtherWatchers(bg, v)),
		"LockOwners":      errOf(c.LockOwners(bg, v)),
		"AcquireLock":     errOf(c.AcquireLock(bg, v)),
		"BreakLock":       errOf(c.BreakLock(bg, v, "h")),
		"Lockers":         errOf(c.Lockers(bg, v)),
		"LockHost":        c.LockHost(bg, v, "", "cookie", "desc"),
		"LockHost by id":  c.LockHost(bg, v, "1234", "cookie", "desc"),
		"BreakHostLock":   c.BreakHostLock(bg, v, Locker{Client: "client.1", Cookie: "c"}),
		"LiveWatchers":    errOf(c.LiveWatchers(bg, v)),
		"ListSnaps":       errOf(c.ListSnaps(bg, v)),
		"ProtectSnap":     c.ProtectSnap(bg, s),
		"UnprotectSnap":   c.UnprotectSnap(bg, s),
		"RemoveSnap":      c.RemoveSnap(bg, s),
		"Flatten":         c.Flatten(bg, v),
		"readIndex":       errOf(c.readIndex(bg, "volumes")),
		"dropIndex":       c.dropIndex(bg, "volumes", "v"),
		"ClearHolder":     c.ClearHolder(bg, v, "id"),
		"PoolAvail":       errOf(c.PoolAvail(bg, "volumes")),
		"Monitors":        errOf(c.Monitors(bg)),
		"Blocklist":       c.Blocklist(bg, "10.0.0.1:0/1", time.Minute),
		"Blocklisted":     errOf(c.Blocklisted(bg, "10.0.0.1:0/1")),
		"FenceDeadHolder": errOf(c.FenceDeadHolder(bg, v, 0, "h")),
	}
	_, _, serr := c.ServerTime(bg, "volumes", "clock")
	calls["ServerTime"] = serr
	_, _, herr := c.Holder(bg, v)
	calls["Holder"] = herr
	for what, err := range calls {
		var oe *OpError
		if !errors.As(err, &oe) || !errors.Is(err, driver.ErrInvalid) || !strings.Contains(err.Error(), "closed") {
			t.Errorf("%s after Close: %v, want ErrInvalid saying the connection is closed", what, err)
		}
	}
	info := ImageInfo{Spec: v, Size: 1 << 30, DataPrefix: "rbd_data.1", ObjectSize: 4 << 20, StripeUnit: 4 << 20, StripeCount: 1}
	if c.EndsUnwritten(bg, info, 1<<20) {
		t.Error("EndsUnwritten of a closed cluster: true, want false (not known)")
	}
}

// poolAvail reads max_avail of the pool asked for out of `ceph df -f json`.
func TestPoolAvail(t *testing.T) {
	out := []byte(`{"stats":{"total_bytes":107374182400},"pools":[
		{"name":"device_health_metrics","id":1,"stats":{"stored":0,"max_avail":1000}},
		{"name":"volumes","id":2,"stats":{"stored":4096,"objects":3,"max_avail":32212254720}},
		{"name":"odd","id":3,"stats":{"stored":0}}]}`)
	if n, err := poolAvail(out, "volumes"); err != nil || n != 32212254720 {
		t.Errorf("volumes: %d, %v; want 32212254720", n, err)
	}
	if _, err := poolAvail(out, "nope"); !errors.Is(err, driver.ErrNotFound) || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("a missing pool: %v, want ErrNotFound naming it", err)
	}
	if _, err := poolAvail(out, "odd"); err == nil || !strings.Contains(err.Error(), "max_avail") {
		t.Errorf("no max_avail: %v, want an error saying so", err)
	}
	if _, err := poolAvail([]byte("not json"), "volumes"); err == nil || !strings.Contains(err.Error(), "unexpected output") {
		t.Errorf("bad output: %v", err)
	}
}
