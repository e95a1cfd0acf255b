package rbd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/ceph/go-ceph/rbd"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// Differences implements driver.Provisioner: it compares the pool, data-pool, features,
// from-snapshot and from-volume options of an idempotent Create.
func (p *Provisioner) Differences(ctx context.Context, vol driver.Volume, opts driver.Options) ([]string, error) {
	var diffs []string
	if v, ok := opts.Backend[OptPool]; ok && v != vol.Image.Pool {
		diffs = append(diffs, fmt.Sprintf("pool %s (it is in pool %s)", v, vol.Image.Pool))
	}
	if v, ok := opts.Backend[OptDataPool]; ok {
		want := v
		if want == vol.Image.Pool {
			want = "" // librbd keeps no data pool that is the image's own pool
		}
		if have, _ := vol.Status["data-pool"].(string); have != want {
			diffs = append(diffs, fmt.Sprintf("data-pool %s (it has %s)", v, orNone(have)))
		}
	}
	if v, ok := opts.Backend[OptFeatures]; ok {
		have, _ := vol.Status["features"].(string)
		if want, got := chosenFeatures(v), chosenFeatures(have); !slices.Equal(want, got) {
			diffs = append(diffs, fmt.Sprintf("features %s (it has %s)", strings.Join(want, ","), orNone(strings.Join(got, ","))))
		}
	}
	if v, ok := opts.Backend[OptFromSnapshot]; ok {
		// The source recorded at Create outlives a flatten; an image without one (made before
		// the plugin recorded it, or by hand) is compared by its parent link.
		recorded, _ := vol.Status[OptFromSnapshot].(string)
		parent, _ := vol.Status["parent"].(string)
		src, err := p.parseSnapshot(ctx, v)
		switch {
		case errors.Is(err, driver.ErrInvalid):
			diffs = append(diffs, fmt.Sprintf("from-snapshot %s (not image@snapshot or volume@snapshot)", v))
		case recorded != "":
			if err == nil && src.String() != recorded {
				diffs = append(diffs, fmt.Sprintf("from-snapshot %s (it was cloned from %s)", v, recorded))
			}
		case parent == "":
			diffs = append(diffs, fmt.Sprintf("from-snapshot %s (it is not a clone)", v))
		case err == nil && src.String() != parent:
			diffs = append(diffs, fmt.Sprintf("from-snapshot %s (it is a clone of %s)", v, parent))
		}
	}
	if v, ok := opts.Backend[OptFromVolume]; ok {
		if diff := copyDifference(v, vol); diff != "" {
			diffs = append(diffs, diff)
		}
	}
	return diffs, nil
}

// chosenFeatures are the features in a comma-separated list that Create's -o features chooses,
// sorted: not data-pool (set by the data-pool option), nor striping (librbd keeps it only with a
// stripe unit or count other than the default, which the plugin never sets), nor those librbd
// sets itself (operations, migrating, non-primary).
func chosenFeatures(list string) []string {
	var out []string
	for _, f := range strings.Split(strings.ReplaceAll(list, " ", ""), ",") {
		if f != "" && f != rbd.FeatureNameDataPool && f != rbd.FeatureNameStripingV2 && slices.Contains(KnownFeatures, f) && !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	slices.Sort(out)
	return out
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// RoundSize implements driver.Provisioner: an image is made with the size asked for.
func (p *Provisioner) RoundSize(size uint64) uint64 { return size }
