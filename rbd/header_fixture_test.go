package rbd

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/ceph/go-ceph/rados"
	librbd "github.com/ceph/go-ceph/rbd"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// The fixtures in testdata/header are what a Pacific OSD answered readHeader's calls for images
// made with known settings (TestRecordHeaderFixtures, an integration test, records them); want
// is what the recorder made each image with and what librbd said about it after an open.

// hexBytes is a byte string kept as hex in a fixture.
type hexBytes []byte

func (b hexBytes) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(b)), nil }

func (b *hexBytes) UnmarshalText(t []byte) error {
	v, err := hex.DecodeString(string(t))
	*b = v
	return err
}

// recordedCall is one cls call of a recording: its input, and the OSD's reply and return value.
type recordedCall struct {
	Cls, Method string
	In, Out     hexBytes
	Rval        int
	After       string `json:",omitempty"` // a further metadata page: the key it was asked after
}

type fixtureParent struct {
	PoolID    int64
	Namespace string
	ImageID   string
	SnapID    uint64
	Overlap   uint64
}

type fixtureWant struct {
	Size                    uint64
	Order                   int
	Features                uint64
	ObjectPrefix            string
	DataPoolID              int64
	StripeUnit, StripeCount uint64
	Parent                  *fixtureParent
	Meta                    map[string]string
	Lockers                 []Locker
}

type headerFixture struct {
	Image, ImageID string
	Calls          []recordedCall
	MoreMeta       *recordedCall `json:",omitempty"`
	Want           fixtureWant
}

var fixtureNames = []string{"plain", "striped", "clone", "flattened"}

func loadFixture(t *testing.T, name string) headerFixture {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "header", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var fx headerFixture
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return fx
}

// calls are the fixture's replies as decode gets them (fresh copies: a test may cut them).
func (fx headerFixture) calls() []clsCall {
	out := make([]clsCall, 0, len(fx.Calls))
	for _, c := range fx.Calls {
		out = append(out, clsCall{cls: c.Cls, method: c.Method, in: slices.Clone(c.In), out: slices.Clone(c.Out), rval: c.Rval})
	}
	return out
}

func decodeFixture(t *testing.T, name string, fx headerFixture) header {
	t.Helper()
	var h header
	if err := h.decode(fx.calls()); err != nil {
		t.Fatalf("%s: decode: %v", name, err)
	}
	return h
}

// The recording was made with readHeader's calls: the same methods, in the same order, with the
// same inputs (what cephEnc built was what the OSD accepted).
func TestHeaderFixturesAreReadHeadersCalls(t *testing.T) {
	for _, name := range fixtureNames {
		fx := loadFixture(t, name)
		want := headerCalls()
		if len(fx.Calls) != len(want) {
			t.Fatalf("%s: %d calls recorded, readHeader makes %d: record the fixtures again", name, len(fx.Calls), len(want))
		}
		for i, c := range want {
			r := fx.Calls[i]
			if r.Cls != c.cls || r.Method != c.method || !slices.Equal(r.In, c.in) {
				t.Errorf("%s: call %d recorded as %s.%s(%x), readHeader's is %s.%s(%x)", name, i, r.Cls, r.Method, []byte(r.In), c.cls, c.method, c.in)
			}
		}
		if m := fx.MoreMeta; m != nil {
			if c := metaListCall(m.After); m.Cls != c.cls || m.Method != c.method || !slices.Equal(m.In, c.in) {
				t.Errorf("%s: further metadata page recorded as %s.%s(%x), readHeader asks %s.%s(%x)", name, m.Cls, m.Method, []byte(m.In), c.cls, c.method, c.in)
			}
		}
	}
}

