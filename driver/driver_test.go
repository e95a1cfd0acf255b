package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
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

func TestMountRefCounting(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")

	m := e.rec.mark()
	e.mustMount("v", "id1")
	assertOps(t, "first Mount", e.rec.ops(m), "prov.Attach v", "map.Map v", "mnt.FormatIfBlank /dev/fake0", "mnt.Mount v")
	if got := e.mounter.formattedDevices(); !slices.Equal(got, []string{"/dev/fake0"}) {
		t.Errorf("formatted %q, want [/dev/fake0]", got)
	}
	if got, want := e.mounter.mountCalls(), []mountCall{{"/dev/fake0", e.path("v"), "ext4", ForcedMountFlags}}; !slices.Equal(got, want) {
		t.Errorf("mounts %+v, want %+v", got, want)
	}
	st := e.assertUp("v", "id1")
	if st.Device != "/dev/fake0" || st.FSType != "ext4" || st.Path != e.path("v") || st.Image != image("v") || st.Attach.ID != "cookie" {
		t.Errorf("state after the first Mount: %+v", st)
	}

	m = e.rec.mark()
	e.mustMount("v", "id2")
	assertOps(t, "second Mount (another ID)", e.rec.ops(m))
	e.assertUp("v", "id1", "id2")

	m = e.rec.mark()
	e.mustMount("v", "id1")
	assertOps(t, "Mount again with the same ID", e.rec.ops(m))
	e.assertUses("v", map[string]int{"id1": 2, "id2": 1})

	m = e.rec.mark()
	e.mustUnmount("v", "id1")
	assertOps(t, "Unmount of one of id1's two uses", e.rec.ops(m))
	e.assertUses("v", map[string]int{"id1": 1, "id2": 1})

	m = e.rec.mark()
	e.mustUnmount("v", "id1")
	assertOps(t, "Unmount of id1's last use, id2 still up", e.rec.ops(m))
	e.assertUp("v", "id2")

	m = e.rec.mark()
	if err := e.d.Unmount(bg, "v", "stranger"); err != nil {
		t.Fatalf("Unmount of an unknown ID: %v", err)
	}
	assertOps(t, "Unmount of an unknown ID while mounted (any call)", e.rec.since(m))
	e.assertUp("v", "id2")

	m = e.rec.mark()
	e.mustUnmount("v", "id2")
	assertOps(t, "last Unmount", e.rec.ops(m), "mnt.Unmount v", "map.Unmap v", "prov.Detach v")
	e.assertGone("v")

	m = e.rec.mark()
	if err := e.d.Unmount(bg, "v", "id2"); err != nil {
		t.Errorf("Unmount of an ID already gone: %v", err)
	}
	if err := e.d.Unmount(bg, "ghost", "id1"); err != nil {
		t.Errorf("Unmount of an unknown volume: %v", err)
	}
	assertOps(t, "Unmount of unknown IDs and volumes (any call)", e.rec.since(m))

	for _, c := range []struct {
		s      *script
		method string
		want   int
	}{
		{&e.prov.script, "Attach", 1}, {&e.prov.script, "Detach", 1}, {&e.mapper.script, "Map", 1},
		{&e.mapper.script, "Unmap", 1}, {&e.mounter.script, "Mount", 1}, {&e.mounter.script, "Unmount", 1},
		{&e.mounter.script, "FormatIfBlank", 1},
	} {
		if got := c.s.count(c.method); got != c.want {
			t.Errorf("%s.%s called %d times, want %d", c.s.prefix, c.method, got, c.want)
		}
	}
}

// dockerd mounts a container's volume again with the container's own mount ID for each nested use
// (`docker cp` in and out and its stat: moby's MountPoint.Setup counts them and Cleanup calls
// Unmount once per use). The first nested Unmount must not release the volume under the running
// container.
func TestNestedUsesOfOneID(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "A")
	m := e.rec.mark()
	e.mustMount("v", "A")
	e.mustMount("v", "A")
	assertOps(t, "nested Mounts with the same ID", e.rec.ops(m))
	e.assertUses("v", map[string]int{"A": 3})
	e.mustUnmount("v", "A")
	e.mustUnmount("v", "A")
	assertOps(t, "two nested Unmounts", e.rec.ops(m))
	e.assertUses("v", map[string]int{"A": 1})
	e.mustUnmount("v", "A")
	assertOps(t, "the last use's Unmount", e.rec.ops(m), "mnt.Unmount v", "map.Unmap v", "prov.Detach v")
	e.assertGone("v")
	m = e.rec.mark()
	if err := e.d.Unmount(bg, "v", "A"); err != nil {
		t.Fatalf("an Unmount beyond the uses counted: %v", err)
	}
	assertOps(t, "an Unmount beyond the uses counted (any call)", e.rec.since(m))
}

// The uses are persisted: a restart (after a crash between nested calls) keeps them.
func TestNestedUsesSurviveRestart(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "A")
	e.mustMount("v", "A")
	e.mustMount("v", "B")
	d := e.restart()
	if err := d.Reconcile(bg); err != nil {
		t.Fatal(err)
	}
	e.assertUses("v", map[string]int{"A": 2, "B": 1})
	e.mustUnmount("v", "A")
	e.mustUnmount("v", "B")
	e.assertUses("v", map[string]int{"A": 1})
	m := e.rec.mark()
	e.mustUnmount("v", "A")
	assertOps(t, "the last use's Unmount after a restart", e.rec.ops(m), "mnt.Unmount v", "map.Unmap v", "prov.Detach v")
	e.assertGone("v")
}

