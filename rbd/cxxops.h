/* Read requests that librados' C API (and so go-ceph) cannot make, in its C++ API: a compound
 * read of an RBD image header with its watchers (header.go), and a page of an omap's keys in one
 * buffer (list.go). */
#ifndef CDP_CXXOPS_H
#define CDP_CXXOPS_H

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

/* cdp_omap_keys reads up to max keys of oid's omap that start with prefix and sort after
 * start_after, in one read request: *keys (malloc'd, the caller frees it) holds *nkeys keys, each
 * a 32-bit little-endian length and the bytes; *more says whether more keys follow. With
 * want_size, the request also reads the object's data size into *size. It returns 0, or the
 * negative error of the request (-ENOENT: no such object). */
int cdp_omap_keys(rados_ioctx_t io, const char *oid, const char *start_after, const char *prefix,
                  uint64_t max, int want_size, uint64_t *size, char **keys, size_t *keys_len,
                  int *nkeys, int *more);

#ifdef __cplusplus
}
#endif

#endif
