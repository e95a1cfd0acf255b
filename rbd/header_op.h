/* One compound read of an RBD image header: cls method calls and the object's watchers in one
 * OSD request (see header.go). The C API of librados has no list_watchers step, the C++ API has. */
#ifndef CDP_HEADER_OP_H
#define CDP_HEADER_OP_H

#include <stddef.h>
#include <stdint.h>
#include <rados/librados.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One cls method call: cls, method and in are the caller's; out (malloc'd, the caller frees it)
 * and rval are set by cdp_read_header. */
typedef struct {
  const char *cls;
  const char *method;
  const char *in;
  size_t in_len;
  char *out;
  size_t out_len;
  int rval;
} cdp_exec;

/* One watcher of the object. */
typedef struct {
  char addr[256];
  int64_t id;
  uint64_t cookie;
} cdp_watcher;

/* cdp_read_header asserts that oid exists, runs the calls (each may fail on its own: see rval)
 * and, if want_watchers, lists the watchers (*watchers malloc'd, the caller frees it), all in one
 * read request. It returns 0, or the negative error of the request (-ENOENT: no such object). */
int cdp_read_header(rados_ioctx_t io, const char *oid, cdp_exec *calls, int ncalls,
                    int want_watchers, cdp_watcher **watchers, int *nwatchers, int *watchers_rval);

#ifdef __cplusplus
}
#endif

#endif
