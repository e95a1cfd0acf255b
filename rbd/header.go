package rbd

// #cgo CXXFLAGS: -std=c++17 -Wall
// #cgo LDFLAGS: -lrados
// #include <stdlib.h>
// #include "cxxops.h"
import "C"

import (
	"fmt"
	"runtime"
	"syscall"
	"unsafe"

	"github.com/ceph/go-ceph/rados"
	"github.com/ceph/go-ceph/rbd"
)

// Reading an image's header without opening the image. An open (librbd) reads the header in
// several requests, registers nothing for a read-only open but still costs about ten OSD requests
// and, in librbd, a copy of the client's whole configuration (several ms of CPU). What Get and
// Mount ask about an image all lives on its header object, rbd_header.<id>, and the rbd and lock
// object classes answer it on the OSD: readHeader asks every question in one read request.

// cephNoSnap is CEPH_NOSNAP, the snapshot id of an image's head.
const cephNoSnap = ^uint64(0) - 1

// metaPage is how many metadata keys one metadata_list call returns; an image with more is read
// on in further requests (the plugin keeps five).
const metaPage = 128

// header is what one read of an image header tells (see readHeader for where each comes from).
type header struct {
	size                    uint64
	order                   uint8
	features                uint64
	objectPrefix            string
	dataPoolID              int64 // -1: the data lives in the image's own pool
	stripeUnit, stripeCount uint64
	parent                  *parentSpec // nil: the head has no parent
	meta                    map[string]string
	metaMore                bool // metaPage keys came back: there may be more
	lockers                 []Locker
	watchers                []Watcher // nil unless asked for
}

// parentSpec is a clone's parent snapshot by ids, as the header holds it.
type parentSpec struct {
	poolID    int64
	namespace string
	imageID   string
	snapID    uint64
}

// radosErrno is a negative errno from librados (it maps to a driver sentinel like librados' own
// errors: see kindOf).
type radosErrno int

func (e radosErrno) Error() string {
	return fmt.Sprintf("rados: ret=%d, %s", int(e), syscall.Errno(-e).Error())
}

func (e radosErrno) ErrorCode() int { return int(e) }

// clsCall is one cls method call of a compound read.
type clsCall struct {
	cls, method string
	in          []byte
	out         []byte
	rval        int
}

// compoundRead runs calls (each may fail alone: see rval) on object oid, and lists its watchers
// if asked, in one read request that first asserts the object exists (ErrNotFound else).
func compoundRead(io *rados.IOContext, oid string, calls []clsCall, watchers bool) ([]Watcher, error) {
	if len(calls) == 0 && !watchers {
		return nil, fmt.Errorf("compound read of %s: nothing asked", oid)
	}
	// At least one element, so that &cs[:1][0] is valid when only the watchers are asked for.
	n := max(len(calls), 1)
	cs := (*[1 << 16]C.cdp_exec)(C.calloc(C.size_t(n), C.size_t(unsafe.Sizeof(C.cdp_exec{}))))[:len(calls):n]
	var strs []unsafe.Pointer
	defer func() {
		for _, p := range strs {
			C.free(p)
		}
		for i := range cs {
			C.free(unsafe.Pointer(cs[i].out))
		}
		C.free(unsafe.Pointer(&cs[:1][0]))
	}()
	cstr := func(s string) *C.char {
		p := C.CString(s)
		strs = append(strs, unsafe.Pointer(p))
		return p
	}
	for i, c := range calls {
		cs[i].cls = cstr(c.cls)
		cs[i].method = cstr(c.method)
		if len(c.in) > 0 {
			p := C.CBytes(c.in)
			strs = append(strs, p)
			cs[i].in = (*C.char)(p)
			cs[i].in_len = C.size_t(len(c.in))
		}
	}
	coid := cstr(oid)
	want := C.int(0)
	if watchers {
		want = 1
	}
	var ws *C.cdp_watcher
	var nws, wrval C.int
	ret := C.cdp_read_header(C.rados_ioctx_t(io.Pointer()), coid, &cs[:1][0], C.int(len(calls)), want, &ws, &nws, &wrval)
	runtime.KeepAlive(io)
	defer C.free(unsafe.Pointer(ws))
	if ret < 0 {
		return nil, radosErrno(ret)
	}
	for i := range calls {
		calls[i].rval = int(cs[i].rval)
		if cs[i].out_len > 0 {
			calls[i].out = C.GoBytes(unsafe.Pointer(cs[i].out), C.int(cs[i].out_len))
		}
	}
	if !watchers {
		return nil, nil
	}
	if wrval < 0 {
		return nil, fmt.Errorf("list watchers of %s: %w", oid, radosErrno(wrval))
	}
	out := []Watcher{}
	if nws > 0 {
		for _, w := range (*[1 << 16]C.cdp_watcher)(unsafe.Pointer(ws))[:nws:nws] {
			out = append(out, Watcher{Addr: normalizeAddr(C.GoString(&w.addr[0])), ID: int64(w.id), Cookie: uint64(w.cookie)})
		}
	}
	return out, nil
}