// State written before uses were counted (a set of IDs, no Uses) reads as one use per ID after an
// upgrade, and state written now still carries the set of IDs, so that the earlier plugin reads
// it correctly after a downgrade.
func TestStateOfTheSetFormat(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "id1")
	e.mustMount("v", "id2")
	// Rewrite the record as the earlier format wrote it: the set of IDs, no uses.
	file := filepath.Join(e.files.Dir, "v.json")
	var rec map[string]any
	raw, err := os.ReadFile(file)
	if err == nil {
		err = json.Unmarshal(raw, &rec)
	}
	if err != nil || rec["Uses"] == nil {
		t.Fatalf("state file: %v, %s", err, raw)
	}
	delete(rec, "Uses")
	if raw, err = json.Marshal(rec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	d := e.restart()
	if err := d.Reconcile(bg); err != nil {
		t.Fatal(err)
	}
	e.assertUses("v", map[string]int{"id1": 1, "id2": 1})
	e.mustMount("v", "id1")
	e.assertUses("v", map[string]int{"id1": 2, "id2": 1})
	raw, err = os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var set struct{ IDs []string }
	if err := json.Unmarshal(raw, &set); err != nil || !slices.Equal(set.IDs, []string{"id1", "id2"}) {
		t.Fatalf("the state as the earlier format reads it: IDs %q (%v), want [id1 id2]\n%s", set.IDs, err, raw)
	}
	e.mustUnmount("v", "id2")
	e.mustUnmount("v", "id1")
	e.assertUses("v", map[string]int{"id1": 1})
	e.mustUnmount("v", "id1")
	e.assertGone("v")
}

func TestMountNeedsCallerID(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	m := e.rec.mark()
	_, err := e.d.Mount(bg, "v", "")
	assertErr(t, err, ErrInvalid, "v", "caller ID")
	assertOps(t, "Mount without ID", e.rec.since(m))
}

func TestMountKeepsExistingFilesystemAndPassesOptions(t *testing.T) {
	e := newTestDriver(t)
	if err := e.d.Create(bg, "v", map[string]string{"fstype": "ext4", "mkfs-options": "-m 0", "mount-options": "noatime,discard"}); err != nil {
		t.Fatal(err)
	}
	if err := e.d.Create(bg, "w", map[string]string{"mkfs-options": "-m 0"}); err != nil {
		t.Fatal(err)
	}
	// v: blank, formatted with its mkfs options and mounted with its mount options.
	e.mustMount("v", "id1")
	// w: its device (the next one) carries xfs already: not formatted, mounted as xfs.
	e.mounter.setFS("/dev/fake1", "xfs")
	e.mustMount("w", "id1")

	if got := e.mounter.formattedDevices(); !slices.Equal(got, []string{"/dev/fake0"}) {
		t.Errorf("formatted %q, want only /dev/fake0", got)
	}
	e.mounter.mu.Lock()
	mkfs := slices.Clone(e.mounter.mkfsOpts)
	e.mounter.mu.Unlock()
	if !reflect.DeepEqual(mkfs, [][]string{{"-m", "0"}}) {
		t.Errorf("mkfs options %q, want [[-m 0]]", mkfs)
	}
	want := []mountCall{
		{"/dev/fake0", e.path("v"), "ext4", "noatime,discard," + ForcedMountFlags},
		{"/dev/fake1", e.path("w"), "xfs", ForcedMountFlags},
	}
	if got := e.mounter.mountCalls(); !slices.Equal(got, want) {
		t.Errorf("mounts %+v, want %+v", got, want)
	}
	if st := e.assertUp("w", "id1"); st.FSType != "xfs" {
		t.Errorf("state of w records fstype %q, want the xfs found on the device", st.FSType)
	}
	e.mapper.mu.Lock()
	req := e.mapper.lastReq
	e.mapper.mu.Unlock()
	if req.User != "docker" || !slices.Equal(req.Monitors, []string{"127.0.0.1:6789"}) || req.ImageSpec != image("w") {
		t.Errorf("Map got %+v, want the request Attach returned", req)
	}
}

func TestMountHeldElsewhere(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.prov.setHolder("v", "host-b")
	_, err := e.d.Mount(bg, "v", "id1")
	assertErr(t, err, ErrBusyElsewhere, "volume v", "host-b")
	assertOps(t, "Mount of a volume held elsewhere", e.rec.ops(0), "prov.Attach v")
	if _, ok := e.state("v"); ok {
		t.Error("state kept after a failed Mount")
	}
	if h := e.prov.holder("v"); h != "host-b" {
		t.Errorf("holder %q, want host-b", h)
	}

	// With LOCK_BREAK the volume is taken over, and the take-over is logged.
	e = newTestDriver(t, func(c *Config) { c.LockBreak = true })
	e.prov.add("v", 1<<30, "ext4")
	e.prov.setHolder("v", "host-b")
	e.mustMount("v", "id1")
	e.assertUp("v", "id1")
	found := false
	for _, en := range e.logs.AllEntries() {
		if f, ok := en.Data["fenced"].([]string); ok && slices.Equal(f, []string{"host-b"}) && en.Level == logrus.WarnLevel {
			found = true
		}
	}
	if !found {
		t.Error("no warning naming the fenced holder")
	}
}

func TestUnmountBusyIsRetried(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "id1")
	e.mounter.setBusy(e.path("v"), true)

	err := e.d.Unmount(bg, "v", "id1")
	assertErr(t, err, ErrInUse, "volume v")
	st, ok := e.state("v")
	if !ok || st.Op != "unmount" || st.OpID != "id1" || !slices.Equal(st.IDs, []string{"id1"}) {
		t.Fatalf("state after a failed last Unmount: %+v (found %v); want Op unmount for id1", st, ok)
	}
	if e.mapper.device(image("v")) == "" || e.prov.holder("v") != "host-a" {
		t.Error("a failed unmount went on to unmap or detach")
	}

	// While still busy, another Mount first tries to finish the unmount, and says so.
	_, err = e.d.Mount(bg, "v", "id2")
	assertErr(t, err, ErrInUse, "volume v", "finishing an interrupted")

	e.mounter.setBusy(e.path("v"), false)
	m := e.rec.mark()
	e.mustUnmount("v", "id1")
	assertOps(t, "Unmount retried", e.rec.ops(m), "mnt.Unmount v", "map.Unmap v", "prov.Detach v")
	e.assertGone("v")
}

