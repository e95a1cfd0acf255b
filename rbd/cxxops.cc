// The read requests of cxxops.h, in librados' C++ API.
#include "cxxops.h"

#include <rados/librados.hpp>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <list>
#include <map>
#include <string>
#include <new>
#include <vector>

extern "C" int cdp_read_header(rados_ioctx_t io, const char *oid, cdp_exec *calls, int ncalls,
                               int want_watchers, cdp_watcher **watchers, int *nwatchers,
                               int *watchers_rval) {
  *watchers = nullptr;
  *nwatchers = 0;
  *watchers_rval = 0;
  for (int i = 0; i < ncalls; i++) {
    calls[i].out = nullptr;
    calls[i].out_len = 0;
    calls[i].rval = 0;
  }
  try {
    librados::IoCtx ioctx;
    librados::IoCtx::from_rados_ioctx_t(io, ioctx);
    librados::ObjectReadOperation op;
    op.assert_exists();
    std::vector<librados::bufferlist> in(ncalls), out(ncalls);
    for (int i = 0; i < ncalls; i++) {
      in[i].append(calls[i].in, calls[i].in_len);
      op.exec(calls[i].cls, calls[i].method, in[i], &out[i], &calls[i].rval);
      // A method that fails (a feature the image lacks) fails alone, not the whole read.
      op.set_op_flags2(LIBRADOS_OP_FLAG_FAILOK);
    }
    std::list<obj_watch_t> ws;
    if (want_watchers) {
      op.list_watchers(&ws, watchers_rval);
    }
    librados::bufferlist unused;
    int r = ioctx.operate(oid, &op, &unused);
    if (r < 0) {
      return r;
    }
    for (int i = 0; i < ncalls; i++) {
      size_t n = out[i].length();
      if (n == 0) {
        continue;
      }
      calls[i].out = static_cast<char *>(malloc(n));
      if (calls[i].out == nullptr) {
        return -ENOMEM;
      }
      out[i].begin().copy(n, calls[i].out);
      calls[i].out_len = n;
    }
    if (!ws.empty()) {
      *watchers = static_cast<cdp_watcher *>(calloc(ws.size(), sizeof(cdp_watcher)));
      if (*watchers == nullptr) {
        return -ENOMEM;
      }
      int i = 0;
      for (const auto &w : ws) {
        memcpy((*watchers)[i].addr, w.addr, sizeof((*watchers)[i].addr) - 1);  // calloc ended it with a 0
        (*watchers)[i].id = w.watcher_id;
        (*watchers)[i].cookie = w.cookie;
        i++;
      }
      *nwatchers = i;
    }
    return 0;
  } catch (const std::bad_alloc &) {
    return -ENOMEM;
  } catch (...) {
    return -EIO;
  }
}

extern "C" int cdp_omap_keys(rados_ioctx_t io, const char *oid, const char *start_after,
                             const char *prefix, uint64_t max, int want_size, uint64_t *size,
                             char **keys, size_t *keys_len, int *nkeys, int *more) {
  *keys = nullptr;
  *keys_len = 0;
  *nkeys = 0;
  *more = 0;
  try {
    librados::IoCtx ioctx;
    librados::IoCtx::from_rados_ioctx_t(io, ioctx);
    librados::ObjectReadOperation op;
    int srval = 0, krval = 0;
    if (want_size) {
      op.stat(size, nullptr, &srval);
    }
    std::map<std::string, librados::bufferlist> vals;
    bool m = false;
    op.omap_get_vals2(start_after, prefix, max, &vals, &m, &krval);
    librados::bufferlist unused;
    int r = ioctx.operate(oid, &op, &unused);
    if (r < 0) {
      return r;
    }
    if (srval < 0) {
      return srval;
    }
    if (krval < 0) {
      return krval;
    }
    size_t n = 0;
    for (const auto &kv : vals) {
      n += 4 + kv.first.size();
    }
    if (n > 0) {
      *keys = static_cast<char *>(malloc(n));
      if (*keys == nullptr) {
        return -ENOMEM;
      }
      char *p = *keys;
      for (const auto &kv : vals) {
        uint32_t len = kv.first.size();
        for (int i = 0; i < 4; i++) {
          *p++ = static_cast<char>((len >> (8 * i)) & 0xff);
        }
        memcpy(p, kv.first.data(), len);
        p += len;
      }
    }
    *keys_len = n;
    *nkeys = static_cast<int>(vals.size());
    *more = m ? 1 : 0;
    return 0;
  } catch (const std::bad_alloc &) {
    return -ENOMEM;
  } catch (...) {
    return -EIO;
  }
}