func TestHeaderDecodeFixtures(t *testing.T) {
	c := newCluster(Config{}, &rados.Conn{}) // not connected: infoOf cannot name a data pool
	for _, name := range fixtureNames {
		t.Run(name, func(t *testing.T) {
			fx := loadFixture(t, name)
			w := fx.Want
			h := decodeFixture(t, name, fx)
			if h.size != w.Size || int(h.order) != w.Order || h.features != w.Features || h.objectPrefix != w.ObjectPrefix {
				t.Errorf("size %d order %d features %#x prefix %q; want %d, %d, %#x, %q",
					h.size, h.order, h.features, h.objectPrefix, w.Size, w.Order, w.Features, w.ObjectPrefix)
			}
			if h.dataPoolID != w.DataPoolID || h.stripeUnit != w.StripeUnit || h.stripeCount != w.StripeCount {
				t.Errorf("data pool %d, stripe %d x %d; want %d, %d x %d", h.dataPoolID, h.stripeUnit, h.stripeCount, w.DataPoolID, w.StripeUnit, w.StripeCount)
			}
			switch p := w.Parent; {
			case p == nil && h.parent != nil:
				t.Errorf("parent %+v, want none", *h.parent)
			case p != nil && h.parent == nil:
				t.Errorf("no parent, want %+v", *p)
			case p != nil:
				if got := (parentSpec{poolID: p.PoolID, namespace: p.Namespace, imageID: p.ImageID, snapID: p.SnapID}); *h.parent != got {
					t.Errorf("parent %+v, want %+v", *h.parent, got)
				}
				// parent_overlap_get answers an optional overlap: present, and the clone's size.
				d := &cephDec{b: fx.Calls[6].Out}
				if has, overlap := d.u8(), d.u64(); d.err != nil || has != 1 || overlap != p.Overlap {
					t.Errorf("overlap %d (present %d, %v), want %d", overlap, has, d.err, p.Overlap)
				}
			}
			if name == "flattened" { // parent_get still names the snapshots' parent: the overlap clears it
				var head header
				if err := head.decode(fx.calls()[:6]); err != nil || head.parent == nil {
					t.Errorf("flattened: parent_get alone gives parent %v (%v); want the snapshots' parent", head.parent, err)
				}
			}
			meta := h.meta
			if m := fx.MoreMeta; m != nil {
				if !h.metaMore || len(h.meta) != metaPage {
					t.Fatalf("first page: %d keys, more %v; want %d and more", len(h.meta), h.metaMore, metaPage)
				}
				last := ""
				for k := range h.meta {
					last = max(last, k)
				}
				if last != m.After {
					t.Errorf("the next page is asked after %q, the first page ends at %q", m.After, last)
				}
				page, err := decodeMeta(m.Out)
				if err != nil {
					t.Fatal(err)
				}
				meta = maps.Clone(h.meta)
				maps.Copy(meta, page)
			} else if h.metaMore {
				t.Errorf("%d keys and more, want %d", len(h.meta), len(w.Meta))
			}
			if !reflect.DeepEqual(meta, w.Meta) {
				t.Errorf("metadata %v, want %v", meta, w.Meta)
			}
			if len(h.lockers) != len(w.Lockers) || (len(w.Lockers) > 0 && !reflect.DeepEqual(h.lockers, w.Lockers)) {
				t.Errorf("lockers %+v, want %+v", h.lockers, w.Lockers)
			}

			spec := Spec{Pool: "p", Image: fx.Image}
			info := c.infoOf(spec, fx.ImageID, h)
			fs := librbd.FeatureSet(w.Features)
			names := fs.Names()
			sort.Strings(names)
			wantPool := ""
			if w.DataPoolID >= 0 {
				wantPool = "(pool id " + strconv.FormatInt(w.DataPoolID, 10) + ")"
			}
			want := ImageInfo{Spec: spec, ID: fx.ImageID, Size: w.Size, Features: names, DataPool: wantPool,
				DataPrefix: w.ObjectPrefix, ObjectSize: 1 << w.Order, StripeUnit: w.StripeUnit, StripeCount: w.StripeCount}
			if !reflect.DeepEqual(info, want) {
				t.Errorf("infoOf = %+v\nwant %+v", info, want)
			}
		})
	}
}

// A reply cut short is an error naming the call, never a panic and never a different header:
// a cut that leaves all decode reads (get_features' incompatible features and the overlap's
// value are not read) decodes to the same header.
func TestHeaderDecodeTruncated(t *testing.T) {
	for _, name := range fixtureNames {
		fx := loadFixture(t, name)
		full := decodeFixture(t, name, fx)
		for i, rc := range fx.Calls {
			if len(rc.Out) == 0 {
				continue
			}
			errs := 0
			for n := 0; n < len(rc.Out); n++ {
				calls := fx.calls()
				calls[i].out = calls[i].out[:n]
				var h header
				err := h.decode(calls)
				switch {
				case err != nil:
					errs++
					if !strings.Contains(err.Error(), rc.Cls+"."+rc.Method) {
						t.Errorf("%s: %s cut to %d bytes: %v does not name the call", name, rc.Method, n, err)
					}
				case !reflect.DeepEqual(h, full):
					t.Errorf("%s: %s cut to %d bytes decoded without error to %+v, the whole reply to %+v", name, rc.Method, n, h, full)
				}
			}
			if errs == 0 {
				t.Errorf("%s: no cut of %s's %d bytes was an error", name, rc.Method, len(rc.Out))
			}
		}
		if m := fx.MoreMeta; m != nil {
			for n := 0; n < len(m.Out); n++ {
				if _, err := decodeMeta(m.Out[:n]); err == nil {
					t.Errorf("%s: metadata page cut to %d of %d bytes decoded", name, n, len(m.Out))
				}
			}
		}
	}
}

