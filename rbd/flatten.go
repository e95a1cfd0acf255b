package rbd

/*
#cgo LDFLAGS: -lrbd -lrados
#include <errno.h>
#include <stdlib.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

// cdp_flatten_progress is librbd's progress callback of a flatten: a non-zero return makes
// librbd stop at its next object. *stop is set (atomically) by Go once the caller's deadline
// has passed.
static int cdp_flatten_progress(uint64_t done, uint64_t total, void *stop) {
	(void)done;
	(void)total;
	return __atomic_load_n((int *)stop, __ATOMIC_SEQ_CST) ? -ECANCELED : 0;
}

// cdp_flatten opens image name of io, flattens it (stopping when *stop is set) and closes it.
static int cdp_flatten(rados_ioctx_t io, const char *name, int *stop) {
	rbd_image_t img;
	int r = rbd_open(io, name, &img, NULL);
	if (r < 0) {
		return r;
	}
	r = rbd_flatten_with_progress(img, cdp_flatten_progress, stop);
	int rc = rbd_close(img);
	return r < 0 ? r : rc;
}
*/
import "C"

import (
	"context"
	"sync/atomic"
	"unsafe"
)

// Flatten copies a clone's data from its parent so that it no longer depends on it. When ctx
// ends first, Flatten returns ErrTimeout at once and librbd stops the flatten at its next object;
// the image is closed shortly after, so a caller that then removes the clone retries while it
// is busy. (go-ceph has the progress callback that makes the stop possible only under its
// ceph_preview build tag, hence the few lines of C.)
func (c *Cluster) Flatten(ctx context.Context, spec Spec) error {
	if err := checkSpec(spec, false); err != nil {
		return opErr("flatten", spec.String(), err)
	}
	io, err := c.ioctx(ctx, spec.Pool, spec.Namespace)
	if err != nil {
		return err
	}
	return c.do(ctx, "flatten", spec.String(), func() error {
		stop := (*C.int)(C.malloc(C.sizeof_int))
		defer C.free(unsafe.Pointer(stop))
		*stop = 0
		name := C.CString(spec.Image)
		defer C.free(unsafe.Pointer(name))
		finished, watched := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(watched)
			select {
			case <-ctx.Done():
				atomic.StoreInt32((*int32)(unsafe.Pointer(stop)), 1)
			case <-finished:
			}
		}()
		ret := C.cdp_flatten(C.rados_ioctx_t(io.Pointer()), name, stop)
		close(finished)
		<-watched // before stop is freed
		if ret < 0 {
			return radosErrno(ret)
		}
		return nil
	}, nil)
}
