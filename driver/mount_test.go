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

	"github.com/sirupsen/logrus"
)

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
	if !ok || st.Op != OpUnmount || st.OpID != "id1" || !slices.Equal(st.IDs, []string{"id1"}) {
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
		if st, ok := e.state(vol); !ok || st.Op != OpMount {
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
