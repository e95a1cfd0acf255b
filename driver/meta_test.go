package driver

import (
	"reflect"
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