func TestRepairErrorNamesTheInterruptedOperation(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "id1")
	e.mounter.setBusy(e.path("v"), true)
	if err := e.d.Unmount(bg, "v", "id1"); !errors.Is(err, ErrInUse) {
		t.Fatalf("Unmount of a busy mount: %v", err)
	}
	_, err := e.d.Mount(bg, "v", "id2")
	assertErr(t, err, ErrInUse, "finishing an interrupted unmount first")
	err = e.d.Unmount(bg, "v", "id1")
	assertErr(t, err, ErrInUse, "finishing an interrupted unmount first")
	err = e.d.Remove(bg, "v")
	assertErr(t, err, ErrInUse, "finishing an interrupted unmount first")
}

// ---------------------------------------------------------------------------------------------
// Parallel calls

func TestParallelMountUnmountOneVolume(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	const workers, rounds = 16, 5
	start := make(chan struct{})
	errs := make(chan error, workers*rounds*3)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for r := range rounds {
				id := fmt.Sprintf("c%d-%d", i, r)
				p, err := e.d.Mount(bg, "v", id)
				if err != nil || p != e.path("v") {
					errs <- fmt.Errorf("Mount %s = %q, %v", id, p, err)
					continue
				}
				// While this reference is held, the volume must be up.
				if e.mapper.device(image("v")) == "" || e.mounter.device(e.path("v")) == "" || e.prov.holder("v") != "host-a" {
					errs <- fmt.Errorf("%s holds a reference but the volume is not up", id)
				}
				if err := e.d.Unmount(bg, "v", id); err != nil {
					errs <- fmt.Errorf("Unmount %s: %v", id, err)
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	e.assertGone("v")

	if n := e.rec.maxInFlight(); n != 1 {
		t.Errorf("%d calls on one volume were in flight at once, want 1 (calls on a volume are serialized)", n)
	}
	if n := e.mapper.remapCount(); n != 0 {
		t.Errorf("Map called %d times for an image already mapped", n)
	}
	if n := e.mounter.remountCount(); n != 0 {
		t.Errorf("Mount called %d times for a target already mounted", n)
	}
	maps := e.mapper.count("Map")
	if maps < 1 || maps != e.mapper.count("Unmap") || maps != e.prov.count("Attach") || maps != e.prov.count("Detach") ||
		maps != e.mounter.count("Mount") || maps != e.mounter.count("Unmount") || maps != e.mounter.count("FormatIfBlank") {
		t.Errorf("unbalanced calls: Map %d Unmap %d Attach %d Detach %d Mount %d Unmount %d FormatIfBlank %d",
			maps, e.mapper.count("Unmap"), e.prov.count("Attach"), e.prov.count("Detach"),
			e.mounter.count("Mount"), e.mounter.count("Unmount"), e.mounter.count("FormatIfBlank"))
	}
}

func TestMountsOfDifferentVolumesRunInParallel(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("a", 1<<30, "ext4")
	e.prov.add("b", 1<<30, "ext4")
	g := e.mapper.block(t, "Map", "a")

	resA := make(chan error, 1)
	go func() {
		_, err := e.d.Mount(bg, "a", "id1")
		resA <- err
	}()
	recv(t, "Map of a", g.entered)

	// a is stuck in Map; b goes through all its steps meanwhile.
	ctx, cancel := context.WithTimeout(bg, 5*time.Second)
	defer cancel()
	if _, err := e.d.Mount(ctx, "b", "id1"); err != nil {
		t.Fatalf("Mount(b) while a is mapping: %v", err)
	}
	e.assertUp("b", "id1")
	if err := e.d.Create(ctx, "c", nil); err != nil {
		t.Fatalf("Create(c) while a is mapping: %v", err)
	}
	if err := e.d.Unmount(ctx, "b", "id1"); err != nil {
		t.Fatalf("Unmount(b) while a is mapping: %v", err)
	}
	select {
	case err := <-resA:
		t.Fatalf("Mount(a) returned while its Map was held: %v", err)
	default:
	}

	g.open()
	if err := recv(t, "Mount(a)", resA); err != nil {
		t.Fatalf("Mount(a): %v", err)
	}
	e.assertUp("a", "id1")
}

func TestSecondCallOnSameVolumeWaits(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("a", 1<<30, "ext4")
	g := e.mapper.block(t, "Map", "a")

	type result struct {
		path string
		err  error
	}
	res1 := make(chan result, 1)
	go func() {
		p, err := e.d.Mount(bg, "a", "id1")
		res1 <- result{p, err}
	}()
	recv(t, "Map of a", g.entered)

	res2 := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(bg, 10*time.Second)
		defer cancel()
		p, err := e.d.Mount(ctx, "a", "id2")
		res2 <- result{p, err}
	}()
	waitFor(t, "the second Mount to wait for the volume", func() bool { return e.d.lockRefs("a") == 2 })

	// Callers whose own deadline passes while they wait fail with ErrTimeout, not before.
	const wait = 40 * time.Millisecond
	for _, call := range []struct {
		name string
		fn   func(ctx context.Context) error
	}{
		{"Mount", func(ctx context.Context) error { _, err := e.d.Mount(ctx, "a", "id3"); return err }},
		{"Unmount", func(ctx context.Context) error { return e.d.Unmount(ctx, "a", "id1") }},
		{"Remove", func(ctx context.Context) error { return e.d.Remove(ctx, "a") }},
	} {
		ctx, cancel := context.WithTimeout(bg, wait)
		start := time.Now()
		err := call.fn(ctx)
		elapsed := time.Since(start)
		cancel()
		assertErr(t, err, ErrTimeout, "volume a ")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: err = %v, want it to wrap the deadline", call.name, err)
		}
		if elapsed < wait {
			t.Errorf("%s failed after %v, before its deadline of %v", call.name, elapsed, wait)
		}
	}
	if n := e.d.lockRefs("a"); n != 2 {
		t.Errorf("lock refs = %d after the timed-out callers left, want 2", n)
	}
	select {
	case r := <-res2:
		t.Fatalf("the second Mount returned while the first was in progress: %+v", r)
	default:
	}
	if e.prov.count("Remove") != 0 {
		t.Error("Remove reached the backend while the volume was locked")
	}

	g.open()
	if r := recv(t, "first Mount", res1); r.err != nil || r.path != e.path("a") {
		t.Fatalf("first Mount = %+v", r)
	}
	if r := recv(t, "second Mount", res2); r.err != nil || r.path != e.path("a") {
		t.Fatalf("second Mount = %+v", r)
	}
	if n := e.mapper.count("Map"); n != 1 {
		t.Errorf("Map called %d times, want 1", n)
	}
	e.assertUp("a", "id1", "id2")
	if n := e.d.locks.size(); n != 0 {
		t.Errorf("%d volume locks remain", n)
	}
}

