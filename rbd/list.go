package rbd

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ceph/go-ceph/rados"
	"github.com/ceph/go-ceph/rbd"
)

// Listing a pool's images. A pool's images (format 2, the only format Ceph has made since Jewel)
// are the keys "name_<image>" of its rbd_directory object's omap, in name order. librbd's list
// reads them in pages of 1,024; listDirectory reads pages of dirPage, so a pool of 100,000 images
// costs 13 requests instead of 98, and answers the names only (no per-image request).

// dirPage is how many names one request reads from rbd_directory (well under the OSD's
// osd_max_omap_entries_per_request, 131,072).
var dirPage uint64 = 8192

// errFormat1 says the pool holds format 1 images (their names are in rbd_directory's data, in
// an encoding only librbd reads): the caller asks librbd instead.
var errFormat1 = errors.New("the pool has format 1 images")

// listDirectory returns the names of the pool's images, sorted. Its first request also reads the
// directory's data, which only format 1 images fill: then errFormat1.
func listDirectory(io *rados.IOContext) ([]string, error) {
	var names []string
	after := ""
	for first := true; ; first = false {
		op := rados.CreateReadOp()
		var data *rados.ReadOpReadStep
		if first {
			data = op.Read(0, make([]byte, 1))
		}
		page := op.GetOmapValues(after, "name_", dirPage)
		err := op.Operate(io, "rbd_directory", rados.OperationNoFlag)
		if err != nil {
			op.Release()
			if errors.Is(err, rados.ErrNotFound) { // a pool no image was ever made in
				return names, nil
			}
			return nil, err
		}
		if data != nil && data.BytesRead > 0 {
			op.Release()
			return nil, errFormat1
		}
		n := 0
		for {
			kv, err := page.Next()
			if err != nil {
				op.Release()
				return nil, fmt.Errorf("rbd_directory: %w", err)
			}
			if kv == nil {
				break
			}
			names = append(names, strings.TrimPrefix(kv.Key, "name_"))
			after = kv.Key
			n++
		}
		more := page.More()
		op.Release()
		if !more || n == 0 {
			return names, nil
		}
	}
}

// listImages is listDirectory, or librbd's list for a pool with format 1 images.
func listImages(io *rados.IOContext) ([]string, error) {
	names, err := listDirectory(io)
	if errors.Is(err, errFormat1) {
		return rbd.GetImageNames(io)
	}
	return names, err
}
