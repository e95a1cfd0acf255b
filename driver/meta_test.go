package driver

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// What a backend stores of a volume's options reads back the same, under the keys both backends
// and earlier versions use; options not given store nothing.
func TestStoredMetaReadsBack(t *testing.T) {
	opts := Options{FSType: "xfs", MkfsOptions: []string{"-m", "0", "-L", "data"}, MountOptions: "noatime",
		Root: RootOptions{UID: "999", GID: "998", Mode: "0700", LostFound: "remove"}, FrontEnd: FrontEndCSI}
	meta := StoredMeta(opts)
	want := map[string]string{
		"docker-plugin.fstype": "xfs", "docker-plugin.mkfs-options": "-m 0 -L data",
		"docker-plugin.mount-options": "noatime", "docker-plugin.front-end": "csi",
		"docker-plugin.uid": "999", "docker-plugin.gid": "998", "docker-plugin.mode": "0700",
		"docker-plugin.lost-found": "remove",
	}
	if !reflect.DeepEqual(meta, want) {
		t.Fatalf("StoredMeta = %v\nwant %v", meta, want)
	}
	var vol Volume
	vol.SetStored(func(k string) string { return meta[k] })
	if vol.FSType != opts.FSType || !reflect.DeepEqual(vol.MkfsOptions, opts.MkfsOptions) ||
		vol.MountOptions != opts.MountOptions || vol.Root != opts.Root || vol.FrontEnd != opts.FrontEnd {
		t.Fatalf("read back %+v from %v", vol, meta)
	}

	bare := StoredMeta(Options{FSType: "ext4"})
	if !reflect.DeepEqual(bare, map[string]string{"docker-plugin.fstype": "ext4"}) {
		t.Fatalf("StoredMeta of bare options = %v", bare)
	}
	vol = Volume{MkfsOptions: []string{"stale"}}
	vol.SetStored(func(k string) string { return bare[k] })
	if vol.MkfsOptions != nil || !vol.Root.IsZero() || vol.FrontEnd != "" || vol.MountOptions != "" {
		t.Fatalf("read back %+v from %v", vol, bare)
	}
}

// A copy takes the options the request gave and its source's stored options for the others;
// another fstype and a smaller size are refused, naming the source.
func TestCopyOf(t *testing.T) {
	src := Volume{Name: "src", Size: 2 << 30, FSType: "xfs", MkfsOptions: []string{"-m", "0"}, MountOptions: "noatime",
		Root: RootOptions{UID: "999", GID: "998", Mode: "0700"}}
	raw := map[string]string{"mount-options": "nodiratime", "gid": "5"}
	opts, err := ParseOptions(raw, OptionDefaults{Size: 10 << 30, FSType: "ext4", Root: RootOptions{UID: "1"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	opts.Given = map[string]bool{"mount-options": true, "gid": true}
	got, err := opts.CopyOf(src)
	if err != nil {
		t.Fatal(err)
	}
	want := Options{Size: 2 << 30, FSType: "xfs", MkfsOptions: []string{"-m", "0"}, MountOptions: "nodiratime",
		Root: RootOptions{UID: "999", GID: "5", Mode: "0700"}, Backend: map[string]string{}, Given: opts.Given}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("CopyOf = %+v\nwant %+v", got, want)
	}

	bigger := Options{Size: 3 << 30, SizeGiven: true, FSType: "xfs", Given: map[string]bool{"size": true, "fstype": true}}
	if got, err := bigger.CopyOf(src); err != nil || got.Size != 3<<30 {
		t.Fatalf("a larger size: %+v, %v", got, err)
	}
	for _, c := range []struct {
		opts Options
		want string
	}{
		{Options{Size: 1 << 30, SizeGiven: true, FSType: "ext4", Given: map[string]bool{"size": true}}, "size 1G is smaller than volume src (2G)"},
		{Options{Size: 2 << 30, FSType: "ext4", Given: map[string]bool{"fstype": true}}, "volume src holds a xfs filesystem"},
	} {
		_, err := c.opts.CopyOf(src)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("CopyOf(%+v) = %v, want ErrInvalid with %q", c.opts, err, c.want)
		}
	}
	// A source with no recorded fstype (made by hand): the request's, or the default.
	if got, err := (Options{FSType: "ext4"}).CopyOf(Volume{Name: "raw", Size: 1 << 30}); err != nil || got.FSType != "ext4" || got.Size != 1<<30 {
		t.Fatalf("copy of an unrecorded source: %+v, %v", got, err)
	}
}