// ---------------------------------------------------------------------------------------------
// Rollback of a failed first Mount

func TestMountRollback(t *testing.T) {
	const vol = "data-7"
	cases := []struct {
		name   string
		inject func(e *testEnv)
		want   []string // side effects, the failing one included
	}{
		// (Attach comes first: the state records the mount before any side effect.)
		{"get", func(e *testEnv) { e.prov.failNext("Get", errInjected) }, []string{"prov.Attach data-7", "prov.Detach data-7"}},
		{"save before attach", func(e *testEnv) { e.store.failSave(1, errInjected) }, nil},
		// A definite refusal claimed nothing: there is nothing to undo.
		{"attach refused", func(e *testEnv) { e.prov.failNext("Attach", fmt.Errorf("%w: %w", ErrBusyElsewhere, errInjected)) },
			[]string{"prov.Attach data-7"}},
		// No answer: the backend may have made the claim (or make it later); it is released.
		{"attach", func(e *testEnv) { e.prov.failNext("Attach", errInjected) },
			[]string{"prov.Attach data-7", "prov.Detach data-7"}},
		{"save after attach", func(e *testEnv) { e.store.failSave(2, errInjected) },
			[]string{"prov.Attach data-7", "prov.Detach data-7"}},
		{"map", func(e *testEnv) { e.mapper.failNext("Map", errInjected) },
			[]string{"prov.Attach data-7", "map.Map data-7", "prov.Detach data-7"}},
		{"format", func(e *testEnv) { e.mounter.failNext("FormatIfBlank", errInjected) },
			[]string{"prov.Attach data-7", "map.Map data-7", "mnt.FormatIfBlank /dev/fake0", "map.Unmap data-7", "prov.Detach data-7"}},
		{"mount", func(e *testEnv) { e.mounter.failNext("Mount", errInjected) },
			[]string{"prov.Attach data-7", "map.Map data-7", "mnt.FormatIfBlank /dev/fake0", "mnt.Mount data-7",
				"map.Unmap data-7", "prov.Detach data-7"}},
		{"final save", func(e *testEnv) { e.store.failSave(3, errInjected) },
			[]string{"prov.Attach data-7", "map.Map data-7", "mnt.FormatIfBlank /dev/fake0", "mnt.Mount data-7",
				"mnt.Unmount data-7", "map.Unmap data-7", "prov.Detach data-7"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newTestDriver(t)
			e.prov.add(vol, 1<<30, "ext4")
			c.inject(e)
			m := e.rec.mark()
			_, err := e.d.Mount(bg, vol, "id1")
			assertErr(t, err, errInjected, vol)
			if strings.Contains(err.Error(), "undoing") {
				t.Errorf("err %q reports a failed undo; the undo succeeded", err)
			}
			assertOps(t, "failed Mount and its undo", e.rec.ops(m), c.want...)
			e.assertGone(vol)

			// Nothing is left in the way of the next Mount.
			e.prov.clearFaults()
			e.mapper.clearFaults()
			e.mounter.clearFaults()
			e.mustMount(vol, "id1")
			e.assertUp(vol, "id1")
		})
	}
}

// failMountAndUnmap makes the first Mount fail at Mount, and the Unmap of its undo fail too.
func failMountAndUnmap(t *testing.T, e *testEnv, vol string) error {
	t.Helper()
	e.mounter.failNext("Mount", errInjected)
	e.mapper.failNext("Unmap", errors.New("rbd: sysfs write failed: device busy"))
	_, err := e.d.Mount(bg, vol, "id1")
	assertErr(t, err, errInjected, vol, "undoing it also failed", "unmap", "device busy")
	st, ok := e.state(vol)
	if !ok || st.Op != "mount" || st.OpID != "id1" || len(st.IDs) != 0 {
		t.Fatalf("state after a failed undo: %+v (found %v); want it kept with Op mount and no IDs", st, ok)
	}
	if dev := e.mapper.device(image(vol)); dev != "/dev/fake0" || st.Device != dev {
		t.Fatalf("mapping %q, state device %q: want both /dev/fake0 (the unmap failed)", dev, st.Device)
	}
	return err
}

