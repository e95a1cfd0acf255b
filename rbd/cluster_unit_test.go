package rbd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	librbd "github.com/ceph/go-ceph/rbd"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// A takeover fences each client once, in order (watchers, lock owners, the holder's record),
// never this connection, whatever form Ceph printed the addresses in.
func TestFenceTargets(t *testing.T) {
	self := "10.0.0.1:0/100"
	got := fenceTargets(self,
		[]Watcher{{Addr: "10.0.0.2:0/9"}, {Addr: self}},
		[]string{"v1:10.0.0.2:0/9", "10.0.0.3:0/5"},
		[]string{"[v2:10.0.0.1:0/100,v1:10.0.0.1:0/100]", "10.0.0.4:0/6", "10.0.0.3:0/5"})
	want := "10.0.0.2:0/9 10.0.0.3:0/5 10.0.0.4:0/6"
	if strings.Join(got, " ") != want {
		t.Errorf("fence %q, want %q", got, want)
	}
	if got := fenceTargets(self, nil, nil, nil); len(got) != 0 {
		t.Errorf("nothing to fence: %q", got)
	}
}

// The wait for watches to lapse ends as soon as none is left, and leaves the caller its reserve.
func TestPollWatchers(t *testing.T) {
	w := []Watcher{{Addr: "10.0.0.2:0/9"}}
	var looks atomic.Int32
	ws, err := pollWatchers(context.Background(), 0, time.Millisecond, func(context.Context) ([]Watcher, error) {
		if looks.Add(1) < 3 {
			return w, nil
		}
		return nil, nil
	})
	if err != nil || len(ws) != 0 || looks.Load() != 3 {
		t.Errorf("lapsed: %v %v after %d looks", ws, err, looks.Load())
	}
	// A live watcher: given up before the deadline less the reserve.
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	start := time.Now()
	ws, err = pollWatchers(ctx, time.Second, 100*time.Millisecond, func(context.Context) ([]Watcher, error) { return w, nil })
	if err != nil || len(ws) != 1 {
		t.Errorf("live: %v %v", ws, err)
	}
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("waited %v: past the deadline less the reserve and a look", took)
	}
	// No time left: one look only.
	looks.Store(0)
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	_, _ = pollWatchers(ctx2, 10*time.Second, time.Millisecond, func(context.Context) ([]Watcher, error) { looks.Add(1); return w, nil })
	if looks.Load() != 1 {
		t.Errorf("%d looks without time for a second", looks.Load())
	}
	boom := errors.New("osd down")
	if _, err := pollWatchers(context.Background(), 0, time.Millisecond, func(context.Context) ([]Watcher, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Errorf("look error: %v", err)
	}
}

func TestParseMonDump(t *testing.T) {
	// As pacific prints it.
	out := `{"epoch":1,"mons":[{"rank":0,"name":"a","public_addrs":{"addrvec":[{"type":"v2","addr":"127.0.0.1:3300","nonce":0},{"type":"v1","addr":"127.0.0.1:6789","nonce":0}]},"addr":"127.0.0.1:6789/0"}],"quorum":[0]}`
	mons, err := parseMonDump([]byte(out))
	if err != nil || len(mons) != 1 || mons[0] != "127.0.0.1:6789" {
		t.Errorf("mons %v %v", mons, err)
	}
	if _, err := parseMonDump([]byte(`{"mons":[{"public_addrs":{"addrvec":[{"type":"v2","addr":"127.0.0.1:3300"}]}}]}`)); err == nil || !strings.Contains(err.Error(), "v1") {
		t.Errorf("v2 only: %v", err)
	}
	if _, err := parseMonDump([]byte("dumped monmap")); err == nil || !strings.Contains(err.Error(), "unexpected output") {
		t.Errorf("not JSON: %v", err)
	}
}

func TestBlocklisted(t *testing.T) {
	// Pacific: the address list, then the range list.
	out := `[{"addr":"127.0.0.1:0/1606018543","until":"2026-11-29T18:54:20.894791+0000"},{"addr":"127.0.0.1:6809/13804","until":"2026-11-30T17:43:25+0000"}][]`
	for addr, want := range map[string]bool{"v1:127.0.0.1:0/1606018543": true, "127.0.0.1:6809/13804": true, "127.0.0.1:0/1": false} {
		if got, err := blocklisted([]byte(out), addr); err != nil || got != want {
			t.Errorf("%s: %v %v", addr, got, err)
		}
	}
	if _, err := blocklisted([]byte("listed 2 entries"), "x"); err == nil {
		t.Error("not JSON")
	}
}

