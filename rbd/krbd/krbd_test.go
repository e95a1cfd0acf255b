package krbd

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/driver/undo"
)

const testKey = "AQBD9nJlAAAAABAAu1Q2kY0q7CsJc1mrTf8ifA=="

// fakeKernel plays the kernel rbd driver on a fake sysfs tree: it parses what is written to
// add_single_major and remove_single_major and creates or removes /sys/bus/rbd/devices/<id>.
type fakeKernel struct {
	t      *testing.T
	root   string
	mu     sync.Mutex
	writes []string // "<attr>: <data>"
	images map[string]bool
	busy   map[string]bool // device ids that are open
	nextID int
	gate   chan struct{} // when set, add_single_major waits for it
}

func newFakeKernel(t *testing.T, images ...string) (*fakeKernel, *KRBD) {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"bus/rbd/devices", "block"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"bus/rbd/add_single_major", "bus/rbd/remove_single_major"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o200); err != nil {
			t.Fatal(err)
		}
	}
	fk := &fakeKernel{t: t, root: root, images: map[string]bool{}, busy: map[string]bool{}}
	for _, i := range images {
		fk.images[i] = true
	}
	keyDir := t.TempDir()
	kr := "[client.docker]\n\tkey = " + testKey + "\n\tcaps mon = \"profile rbd\"\n"
	if err := os.WriteFile(filepath.Join(keyDir, "ceph.client.docker.keyring"), []byte(kr), 0o600); err != nil {
		t.Fatal(err)
	}
	k := &KRBD{SysfsRoot: root, DevRoot: "/dev", Keys: KeyringFile{Dir: keyDir}, WriteFile: fk.write}
	return fk, k
}

// fakeClientAddr is the kernel client address the fake kernel gives device id.
func fakeClientAddr(id int) string { return "10.0.0.9:0/" + strconv.Itoa(1000+id) }

// addDevice creates /sys/bus/rbd/devices/<id> as the kernel would.
func (fk *fakeKernel) addDevice(id int, pool, ns, image, snap string, ro bool) {
	dir := filepath.Join(fk.root, "bus/rbd/devices", strconv.Itoa(id))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fk.t.Fatal(err)
	}
	if snap == "" {
		snap = "-"
	}
	for name, v := range map[string]string{"pool": pool, "pool_ns": ns, "name": image, "current_snap": snap,
		"client_addr": fakeClientAddr(id)} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o444); err != nil {
			fk.t.Fatal(err)
		}
	}
	blk := filepath.Join(fk.root, "block", "rbd"+strconv.Itoa(id))
	_ = os.MkdirAll(blk, 0o755)
	roVal := "0\n"
	if ro {
		roVal = "1\n"
	}
	_ = os.WriteFile(filepath.Join(blk, "ro"), []byte(roVal), 0o444)
	if id >= fk.nextID {
		fk.nextID = id + 1
	}
}

func (fk *fakeKernel) write(path string, data []byte) error {
	attr := filepath.Base(path)
	if gate := fk.gate; gate != nil && attr == "add_single_major" {
		<-gate
	}
	fk.mu.Lock()
	defer fk.mu.Unlock()
	fk.writes = append(fk.writes, attr+": "+string(data))
	switch attr {
	case "add_single_major":
		f := strings.Fields(string(data))
		if len(f) < 4 {
			return syscall.EINVAL
		}
		var ro bool
		var ns string
		for _, o := range strings.Split(f[1], ",") {
			if o == "ro" {
				ro = true
			}
			if v, ok := strings.CutPrefix(o, "_pool_ns="); ok {
				ns = v
			}
		}
		if !fk.images[f[2]+"/"+f[3]] {
			return syscall.ENOENT
		}
		snap := ""
		if len(f) > 4 {
			snap = f[4]
		}
		fk.addDevice(fk.nextID, f[2], ns, f[3], snap, ro)
		return nil
	case "remove_single_major":
		id := string(data)
		if fk.busy[id] {
			return syscall.EBUSY
		}
		dir := filepath.Join(fk.root, "bus/rbd/devices", id)
		if _, err := os.Stat(dir); err != nil {
			return syscall.ENOENT
		}
		_ = os.RemoveAll(filepath.Join(fk.root, "block", "rbd"+id))
		return os.RemoveAll(dir)
	}
	return syscall.EINVAL
}