func TestMountRollbackUndoFails(t *testing.T) {
	const vol = "data-7"
	teardown := []string{"mnt.Unmount data-7", "map.Unmap data-7", "prov.Detach data-7"}

	t.Run("unmount repairs", func(t *testing.T) {
		e := newTestDriver(t)
		e.prov.add(vol, 1<<30, "ext4")
		failMountAndUnmap(t, e, vol)
		m := e.rec.mark()
		if err := e.d.Unmount(bg, vol, "id1"); err != nil {
			t.Fatalf("Unmount after a failed undo: %v", err)
		}
		assertOps(t, "Unmount repairing", e.rec.ops(m), teardown...)
		e.assertGone(vol)
	})
	t.Run("mount repairs", func(t *testing.T) {
		e := newTestDriver(t)
		e.prov.add(vol, 1<<30, "ext4")
		failMountAndUnmap(t, e, vol)
		m := e.rec.mark()
		e.mustMount(vol, "id2")
		assertOps(t, "Mount repairing", e.rec.ops(m), append(teardown,
			"prov.Attach data-7", "map.Map data-7", "mnt.FormatIfBlank /dev/fake1", "mnt.Mount data-7")...)
		e.assertUp(vol, "id2")
	})
	t.Run("mount repair fails again", func(t *testing.T) {
		e := newTestDriver(t)
		e.prov.add(vol, 1<<30, "ext4")
		failMountAndUnmap(t, e, vol)
		e.mapper.failNext("Unmap", errors.New("still busy"))
		_, err := e.d.Mount(bg, vol, "id2")
		assertErr(t, err, nil, vol, "finishing an interrupted", "still busy")
		if st, ok := e.state(vol); !ok || st.Op != "mount" {
			t.Fatalf("state after a failed repair: %+v (found %v); want it kept", st, ok)
		}
		if n := e.mapper.count("Map"); n != 1 {
			t.Errorf("Map called %d times: a Mount went on after its repair failed", n)
		}
		e.mustMount(vol, "id2")
		e.assertUp(vol, "id2")
	})
	t.Run("reconcile repairs", func(t *testing.T) {
		e := newTestDriver(t)
		e.prov.add(vol, 1<<30, "ext4")
		failMountAndUnmap(t, e, vol)
		d := e.restart()
		m := e.rec.mark()
		if err := d.Reconcile(bg); err != nil {
			t.Fatalf("Reconcile: %v", err)
		}
		assertOps(t, "Reconcile repairing", e.rec.ops(m), teardown...)
		e.assertGone(vol)
	})
}

func TestMountRollbackKeepsClaimWhileStillMapped(t *testing.T) {
	const vol = "data-7"
	e := newTestDriver(t)
	e.prov.add(vol, 1<<30, "ext4")
	m := e.rec.mark()
	failMountAndUnmap(t, e, vol)
	assertOps(t, "failed Mount and its failed undo", e.rec.ops(m),
		"prov.Attach data-7", "map.Map data-7", "mnt.FormatIfBlank /dev/fake0", "mnt.Mount data-7", "map.Unmap data-7")
	if h := e.prov.holder(vol); h != "host-a" {
		t.Errorf("the image is still mapped on host-a but the backend's holder is %q", h)
	}
	if _, err := e.prov.Attach(bg, vol, AttachRequest{Host: "host-b", MountID: "x"}); !errors.Is(err, ErrBusyElsewhere) {
		t.Errorf("host-b could attach a volume still mapped on host-a (err %v)", err)
	}
}

// ---------------------------------------------------------------------------------------------
// Reconcile after a restart

func TestReconcileEverythingUp(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "id1")
	e.mustMount("v", "id2")
	before, _ := e.state("v")

	d := e.restart()
	m := e.rec.mark()
	if err := d.Reconcile(bg); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	assertOps(t, "Reconcile with everything up (the claim is confirmed)", e.rec.ops(m), "prov.Attach v")
	after := e.assertUp("v", "id1", "id2")
	if !after.Updated.Equal(before.Updated) || after.Device != before.Device {
		t.Errorf("state rewritten: %+v, was %+v", after, before)
	}

	m = e.rec.mark()
	e.mustMount("v", "id3")
	assertOps(t, "Mount after the restart", e.rec.ops(m))
	e.assertUp("v", "id1", "id2", "id3")
}

func TestReconcileLostMapping(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "id1")
	e.mapper.lose(image("v")) // the mount of the dead /dev/fake0 remains

	d := e.restart()
	m := e.rec.mark()
	if err := d.Reconcile(bg); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	assertOps(t, "Reconcile of a lost mapping", e.rec.ops(m), "prov.Attach v", "mnt.Unmount v", "map.Map v", "mnt.Mount v")
	st := e.assertUp("v", "id1")
	if st.Device != "/dev/fake1" || e.mounter.device(e.path("v")) != "/dev/fake1" {
		t.Errorf("state device %s, mounted %s; want the new /dev/fake1", st.Device, e.mounter.device(e.path("v")))
	}
	if got := e.mounter.formattedDevices(); !slices.Equal(got, []string{"/dev/fake0"}) {
		t.Errorf("formatted %q: a remapped volume must not be formatted", got)
	}
}

func TestReconcileLostMappingAndMount(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "id1")
	e.mapper.lose(image("v"))
	e.mounter.lose(e.path("v"))

	d := e.restart()
	m := e.rec.mark()
	if err := d.Reconcile(bg); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	assertOps(t, "Reconcile of a lost mapping and mount", e.rec.ops(m), "prov.Attach v", "map.Map v", "mnt.Mount v")
	if st := e.assertUp("v", "id1"); st.Device != "/dev/fake1" {
		t.Errorf("state device %s, want /dev/fake1", st.Device)
	}
}

func TestReconcileLostMount(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "id1")
	e.mounter.lose(e.path("v"))

	d := e.restart()
	m := e.rec.mark()
	if err := d.Reconcile(bg); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	assertOps(t, "Reconcile of a lost mount", e.rec.ops(m), "prov.Attach v", "mnt.Mount v")
	if st := e.assertUp("v", "id1"); st.Device != "/dev/fake0" {
		t.Errorf("state device %s, want /dev/fake0", st.Device)
	}
}