func TestParseHolder(t *testing.T) {
	spec := Spec{Pool: "volumes", Image: "v"}
	rec, ok, err := parseHolder(map[string][]byte{holderKey: []byte(`{"host":"node-1","id":"` + idA + `","clients":["10.0.0.1:0/1"]}`)}, spec)
	if err != nil || !ok || rec.Host != "node-1" || rec.ID != idA || len(rec.Clients) != 1 {
		t.Errorf("%+v %v %v", rec, ok, err)
	}
	if _, ok, err := parseHolder(map[string][]byte{}, spec); ok || err != nil {
		t.Errorf("none: %v %v", ok, err)
	}
	if _, _, err := parseHolder(map[string][]byte{holderKey: []byte("{")}, spec); err == nil || !strings.Contains(err.Error(), "volumes/v") {
		t.Errorf("not JSON: %v", err)
	}
}

// Calls check their arguments before they reach librados, and name the operation and the image.
func TestClusterRefusesBadArguments(t *testing.T) {
	c := newCluster(Config{User: "docker"}.withDefaults(), nil)
	noSnap := Spec{Pool: "volumes", Image: "v"}
	snap := Spec{Pool: "volumes", Image: "v", Snap: "s"}
	for what, err := range map[string]error{
		"create without pool":  c.Create(bg, Spec{Image: "v"}, CreateOptions{Size: 1}),
		"create with a snap":   c.Create(bg, snap, CreateOptions{Size: 1}),
		"create of size 0":     c.Create(bg, noSnap, CreateOptions{}),
		"resize to 0":          c.Resize(bg, noSnap, 0),
		"remove of a snap":     c.Remove(bg, snap),
		"snap create, no snap": c.CreateSnap(bg, noSnap),
		"protect, no snap":     c.ProtectSnap(bg, noSnap),
		"clone from no snap":   c.Clone(bg, noSnap, Spec{Pool: "volumes", Image: "c"}, CreateOptions{}),
		"clone to a snap":      c.Clone(bg, snap, snap, CreateOptions{}),
		"image id of a snap":   func() error { _, err := c.ImageID(bg, snap); return err }(),
		"no pool to open":      func() error { _, err := c.List(bg, "", ""); return err }(),
	} {
		var oe *OpError
		if !errors.As(err, &oe) || !errors.Is(err, driver.ErrInvalid) {
			t.Errorf("%s: %v", what, err)
		}
	}
	if c.User() != "docker" || c.cfg.Cluster != "ceph" || c.cfg.OpTimeout != DefaultOpTimeout {
		t.Errorf("defaults %+v", c.cfg)
	}
	c.Close()
	if err := c.Remove(bg, noSnap); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("after Close: %v", err)
	}
	if err := c.do(bg, "x", "y", func() error { return nil }, nil); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("call after Close: %v", err)
	}
}

// A call that completes after its caller gave up is undone; an undo that fails is logged with
// what it left behind.
func TestLateUndoIsLogged(t *testing.T) {
	log, hook := logtest.NewNullLogger()
	c := newCluster(Config{User: "docker", OpTimeout: time.Second, Log: log}, nil)
	release := make(chan struct{})
	ctx, cancel := context.WithTimeout(bg, 20*time.Millisecond)
	defer cancel()
	undone := make(chan struct{})
	err := c.do(ctx, "create", "volumes/v", func() error { <-release; return nil },
		c.undoIfOK("create", "volumes/v", func() error { defer close(undone); return errors.New("osd gone") }))
	if !errors.Is(err, driver.ErrTimeout) {
		t.Fatalf("err = %v", err)
	}
	close(release)
	<-undone
	c.Close() // waits for the late undo
	e := hook.LastEntry()
	if e == nil || e.Level != logrus.WarnLevel || e.Data["image"] != "volumes/v" || e.Data["op"] != "create" {
		t.Fatalf("log %+v", e)
	}
	// A late call that failed has nothing to undo.
	c2 := newCluster(Config{User: "docker", OpTimeout: time.Second, Log: log}, nil)
	ran := false
	c2.undoIfOK("create", "x", func() error { ran = true; return nil })(errors.New("failed"))
	if ran {
		t.Error("undid a call that failed")
	}
}

