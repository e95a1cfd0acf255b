package rbd

// #include <stdlib.h>
// #include "cxxops.h"
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"unsafe"

	"github.com/ceph/go-ceph/rados"
	"github.com/ceph/go-ceph/rbd"
)

// Listing a pool's images. A pool's images (format 2, the only format Ceph has made since Jewel)
// are the keys "name_<image>" of its rbd_directory object's omap, in name order. librbd's list
// reads them in pages of 1,024 too (the OSD answers at most osd_max_omap_entries_per_request keys,
// 1,024 by default, per request); listDirectory asks for the keys in one buffer per page, where
// the C API hands them over one call per key, and answers the names only (no per-image request).
// A pool of 100,000 images is 98 requests.

// dirPage is how many names one request asks for (the OSD may answer fewer).
var dirPage uint64 = 8192

// errFormat1 says the pool holds format 1 images (their names are in rbd_directory's data, in
// an encoding only librbd reads): the caller asks librbd instead.
var errFormat1 = errors.New("the pool has format 1 images")

// listDirectory returns the names of the pool's images, sorted. Its first request also reads the
// size of the directory's data, which only format 1 images fill: then errFormat1.
func listDirectory(io *rados.IOContext) ([]string, error) {
	var names []string
	after := "name_"
	for first := true; ; first = false {
		page, more, size, err := omapKeys(io, "rbd_directory", after, "name_", dirPage, first)
		if errors.Is(err, rados.ErrNotFound) { // a pool no image was ever made in
			return names, nil
		}
		if err != nil {
			return nil, fmt.Errorf("rbd_directory: %w", err)
		}
		if size > 0 {
			return nil, errFormat1
		}
		for _, k := range page {
			names = append(names, strings.TrimPrefix(k, "name_"))
		}
		if !more || len(page) == 0 {
			return names, nil
		}
		after = page[len(page)-1]
	}
}

// omapKeys reads a page of oid's omap keys that start with prefix and sort after after (see
// cdp_omap_keys), and with withSize the size of the object's data.
func omapKeys(io *rados.IOContext, oid, after, prefix string, max uint64, withSize bool) (keys []string, more bool, size uint64, err error) {
	coid, cafter, cprefix := C.CString(oid), C.CString(after), C.CString(prefix)
	defer C.free(unsafe.Pointer(coid))
	defer C.free(unsafe.Pointer(cafter))
	defer C.free(unsafe.Pointer(cprefix))
	want := C.int(0)
	if withSize {
		want = 1
	}
	var csize C.uint64_t
	var buf *C.char
	var blen C.size_t
	var n, cmore C.int
	ret := C.cdp_omap_keys(C.rados_ioctx_t(io.Pointer()), coid, cafter, cprefix, C.uint64_t(max), want, &csize, &buf, &blen, &n, &cmore)
	runtime.KeepAlive(io)
	defer C.free(unsafe.Pointer(buf))
	if ret < 0 {
		return nil, false, 0, radosErrno(ret)
	}
	d := &cephDec{b: C.GoBytes(unsafe.Pointer(buf), C.int(blen))}
	keys = make([]string, 0, int(n))
	for i := 0; i < int(n); i++ {
		keys = append(keys, d.str())
	}
	if d.err != nil {
		return nil, false, 0, d.err
	}
	return keys, cmore != 0, uint64(csize), nil
}

// listImages is listDirectory, or librbd's list for a pool with format 1 images.
func listImages(io *rados.IOContext) ([]string, error) {
	names, err := listDirectory(io)
	if errors.Is(err, errFormat1) {
		return rbd.GetImageNames(io)
	}
	return names, err
}