func TestReconcileCrashMidMount(t *testing.T) {
	for _, step := range []string{"mount:attached", "mount:mapped", "mount:formatted", "mount:mounted"} {
		t.Run(step, func(t *testing.T) {
			e := newTestDriver(t)
			e.prov.add("v", 1<<30, "ext4")
			e.crashing(step, func() { _, _ = e.d.Mount(bg, "v", "id1") })
			st, ok := e.state("v")
			if !ok || st.Op != "mount" || st.OpID != "id1" || len(st.IDs) != 0 {
				t.Fatalf("state after a crash at %s: %+v (found %v)", step, st, ok)
			}
			if e.prov.holder("v") != "host-a" {
				t.Fatal("a crash undid the attach: the test simulates nothing")
			}

			d := e.restart()
			m := e.rec.mark()
			if err := d.Reconcile(bg); err != nil {
				t.Fatalf("Reconcile: %v", err)
			}
			assertOps(t, "Reconcile of a crashed Mount", e.rec.ops(m), "mnt.Unmount v", "map.Unmap v", "prov.Detach v")
			e.assertGone("v")
			e.mustMount("v", "id2")
			e.assertUp("v", "id2")
		})
	}
}

func TestReconcileCrashMidUnmount(t *testing.T) {
	for _, step := range []string{"unmount:unmounted", "unmount:unmapped", "unmount:detached"} {
		t.Run(step, func(t *testing.T) {
			e := newTestDriver(t)
			e.prov.add("v", 1<<30, "ext4")
			e.mustMount("v", "id1")
			e.crashing(step, func() { _ = e.d.Unmount(bg, "v", "id1") })
			st, ok := e.state("v")
			if !ok || st.Op != "unmount" || st.OpID != "id1" || !slices.Equal(st.IDs, []string{"id1"}) {
				t.Fatalf("state after a crash at %s: %+v (found %v)", step, st, ok)
			}

			d := e.restart()
			m := e.rec.mark()
			if err := d.Reconcile(bg); err != nil {
				t.Fatalf("Reconcile: %v", err)
			}
			assertOps(t, "Reconcile of a crashed Unmount", e.rec.ops(m), "mnt.Unmount v", "map.Unmap v", "prov.Detach v")
			e.assertGone("v")
		})
	}
}

func TestReconcileUnmountOfOneOfTwo(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "id1")
	e.mustMount("v", "id2")
	st, _ := e.state("v")
	st.Op, st.OpID = "unmount", "id1"
	if err := e.files.Save(st); err != nil {
		t.Fatal(err)
	}

	d := e.restart()
	m := e.rec.mark()
	if err := d.Reconcile(bg); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	assertOps(t, "Reconcile of an unmount of one of two references", e.rec.ops(m), "prov.Attach v")
	e.assertUp("v", "id2")
}

func TestReconcileStateWithoutIDs(t *testing.T) {
	// A state with no IDs and no operation (left by an older version, say) is torn down.
	e := newUnreconciledDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.prov.setHolder("v", "host-a")
	e.mapper.inject(image("v"), "/dev/fake5")
	if err := e.files.Save(State{Name: "v", Image: image("v"), FSType: "ext4", Path: e.path("v"), Device: "/dev/fake5"}); err != nil {
		t.Fatal(err)
	}
	if err := e.d.Reconcile(bg); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	assertOps(t, "Reconcile of a state without IDs", e.rec.ops(0), "mnt.Unmount v", "map.Unmap v", "prov.Detach v")
	e.assertGone("v")
}

func TestReconcileLeavesUnknownMappingsAlone(t *testing.T) {
	e := newUnreconciledDriver(t)
	e.mapper.inject(image("stranger"), "/dev/rbd9")
	if err := e.d.Reconcile(bg); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	assertOps(t, "Reconcile with a foreign mapping", e.rec.ops(0))
	if e.mapper.device(image("stranger")) != "/dev/rbd9" {
		t.Error("Reconcile removed a mapping it did not make")
	}
	warned := false
	for _, en := range e.logs.AllEntries() {
		if en.Level == logrus.WarnLevel && en.Data["image"] == "volumes/stranger" {
			warned = true
		}
	}
	if !warned {
		t.Error("no warning about the foreign mapping")
	}
}

func TestReconcileFailureIsRetriedByTheNextCall(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "id1")
	e.mapper.lose(image("v"))
	d := e.restart()
	e.mapper.failNext("Map", errInjected)
	err := d.Reconcile(bg)
	assertErr(t, err, errInjected, "volume v")
	if st, ok := e.state("v"); !ok || !slices.Equal(st.IDs, []string{"id1"}) {
		t.Fatalf("state after a failed reconcile: %+v (found %v); want it kept", st, ok)
	}
	// Calls are let through all the same, and the next one on the volume repairs it.
	ctx, cancel := context.WithTimeout(bg, 5*time.Second)
	defer cancel()
	if _, err := d.Mount(ctx, "v", "id2"); err != nil {
		t.Fatalf("Mount after a failed reconcile: %v", err)
	}
	e.assertUp("v", "id1", "id2")
}

func TestCallsWaitForReconcile(t *testing.T) {
	e := newUnreconciledDriver(t)
	e.prov.add("v", 1<<30, "ext4")

	res := make(chan error, 1)
	go func() {
		_, err := e.d.Mount(bg, "v", "id1")
		res <- err
	}()

	// Calls with a short deadline give up with ErrTimeout, saying why.
	for _, call := range []struct {
		name string
		fn   func(ctx context.Context) error
	}{
		{"Mount", func(ctx context.Context) error { _, err := e.d.Mount(ctx, "v", "id2"); return err }},
		{"Unmount", func(ctx context.Context) error { return e.d.Unmount(ctx, "v", "id2") }},
		{"Remove", func(ctx context.Context) error { return e.d.Remove(ctx, "v") }},
		{"Create", func(ctx context.Context) error { return e.d.Create(ctx, "w", nil) }},
		{"Get", func(ctx context.Context) error { _, err := e.d.Get(ctx, "v"); return err }},
		{"List", func(ctx context.Context) error { _, err := e.d.List(ctx); return err }},
		{"Path", func(ctx context.Context) error { _, err := e.d.Path(ctx, "v"); return err }},
	} {
		ctx, cancel := context.WithTimeout(bg, 30*time.Millisecond)
		err := call.fn(ctx)
		cancel()
		if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "reconciling") {
			t.Errorf("%s before Reconcile: err = %v, want ErrTimeout saying the plugin is reconciling", call.name, err)
		}
	}
	select {
	case err := <-res:
		t.Fatalf("Mount returned before Reconcile: %v", err)
	default:
	}
	assertOps(t, "calls before Reconcile (any call)", e.rec.since(0))

	if err := e.d.Reconcile(bg); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if err := recv(t, "Mount after Reconcile", res); err != nil {
		t.Fatalf("Mount: %v", err)
	}
	e.assertUp("v", "id1")
}