// Cinder mode's view of Ceph says why while Ceph does not answer.
func TestGuardAndLazyBeforeCeph(t *testing.T) {
	s := &scriptedDial{}
	k, _ := newTestConnector(s)
	k.Wait = 100 * time.Millisecond
	defer k.Close()
	g := Guard{Conn: k}
	spec := Spec{Pool: "volumes", Image: "v"}
	_, ferr := g.Fence(bg, spec, idA)
	_, werr := g.ForeignWatchers(bg, spec)
	_, lerr := g.LiveWatchers(bg, spec)
	for i, err := range []error{ferr, werr, lerr, g.RecordClients(bg, spec, "node-1", idA, nil), g.ClearClients(bg, spec, idA)} {
		if !errors.Is(err, driver.ErrTimeout) || !strings.Contains(err.Error(), "not reachable yet") {
			t.Errorf("guard call %d: %v", i, err)
		}
	}
	if _, err := NewLazy(k, ProvisionerConfig{Pool: "volumes"}).Get(bg, "v"); !errors.Is(err, driver.ErrTimeout) {
		t.Errorf("lazy: %v", err)
	}
}

// Create and Clone hand librbd the features, data pool and object size asked for.
func TestImageOptions(t *testing.T) {
	bits, err := ParseFeatures([]string{"layering", "exclusive-lock"})
	if err != nil {
		t.Fatal(err)
	}
	rio, err := imageOptions(CreateOptions{Features: []string{"layering", "exclusive-lock"}, DataPool: "ec", Order: 22}, bits)
	if err != nil {
		t.Fatal(err)
	}
	defer rio.Destroy()
	if got, err := rio.GetUint64(librbd.ImageOptionFeatures); err != nil || got != bits {
		t.Errorf("features %x %v, want %x", got, err, bits)
	}
	if got, err := rio.GetString(librbd.ImageOptionDataPool); err != nil || got != "ec" {
		t.Errorf("data pool %q %v", got, err)
	}
	if got, err := rio.GetUint64(librbd.ImageOptionOrder); err != nil || got != 22 {
		t.Errorf("order %d %v", got, err)
	}
	plain, err := imageOptions(CreateOptions{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Destroy()
	if _, err := plain.GetString(librbd.ImageOptionDataPool); err == nil {
		t.Error("a data pool was set without being asked for")
	}
}

func TestOpErrorMessages(t *testing.T) {
	cause := errors.New("ret=-5")
	for _, c := range []struct {
		e    *OpError
		want string
	}{
		{&OpError{Op: "create", What: "volumes/v", Err: cause}, "rbd create volumes/v: ret=-5"},
		{&OpError{Op: "create", What: "volumes/v", Kind: driver.ErrInUse, Err: cause}, "rbd create volumes/v: " + driver.ErrInUse.Error() + ": ret=-5"},
		{&OpError{Op: "create", What: "volumes/v", Kind: driver.ErrInUse, Err: fmt.Errorf("%w: snapshots", driver.ErrInUse)}, "rbd create volumes/v: " + driver.ErrInUse.Error() + ": snapshots"},
	} {
		if got := c.e.Error(); got != c.want {
			t.Errorf("%q, want %q", got, c.want)
		}
		if !errors.Is(c.e, c.e.Err) || (c.e.Kind != nil && !errors.Is(c.e, c.e.Kind)) {
			t.Errorf("%v does not match its kind and cause", c.e)
		}
	}
}

// After Close, every call fails at once saying so, before it reaches librados.
func TestClosedClusterRefusesCalls(t *testing.T) {
	c := newCluster(Config{User: "docker"}.withDefaults(), nil)
	c.Close()
	c.Close() // twice is fine
	spec := Spec{Pool: "volumes", Image: "v"}
	_, lerr := c.List(bg, "volumes", "")
	_, ierr := c.ImageID(bg, spec)
	for i, err := range []error{lerr, ierr, c.Create(bg, spec, CreateOptions{Size: 1}), c.CreateSnap(bg, Spec{Pool: "volumes", Image: "v", Snap: "s"}),
		c.Clone(bg, Spec{Pool: "volumes", Image: "v", Snap: "s"}, Spec{Pool: "volumes", Image: "c"}, CreateOptions{}),
		c.writeIndex(bg, "volumes", "v", "x")} {
		if !errors.Is(err, driver.ErrInvalid) || !strings.Contains(err.Error(), "closed") {
			t.Errorf("call %d: %v", i, err)
		}
	}
}