// withStructLen returns b with the 32-bit length of the versioned struct whose header starts at
// off changed by delta.
func withStructLen(t *testing.T, b []byte, off int, delta int) []byte {
	t.Helper()
	d := &cephDec{b: b, off: off}
	end := d.start()
	if d.err != nil {
		t.Fatalf("no struct at %d: %v", off, d.err)
	}
	out := slices.Clone(b)
	n := uint32(end - off - 6 + delta)
	copy(out[off+2:], cephEnc(nil).u64(uint64(n))[:4])
	return out
}

// A struct whose length overruns the reply, or whose fields overrun its length, is an error.
func TestHeaderStructLen(t *testing.T) {
	fx := loadFixture(t, "plain")
	parentOut, lockOut := fx.Calls[5].Out, fx.Calls[8].Out
	for _, c := range []struct {
		what string
		call int
		out  []byte
		want string
	}{
		{"parent longer than the reply", 5, withStructLen(t, parentOut, 0, 1), "struct at offset"},
		{"parent fields beyond its length", 5, withStructLen(t, parentOut, 0, -1), "overran"},
		{"lock info longer than the reply", 8, withStructLen(t, lockOut, 0, 1), "struct at offset"},
		{"lock info fields beyond its length", 8, withStructLen(t, lockOut, 0, -1), "overran"},
		// the first locker's id struct: after the lock info header (6) and the locker count (4)
		{"locker id fields beyond its length", 8, withStructLen(t, lockOut, 10, -1), "overran"},
		{"locker id longer than the reply", 8, withStructLen(t, lockOut, 10, len(lockOut)), "struct at offset"},
	} {
		calls := fx.calls()
		calls[c.call].out = c.out
		var h header
		if err := h.decode(calls); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.what, err, c.want)
		}
	}
	// A longer struct than its fields (a newer encoder's fields) is skipped: the same lockers.
	longer := withStructLen(t, append(slices.Clone(lockOut), 0xee, 0xee), 0, 2)
	got, err := decodeLockInfo(longer)
	if err != nil || !reflect.DeepEqual(got, fx.Want.Lockers) {
		t.Errorf("lock info with 2 unknown trailing bytes: %+v, %v; want %+v", got, err, fx.Want.Lockers)
	}
}

// decode's error paths: a failed call, a missing striping reply where striping-v2 says there is one.
func TestHeaderDecodeFailedCalls(t *testing.T) {
	fx := loadFixture(t, "plain")
	for i := range fx.Calls {
		calls := fx.calls()
		calls[i].out, calls[i].rval = nil, -int(syscall.ENOENT)
		var h header
		err := h.decode(calls)
		var ec errorCoder
		if i == 4 { // no striping reply: the default layout, unless striping-v2 is on
			if err != nil || h.stripeUnit != 1<<h.order || h.stripeCount != 1 {
				t.Errorf("no striping reply: %v, stripe %d x %d; want the object size x 1", err, h.stripeUnit, h.stripeCount)
			}
			continue
		}
		if !errors.As(err, &ec) || ec.ErrorCode() != -int(syscall.ENOENT) || !errors.Is(kindOf(err), driver.ErrNotFound) {
			t.Errorf("call %d failed: decode says %v, want its ENOENT", i, err)
		}
	}
	st := loadFixture(t, "striped")
	calls := st.calls()
	calls[4].out, calls[4].rval = nil, -int(syscall.ENOEXEC)
	var h header
	if err := h.decode(calls); err == nil || !strings.Contains(err.Error(), "get_stripe_unit_count") {
		t.Errorf("striping-v2 without its striping: %v, want an error", err)
	}
	if e := radosErrno(-int(syscall.ENOEXEC)); !strings.Contains(e.Error(), "ret=-8") || !strings.Contains(e.Error(), syscall.ENOEXEC.Error()) {
		t.Errorf("radosErrno: %q", e.Error())
	}
}

// The lock type after the lockers says whether they hold the host lock shared (read-only
// claims): the recorded exclusive lock, and the same reply with the type of a shared one.
func TestDecodeLockInfoShared(t *testing.T) {
	fx := loadFixture(t, "plain")
	lockOut := fx.Calls[8].Out
	// The reply ends with the lock type (u8) and the tag ("": a u32 length of 0).
	typeAt := len(lockOut) - 5
	if lockOut[typeAt] != 1 || !slices.Equal(lockOut[typeAt+1:], []byte{0, 0, 0, 0}) {
		t.Fatalf("recorded lock info does not end with an exclusive type and an empty tag: % x", lockOut[typeAt:])
	}
	got, err := decodeLockInfo(lockOut)
	if err != nil || len(got) != 1 || got[0].Shared {
		t.Fatalf("exclusive: %+v, %v", got, err)
	}
	shared := slices.Clone(lockOut)
	shared[typeAt] = clsLockShared
	got, err = decodeLockInfo(shared)
	want := slices.Clone(fx.Want.Lockers)
	want[0].Shared = true
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("shared: %+v, %v; want %+v", got, err, want)
	}
}