func TestReconcileLostMappingRecordsNewAttachment(t *testing.T) {
	e := newTestDriver(t)
	e.mapper.reuse = true
	n := 0
	e.prov.attachID = func() string { n++; return fmt.Sprintf("att-%d", n) }
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "id1")
	e.mapper.lose(image("v"))
	d := e.restart()
	if err := d.Reconcile(bg); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	st := e.assertUp("v", "id1")
	if st.Device != "/dev/fake0" {
		t.Fatalf("precondition: the new mapping should reuse /dev/fake0, got %s", st.Device)
	}
	if st.Attach.ID != "att-2" {
		t.Errorf("state records attachment %q after re-attaching, want att-2", st.Attach.ID)
	}
}

// ---------------------------------------------------------------------------------------------
// Create

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
		{Size: 2 << 30, SizeGiven: true, FSType: "xfs", MkfsOptions: []string{"-m", "crc=1"}, MountOptions: "noatime", Backend: map[string]string{"pool": "fast"}},
		{Size: 1 << 30, FSType: "ext4", Backend: map[string]string{}}, // DEFAULT_SIZE: not given
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
	e.crashing("mount:mapped", func() { _, _ = e.d.Mount(bg, "v", "id1") })
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
	p := newPlugin(e, 30*time.Millisecond)
	_, err := p.Mount(&volume.MountRequest{Name: "web-data", ID: "c1"})
	assertErr(t, err, context.DeadlineExceeded, "web-data")
	// The undo ran past the call's deadline, on its own.
	e.assertGone("web-data")
	assertOps(t, "Mount past its deadline", e.rec.ops(0), "prov.Attach web-data", "map.Map web-data", "prov.Detach web-data")
}

// After a restart, a volume another host took over (fencing this one) is reported, not
// re-established and not taken back.
func TestReconcileVolumeTakenOverByAnotherHost(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "id1")
	e.prov.setHolder("v", "host-b")
	e.mapper.lose(image("v"))

	d := e.restart()
	m := e.rec.mark()
	err := d.Reconcile(bg)
	if err == nil || !strings.Contains(err.Error(), "no longer holds") || !strings.Contains(err.Error(), "host-b") {
		t.Fatalf("Reconcile: %v, want a report naming host-b", err)
	}
	assertOps(t, "Reconcile of a volume taken over", e.rec.ops(m), "prov.Attach v")
	if e.prov.holder("v") != "host-b" {
		t.Fatalf("holder %q: the volume was taken back", e.prov.holder("v"))
	}
}