// readHeader reads everything Describe tells about image id from its header object, in one OSD
// request (a second only for an image with more than metaPage metadata keys):
//   - size and object size: rbd.get_size of the head
//   - features: rbd.get_features of the head
//   - the data objects' name prefix: rbd.get_object_prefix
//   - the data pool: rbd.get_data_pool (-1: none)
//   - the striping: rbd.get_stripe_unit_count (images without striping-v2 have the defaults)
//   - the parent: rbd.parent_get, and rbd.parent_overlap_get of the head, which says whether
//     the head still has it (after a flatten only the snapshots keep a parent)
//   - the metadata: rbd.metadata_list
//   - the host locks: lock.get_info of HostLockName (holders, cookies, addresses)
//   - the watchers (if watchers): the OSD's list of the object's watches
//
// All are read at one point in time: the OSD answers the request from one state of the object.
func readHeader(io *rados.IOContext, id string, watchers bool) (header, error) {
	oid := "rbd_header." + id
	calls := headerCalls()
	ws, err := compoundRead(io, oid, calls, watchers)
	if err != nil {
		return header{}, err
	}
	h := header{watchers: ws}
	if err := h.decode(calls); err != nil {
		return h, fmt.Errorf("header %s: %w", oid, err)
	}
	for h.metaMore { // rare: more metadata than one page
		last := ""
		for k := range h.meta {
			last = max(last, k)
		}
		more := []clsCall{metaListCall(last)}
		if _, err := compoundRead(io, oid, more, false); err != nil {
			return h, err
		}
		if more[0].rval < 0 {
			return h, fmt.Errorf("header %s: metadata_list: %w", oid, radosErrno(more[0].rval))
		}
		page, err := decodeMeta(more[0].out)
		if err != nil {
			return h, fmt.Errorf("header %s: metadata_list: %w", oid, err)
		}
		for k, v := range page {
			h.meta[k] = v
		}
		h.metaMore = len(page) >= metaPage
	}
	return h, nil
}

// headerCalls are readHeader's calls, in the order decode reads their replies.
func headerCalls() []clsCall {
	noSnap := cephEnc(nil).u64(cephNoSnap)
	return []clsCall{
		{cls: "rbd", method: "get_size", in: noSnap},
		{cls: "rbd", method: "get_features", in: cephEnc(nil).u64(cephNoSnap).u8(1)}, // read-only: no check of incompatible features
		{cls: "rbd", method: "get_object_prefix"},
		{cls: "rbd", method: "get_data_pool"},
		{cls: "rbd", method: "get_stripe_unit_count"},
		{cls: "rbd", method: "parent_get"},
		{cls: "rbd", method: "parent_overlap_get", in: noSnap},
		metaListCall(""),
		{cls: "lock", method: "get_info", in: versioned(cephEnc(nil).str(HostLockName))},
	}
}

// metaListCall asks for a page of metadata: the keys after after.
func metaListCall(after string) clsCall {
	return clsCall{cls: "rbd", method: "metadata_list", in: cephEnc(nil).str(after).u64(metaPage)}
}

// decode reads the replies of readHeader's calls, in their order.
func (h *header) decode(calls []clsCall) error {
	for i, c := range calls {
		switch {
		case c.rval >= 0:
		case c.method == "get_stripe_unit_count": // -ENOEXEC without striping-v2: decided below
		default:
			return fmt.Errorf("%s.%s: %w", c.cls, c.method, radosErrno(c.rval))
		}
		d := &cephDec{b: c.out}
		switch i {
		case 0:
			h.order = d.u8()
			h.size = d.u64()
		case 1:
			h.features = d.u64()
		case 2:
			h.objectPrefix = d.str()
		case 3:
			h.dataPoolID = int64(d.u64())
		case 4:
			if c.rval < 0 {
				if h.features&rbd.FeatureStripingV2 != 0 {
					return fmt.Errorf("%s.%s: %w", c.cls, c.method, radosErrno(c.rval))
				}
				h.stripeUnit, h.stripeCount = 1<<h.order, 1
				continue
			}
			h.stripeUnit = d.u64()
			h.stripeCount = d.u64()
		case 5:
			at := d.start()
			p := parentSpec{poolID: int64(d.u64()), namespace: d.str(), imageID: d.str(), snapID: d.u64()}
			d.end(at)
			if p.poolID >= 0 && p.imageID != "" {
				h.parent = &p
			}
		case 6:
			if d.u8() == 0 { // no overlap: the head has no parent (flattened, or never cloned)
				h.parent = nil
			}
		case 7:
			var err error
			if h.meta, err = decodeMeta(c.out); err != nil {
				return fmt.Errorf("%s.%s: %w", c.cls, c.method, err)
			}
			h.metaMore = len(h.meta) >= metaPage
		case 8:
			var err error
			if h.lockers, err = decodeLockInfo(c.out); err != nil {
				return fmt.Errorf("%s.%s: %w", c.cls, c.method, err)
			}
		}
		if d.err != nil {
			return fmt.Errorf("%s.%s: %w", c.cls, c.method, d.err)
		}
	}
	return nil
}

// decodeMeta reads metadata_list's map of key to value.
func decodeMeta(b []byte) (map[string]string, error) {
	d := &cephDec{b: b}
	n := d.u32()
	out := make(map[string]string, min(n, metaPage))
	for i := uint32(0); i < n && d.err == nil; i++ {
		k := d.str()
		out[k] = string(d.bytes())
	}
	return out, d.err
}

// decodeLockInfo reads lock.get_info's reply: the lockers (each its entity name and cookie, then
// its expiry, address and description), the lock type and its tag.
func decodeLockInfo(b []byte) ([]Locker, error) {
	d := &cephDec{b: b}
	at := d.start()
	n := d.u32()
	var out []Locker
	for i := uint32(0); i < n && d.err == nil; i++ {
		idAt := d.start()
		l := Locker{Client: d.entityName(), Cookie: d.str()}
		d.end(idAt)
		infoAt := d.start()
		d.u32() // expiry: seconds
		d.u32() // and nanoseconds
		l.Addr = d.entityAddr()
		d.str() // description
		d.end(infoAt)
		out = append(out, l)
	}
	if d.u8() == clsLockShared {
		for i := range out {
			out[i].Shared = true
		}
	}
	d.str() // tag
	d.end(at)
	return out, d.err
}

// clsLockShared is cls_lock's ClsLockType of a shared lock (exclusive is 1).
const clsLockShared = 2