func (fk *fakeKernel) written() []string {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	return append([]string(nil), fk.writes...)
}

func req(image string) driver.MapRequest {
	return driver.MapRequest{
		ImageSpec: driver.ImageSpec{Pool: "volumes", Image: image},
		Monitors:  []string{"127.0.0.1:6789", "10.0.0.2:6789"},
		User:      "docker",
	}
}

func TestMapWritesTheExactRequest(t *testing.T) {
	fk, k := newFakeKernel(t, "volumes/img")
	m, err := k.Map(context.Background(), req("img"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"add_single_major: 127.0.0.1:6789,10.0.0.2:6789 name=docker,secret=" + testKey + " volumes img"}
	if got := fk.written(); !reflect.DeepEqual(got, want) {
		t.Fatalf("writes = %q\nwant     %q", got, want)
	}
	// The kernel client's address comes with the mapping: a host taking the image over fences it.
	wantM := driver.Mapping{ImageSpec: driver.ImageSpec{Pool: "volumes", Image: "img"}, Device: "/dev/rbd0", Client: fakeClientAddr(0)}
	if m != wantM {
		t.Fatalf("mapping = %+v, want %+v", m, wantM)
	}
}

func TestMapWithOptionsNamespaceSnapshotAndDeadline(t *testing.T) {
	fk, k := newFakeKernel(t, "volumes/img")
	r := req("img")
	r.ReadOnly = true
	r.Namespace = "tenant1"
	r.Snap = "s1"
	r.Options = []string{"queue_depth=128", "lock_on_read"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := k.Map(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	want := "add_single_major: 127.0.0.1:6789,10.0.0.2:6789 name=docker,secret=" + testKey +
		",ro,_pool_ns=tenant1,mount_timeout=30,queue_depth=128,lock_on_read volumes img s1"
	if got := fk.written(); len(got) != 1 || got[0] != want {
		t.Fatalf("writes = %q\nwant     %q", got, want)
	}
	if !m.ReadOnly || m.Snap != "s1" || m.Namespace != "tenant1" || m.Device != "/dev/rbd0" {
		t.Fatalf("mapping = %+v", m)
	}
}

func TestUnmapWritesTheDeviceID(t *testing.T) {
	fk, k := newFakeKernel(t)
	fk.addDevice(0, "volumes", "", "other", "", false)
	fk.addDevice(7, "volumes", "", "img", "", false)
	if err := k.Unmap(context.Background(), driver.ImageSpec{Pool: "volumes", Image: "img"}); err != nil {
		t.Fatal(err)
	}
	if got := fk.written(); !reflect.DeepEqual(got, []string{"remove_single_major: 7"}) {
		t.Fatalf("writes = %q", got)
	}
	if _, err := os.Stat(filepath.Join(fk.root, "bus/rbd/devices/7")); !os.IsNotExist(err) {
		t.Fatal("device 7 still present")
	}
	// Not mapped (any more): success, and nothing written.
	if err := k.Unmap(context.Background(), driver.ImageSpec{Pool: "volumes", Image: "img"}); err != nil {
		t.Fatal(err)
	}
	if got := fk.written(); len(got) != 1 {
		t.Fatalf("second unmap wrote %q", got[1:])
	}
}

func TestUnmapOfOpenDeviceIsInUse(t *testing.T) {
	fk, k := newFakeKernel(t)
	fk.addDevice(2, "volumes", "", "img", "", false)
	fk.busy["2"] = true
	err := k.Unmap(context.Background(), driver.ImageSpec{Pool: "volumes", Image: "img"})
	if !errors.Is(err, driver.ErrInUse) || !strings.Contains(err.Error(), "/dev/rbd2") {
		t.Fatalf("err = %v, want ErrInUse naming /dev/rbd2", err)
	}
}

func TestListFindsDevicesByPoolImageAndSnapshot(t *testing.T) {
	fk, k := newFakeKernel(t)
	fk.addDevice(10, "other", "ns1", "c", "", false)
	fk.addDevice(0, "volumes", "", "a", "", false)
	fk.addDevice(3, "volumes", "", "b", "snap", true)
	// Not a device directory: ignored.
	_ = os.MkdirAll(filepath.Join(fk.root, "bus/rbd/devices/uevent"), 0o755)
	got, err := k.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []driver.Mapping{
		{ImageSpec: driver.ImageSpec{Pool: "volumes", Image: "a"}, Device: "/dev/rbd0", Client: fakeClientAddr(0)},
		{ImageSpec: driver.ImageSpec{Pool: "volumes", Image: "b", Snap: "snap"}, Device: "/dev/rbd3", ReadOnly: true, Client: fakeClientAddr(3)},
		{ImageSpec: driver.ImageSpec{Pool: "other", Namespace: "ns1", Image: "c"}, Device: "/dev/rbd10", Client: fakeClientAddr(10)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("list = %+v\nwant   %+v", got, want)
	}
}

// An image mapped before (e.g. before a plugin restart) is found and not mapped again.
func TestMapReturnsTheExistingMapping(t *testing.T) {
	fk, k := newFakeKernel(t, "volumes/img")
	fk.addDevice(4, "volumes", "", "img", "", false)
	m, err := k.Map(context.Background(), req("img"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Device != "/dev/rbd4" {
		t.Fatalf("device = %s, want /dev/rbd4", m.Device)
	}
	if got := fk.written(); len(got) != 0 {
		t.Fatalf("mapped again: %q", got)
	}
	r := req("img")
	r.ReadOnly = true
	if _, err := k.Map(context.Background(), r); !errors.Is(err, driver.ErrInUse) {
		t.Fatalf("read-only map over a read-write mapping: %v, want ErrInUse", err)
	}
}

func TestFailedMapLeavesNothingAndHidesTheSecret(t *testing.T) {
	fk, k := newFakeKernel(t) // the image does not exist
	_, err := k.Map(context.Background(), req("missing"))
	if !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	if strings.Contains(err.Error(), testKey) {
		t.Fatalf("secret in error: %v", err)
	}
	if l, _ := k.List(context.Background()); len(l) != 0 {
		t.Fatalf("left behind: %+v", l)
	}
	_ = fk
}

// A map that the kernel finishes only after the caller's deadline is taken back.
func TestMapPastDeadlineIsUndone(t *testing.T) {
	fk, k := newFakeKernel(t, "volumes/img")
	fk.gate = make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := k.Map(ctx, req("img"))
	if !errors.Is(err, driver.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Map returned after %v", took)
	}
	close(fk.gate) // the kernel finishes now
	deadline := time.Now().Add(5 * time.Second)
	for {
		w := fk.written()
		if len(w) == 2 && w[1] == "remove_single_major: 0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("late mapping not undone; writes = %q", w)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if l, _ := k.List(context.Background()); len(l) != 0 {
		t.Fatalf("left behind: %+v", l)
	}
}

func TestMapRejectsBadRequestsWithoutWriting(t *testing.T) {
	fk, k := newFakeKernel(t, "volumes/img")
	bad := map[string]func(*driver.MapRequest){
		"space in image":    func(r *driver.MapRequest) { r.Image = "a b" },
		"comma in pool":     func(r *driver.MapRequest) { r.Pool = "a,b" },
		"no monitors":       func(r *driver.MapRequest) { r.Monitors = nil },
		"no user":           func(r *driver.MapRequest) { r.User = "" },
		"secret in options": func(r *driver.MapRequest) { r.Options = []string{"secret=x"} },
		"newline in snap":   func(r *driver.MapRequest) { r.Snap = "s\n1" },
	}
	for name, mut := range bad {
		r := req("img")
		mut(&r)
		if _, err := k.Map(context.Background(), r); !errors.Is(err, driver.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if got := fk.written(); len(got) != 0 {
		t.Fatalf("wrote %q", got)
	}
}

func TestKeyringSearch(t *testing.T) {
	dir := t.TempDir()
	_ = os.WriteFile(filepath.Join(dir, "ceph.keyring"), []byte("[client.other]\nkey = K2\n"), 0o600)
	k := KeyringFile{Dir: dir}
	if key, err := k.Key("other"); err != nil || key != "K2" {
		t.Fatalf("key = %q, %v", key, err)
	}
	if _, err := k.Key("docker"); err == nil || !strings.Contains(err.Error(), "client.docker") {
		t.Fatalf("missing user: %v", err)
	}
	explicit := filepath.Join(dir, "x.keyring")
	_ = os.WriteFile(explicit, []byte("[client.docker]\n  key = K3\n"), 0o600)
	if key, err := (KeyringFile{Path: explicit}).Key("docker"); err != nil || key != "K3" {
		t.Fatalf("explicit keyring: %q, %v", key, err)
	}
}

func TestAvailable(t *testing.T) {
	_, k := newFakeKernel(t)
	if !Available(k.SysfsRoot) {
		t.Fatal("fake tree with add_single_major: want available")
	}
	if Available(t.TempDir()) {
		t.Fatal("empty tree: want unavailable")
	}
}

// fakeKeyring plays the kernel keyring: it records the keys added and whether they were removed,
// and can refuse (as a seccomp profile does).
type fakeKeyring struct {
	mu     sync.Mutex
	added  []string // "<user> <secret>"
	live   int      // keys added and not yet removed
	refuse error
}

func (f *fakeKeyring) add(user, secret string) (string, func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refuse != nil {
		return "", nil, f.refuse
	}
	f.added = append(f.added, user+" "+secret)
	f.live++
	return "client." + user, func() { f.mu.Lock(); f.live--; f.mu.Unlock() }, nil
}

// With a kernel keyring, the map request names the key (key=) and never carries the secret,
// which the kernel would keep readable in /sys/bus/rbd/devices/<id>/config_info; the key is
// removed once the map is done.
func TestMapPassesTheSecretInTheKernelKeyring(t *testing.T) {
	fk, k := newFakeKernel(t, "volumes/img")
	kr := &fakeKeyring{}
	k.AddKey = kr.add
	if _, err := k.Map(context.Background(), req("img")); err != nil {
		t.Fatal(err)
	}
	want := []string{"add_single_major: 127.0.0.1:6789,10.0.0.2:6789 name=docker,key=client.docker volumes img"}
	if got := fk.written(); !reflect.DeepEqual(got, want) {
		t.Fatalf("writes = %q\nwant     %q", got, want)
	}
	if len(kr.added) != 1 || kr.added[0] != "docker "+testKey || kr.live != 0 {
		t.Fatalf("keyring: added %q, %d still there; want the user's key added once and removed", kr.added, kr.live)
	}
	// A failed map removes the key too.
	if _, err := k.Map(context.Background(), req("missing")); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("err = %v", err)
	}
	if kr.live != 0 {
		t.Fatalf("%d keys left in the keyring after a failed map", kr.live)
	}
}

// Without a usable kernel keyring (add_key forbidden), the secret goes in the request, and the
// mapper says so once (a warning that names the cause, never the secret).
func TestMapFallsBackToSecretWhenTheKeyringRefuses(t *testing.T) {
	fk, k := newFakeKernel(t, "volumes/img", "volumes/img2")
	k.AddKey = (&fakeKeyring{refuse: syscall.EPERM}).add
	logger, hook := logtest.NewNullLogger()
	k.Log = logger
	if _, err := k.Map(context.Background(), req("img")); err != nil {
		t.Fatal(err)
	}
	want := []string{"add_single_major: 127.0.0.1:6789,10.0.0.2:6789 name=docker,secret=" + testKey + " volumes img"}
	if got := fk.written(); !reflect.DeepEqual(got, want) {
		t.Fatalf("writes = %q\nwant     %q", got, want)
	}
	if _, err := k.Map(context.Background(), req("img2")); err != nil {
		t.Fatal(err)
	}
	var warnings []string
	for _, e := range hook.AllEntries() {
		line, _ := e.String()
		if strings.Contains(line, testKey) {
			t.Fatalf("the log holds the secret: %s", line)
		}
		if e.Level == logrus.WarnLevel {
			warnings = append(warnings, line)
		}
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "secret=") || !strings.Contains(warnings[0], "operation not permitted") {
		t.Fatalf("warnings after two maps = %q; want one, naming secret= and the keyring's refusal", warnings)
	}
}

func TestThreadKeyRejectsAKeyThatIsNotBase64(t *testing.T) {
	if _, _, err := ThreadKey("docker", "not base64!"); err == nil || strings.Contains(err.Error(), "not base64!") {
		t.Fatalf("err = %v; want an error that does not repeat the key", err)
	}
}

// A kernel that cannot find the key (ENOKEY) gets the request again with the secret in it.
func TestMapRetriesWithTheSecretWhenTheKernelFindsNoKey(t *testing.T) {
	fk, k := newFakeKernel(t, "volumes/img")
	kr := &fakeKeyring{}
	k.AddKey = kr.add
	logger, hook := logtest.NewNullLogger()
	k.Log = logger
	k.WriteFile = func(path string, data []byte) error {
		if strings.Contains(string(data), "key=client.") {
			return syscall.ENOKEY
		}
		return fk.write(path, data)
	}
	if _, err := k.Map(context.Background(), req("img")); err != nil {
		t.Fatal(err)
	}
	if got := fk.written(); len(got) != 1 || !strings.Contains(got[0], "secret="+testKey) || kr.live != 0 {
		t.Fatalf("writes = %q, %d keys left; want one map with the secret and no key left", got, kr.live)
	}
	if e := hook.LastEntry(); e == nil || e.Level != logrus.WarnLevel || !strings.Contains(e.Message, "secret=") {
		t.Fatalf("no warning that the secret went in the map request: %+v", e)
	}
}

// Load runs modprobe rbd only when the driver is missing, and checks the driver appeared.
func TestLoadRunsModprobeWhenTheDriverIsMissing(t *testing.T) {
	dir := t.TempDir()
	sys := filepath.Join(dir, "sys")
	calls := filepath.Join(dir, "calls")
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\necho \"$@\" >> "+calls+"\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	loads := script("modprobe-ok", "mkdir -p "+sys+"/bus/rbd && touch "+sys+"/bus/rbd/add_single_major\n")
	fails := script("modprobe-fails", "echo 'modprobe: FATAL: Module rbd not found in directory /lib/modules/6.1.0' >&2; exit 1\n")
	noop := script("modprobe-noop", "exit 0\n")
	ctx := context.Background()

	err := Load(ctx, sys, fails)
	if err == nil || !strings.Contains(err.Error(), "Module rbd not found") {
		t.Errorf("Load with a failing modprobe: %v, want its message", err)
	}
	err = Load(ctx, sys, noop)
	if err == nil || !strings.Contains(err.Error(), "still missing") {
		t.Errorf("Load with a modprobe that loads nothing: %v, want an error", err)
	}
	if err := Load(ctx, sys, loads); err != nil || !Available(sys) {
		t.Fatalf("Load: %v (available %v)", err, Available(sys))
	}
	if err := Load(ctx, sys, fails); err != nil {
		t.Errorf("Load with the driver loaded: %v, want nil without running modprobe", err)
	}
	b, _ := os.ReadFile(calls)
	if got := strings.Count(string(b), "rbd\n"); got != 3 {
		t.Errorf("modprobe ran %d times with rbd, want 3:\n%s", got, b)
	}
}

// A mapping that lands after the caller gave up and cannot be taken back is logged, naming
// the image; the undo is bounded by the cleanup deadline the context carries.
func TestMapPastDeadlineUndoFailureIsLogged(t *testing.T) {
	fk, k := newFakeKernel(t, "volumes/img")
	log, hook := logtest.NewNullLogger()
	k.Log = log
	fk.gate = make(chan struct{})
	fk.busy["0"] = true // the device the late map makes is held open
	ctx, cancel := context.WithTimeout(undo.WithCleanup(context.Background(), 300*time.Millisecond), 50*time.Millisecond)
	defer cancel()
	if _, err := k.Map(ctx, req("img")); !errors.Is(err, driver.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	close(fk.gate)
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, e := range hook.AllEntries() {
			if e.Data["image"] == "volumes/img" {
				if e.Level != logrus.WarnLevel || !strings.Contains(e.Message, "by hand") || e.Data[logrus.ErrorKey] == nil {
					t.Fatalf("log %+v", e)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the failed undo was not logged; writes = %q", fk.written())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