// While the backend is unreachable, Get answers for a volume it knew, with the error in its
// Status (dockerd would otherwise make a local volume of that name); unknown names still fail.
func TestGetAnswersFromMemoryWhileBackendUnreachable(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	if _, err := e.d.Get(bg, "v"); err != nil {
		t.Fatal(err)
	}
	e.prov.failAlways("Get", fmt.Errorf("%w: Cinder unreachable", ErrTimeout))
	info, err := e.d.Get(bg, "v")
	if err != nil {
		t.Fatalf("Get with the backend down: %v", err)
	}
	if info.Name != "v" || info.Status["size"] != "1G" || !strings.Contains(fmt.Sprint(info.Status["backend-error"]), "Cinder unreachable") {
		t.Fatalf("info = %+v", info)
	}
	if _, err := e.d.Get(bg, "never-seen"); !errors.Is(err, ErrTimeout) {
		t.Fatalf("unknown volume with the backend down: %v", err)
	}
	e.prov.failAlways("Get", fmt.Errorf("gone: %w", ErrNotFound))
	if _, err := e.d.Get(bg, "v"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("not found is not masked: %v", err)
	}
	e.prov.failAlways("Get", fmt.Errorf("%w: down", ErrTimeout))
	if _, err := e.d.Get(bg, "v"); err == nil {
		t.Fatal("a volume the backend said was gone is still answered from memory")
	}
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

// An Attach that got no answer, whose undo cannot reach the backend either: the state keeps the
// mount's ID, and the background repair releases the claim by it once the backend is back,
// without Docker calling about the volume again.
func TestUncertainAttachReleasedInBackground(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.prov.failNext("Attach", fmt.Errorf("%w: cinder unreachable", ErrTimeout))
	e.prov.failNext("Detach", errInjected)
	_, err := e.d.Mount(bg, "v", "id1")
	assertErr(t, err, ErrTimeout, "volume v", "undoing it also failed")
	st, ok, _ := e.files.Load("v")
	if !ok || st.Op != "mount" || st.Attach.MountID != "id1" {
		t.Fatalf("state after the failed undo: %+v (ok %v), want Op mount with MountID id1", st, ok)
	}
	m := e.rec.mark()
	if err := e.d.RepairPending(bg); err != nil {
		t.Fatalf("RepairPending: %v", err)
	}
	// (Nothing to unmap: the image is known only once attached.)
	assertOps(t, "background repair", e.rec.ops(m), "mnt.Unmount v", "prov.Detach v")
	if got := e.prov.detached[len(e.prov.detached)-1]; got.MountID != "id1" {
		t.Errorf("Detach got %+v, want the MountID id1", got)
	}
	e.assertGone("v")
	// Nothing pending: nothing done.
	m = e.rec.mark()
	if err := e.d.RepairPending(bg); err != nil {
		t.Fatal(err)
	}
	assertOps(t, "RepairPending with nothing pending", e.rec.ops(m))
}

// The background repair leaves a volume that a call is working on to that call.
func TestRepairPendingSkipsBusyVolumes(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.prov.failNext("Attach", errInjected)
	e.prov.failNext("Detach", errInjected)
	if _, err := e.d.Mount(bg, "v", "id1"); err == nil {
		t.Fatal("mount succeeded")
	}
	unlock, err := e.d.locks.lock(bg, "v")
	if err != nil {
		t.Fatal(err)
	}
	m := e.rec.mark()
	if err := e.d.RepairPending(bg); err != nil {
		t.Fatal(err)
	}
	assertOps(t, "RepairPending on a locked volume", e.rec.ops(m))
	unlock()
	if err := e.d.RepairPending(bg); err != nil {
		t.Fatal(err)
	}
	e.assertGone("v")
}

// With Cinder the image is known only once attached: undoing an attach that got no answer
// unmaps nothing (there is nothing to unmap) and still releases the claim.
func TestUncertainAttachWithoutImageReleased(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.prov.mu.Lock()
	v := e.prov.vols["v"]
	v.Image = ImageSpec{}
	e.prov.vols["v"] = v
	e.prov.mu.Unlock()
	e.prov.failNext("Attach", fmt.Errorf("%w: cinder unreachable", ErrTimeout))
	e.prov.failNext("Detach", errInjected)
	if _, err := e.d.Mount(bg, "v", "id1"); err == nil {
		t.Fatal("mount succeeded")
	}
	m := e.rec.mark()
	if err := e.d.RepairPending(bg); err != nil {
		t.Fatalf("RepairPending: %v", err)
	}
	assertOps(t, "background repair", e.rec.ops(m), "mnt.Unmount v", "prov.Detach v")
	e.assertGone("v")
}

// The names of the volumes seen survive a restart: while the backend is unreachable, Get of
// a known volume still answers (Docker would otherwise create a local volume of that name),
// and a volume removed is forgotten.
func TestKnownVolumesSurviveRestart(t *testing.T) {
	e := newTestDriver(t)
	e.cfg.Known = e.files
	d := New(e.cfg, e.prov, e.mapper, e.mounter, e.store)
	if err := d.Reconcile(bg); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b"} {
		if err := d.Create(bg, n, nil); err != nil {
			t.Fatal(err)
		}
	}
	e.prov.add("listed", 1<<30, "ext4")
	if _, err := d.List(bg); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(bg, "b"); err != nil {
		t.Fatal(err)
	}

	// Restart with the backend down.
	d2 := New(e.cfg, e.prov, e.mapper, e.mounter, e.store)
	if err := d2.Reconcile(bg); err != nil {
		t.Fatal(err)
	}
	down := fmt.Errorf("%w: cinder unreachable", ErrTimeout)
	for _, n := range []string{"a", "listed"} {
		e.prov.failNext("Get", down)
		info, err := d2.Get(bg, n)
		if err != nil || info.Name != n || info.Status["backend-error"] == nil {
			t.Errorf("Get %s after a restart with the backend down: %+v, %v", n, info, err)
		}
	}
	e.prov.failNext("Get", down)
	if _, err := d2.Get(bg, "b"); !errors.Is(err, ErrTimeout) {
		t.Errorf("Get of the removed volume b: %v, want the backend's error", err)
	}
}

// A backend whose Attach reads the volume saves the first Mount its Get; the volume's options
// (fstype, mkfs and mount options) still come through.
func TestFirstMountUsesTheVolumeAttachRead(t *testing.T) {
	e := newTestDriver(t)
	e.prov.attachReadsVolume = true
	e.prov.add("v", 1<<30, "xfs")
	m := e.rec.mark()
	e.mustMount("v", "id1")
	for _, op := range e.rec.ops(m) {
		if op == "prov.Get v" {
			t.Fatalf("first Mount called Get although Attach returned the volume: %v", e.rec.ops(m))
		}
	}
	if st, _, _ := e.files.Load("v"); st.FSType != "xfs" || st.Image.Image != "v" {
		t.Fatalf("state %+v: want the fstype and image Attach read", st)
	}
}

// The backend's word that a volume was never written (Attach's Volume.Unwritten) reaches the
// formatter, which then does not read the device; a volume read by Get carries no such word.
func TestFirstMountPassesTheUnwrittenHint(t *testing.T) {
	e := newTestDriver(t)
	e.prov.attachReadsVolume = true
	e.prov.add("fresh", 1<<30, "ext4")
	e.prov.mu.Lock()
	v := e.prov.vols["fresh"]
	v.Unwritten = true
	e.prov.vols["fresh"] = v
	e.prov.mu.Unlock()
	e.prov.add("used", 1<<30, "ext4")
	e.mustMount("fresh", "id1")
	e.mustMount("used", "id2")

	e2 := newTestDriver(t) // a backend whose Attach does not read the volume: Get does
	e2.prov.add("fresh", 1<<30, "ext4")
	e2.prov.mu.Lock()
	v = e2.prov.vols["fresh"]
	v.Unwritten = true // what Get returns must not count: it was read before the claim
	e2.prov.vols["fresh"] = v
	e2.prov.mu.Unlock()
	e2.mustMount("fresh", "id1")

	e.mounter.mu.Lock()
	e2.mounter.mu.Lock()
	defer e.mounter.mu.Unlock()
	defer e2.mounter.mu.Unlock()
	if got, want := e.mounter.unwritten, []bool{true, false}; !slices.Equal(got, want) {
		t.Errorf("hints with Attach's volume = %v, want %v", got, want)
	}
	if got, want := e2.mounter.unwritten, []bool{false}; !slices.Equal(got, want) {
		t.Errorf("hints with Get's volume = %v, want %v", got, want)
	}
}
