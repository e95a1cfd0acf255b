package driver

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

var def = OptionDefaults{Size: 10 << 30, FSType: "ext4"}

func TestParseSize(t *testing.T) {
	ok := map[string]uint64{
		"10": 10 << 30, "512M": 512 << 20, "512m": 512 << 20, "10G": 10 << 30, "1T": 1 << 40,
		"2GiB": 2 << 30, "3GB": 3 << 30, "64K": 64 << 10, " 1P ": 1 << 50,
	}
	for in, want := range ok {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5G", "ten", "10X", "2P", "99999999999999999999", "10 G B"} {
		if _, err := ParseSize(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseSize(%q): err = %v, want ErrInvalid", in, err)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for b, want := range map[uint64]string{10 << 30: "10G", 512 << 20: "512M", 1536 << 20: "1536M", 1 << 40: "1T", 1000: "1000B"} {
		if got := FormatSize(b); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", b, got, want)
		}
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"a", "db.1", "my_vol-2", "A9"} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "../x", "a/b", "-a", "_a", "a b", "a\x00b", "é", strings.Repeat("a", 201)} {
		if err := ValidateName(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: err = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestParseOptions(t *testing.T) {
	o, err := ParseOptions(map[string]string{
		"size": "20", "fstype": "xfs", "mkfs-options": "-m crc=1 -L data", "mount-options": "noatime,discard",
		"pool": "fast",
	}, def, []string{"pool", "features"})
	if err != nil {
		t.Fatal(err)
	}
	want := Options{Size: 20 << 30, SizeGiven: true, FSType: "xfs", MkfsOptions: []string{"-m", "crc=1", "-L", "data"},
		MountOptions: "noatime,discard", Backend: map[string]string{"pool": "fast"}}
	if !reflect.DeepEqual(o, want) {
		t.Fatalf("got %+v\nwant %+v", o, want)
	}
	o, err = ParseOptions(nil, def, nil)
	if err != nil || o.Size != def.Size || o.FSType != "ext4" {
		t.Fatalf("defaults: %+v, %v", o, err)
	}
}

func TestParseOptionsErrorsNameTheOptionAndWhatIsAllowed(t *testing.T) {
	cases := map[string]struct {
		raw  map[string]string
		want []string
	}{
		"unknown":    {map[string]string{"colour": "red"}, []string{`unknown option "colour"`, "allowed are size, fstype, mkfs-options, mount-options, uid, gid, mode, lost-found, access, pool"}},
		"fstype":     {map[string]string{"fstype": "btrfs"}, []string{`fstype "btrfs"`, "ext4, xfs"}},
		"size":       {map[string]string{"size": "big"}, []string{`size "big"`, "512M"}},
		"too small":  {map[string]string{"size": "1M"}, []string{"minimum of 16M"}},
		"xfs small":  {map[string]string{"size": "100M", "fstype": "xfs"}, []string{"too small for xfs"}},
		"mkfs shell": {map[string]string{"mkfs-options": "-L x;rm"}, []string{`mkfs-options -L "x;rm"`, "label takes"}},
		"mkfs path":  {map[string]string{"mkfs-options": "-d /etc"}, []string{"mkfs-options -d is not allowed for ext4", "allowed are -C"}},
		"mount":      {map[string]string{"mount-options": "noatime,Bad Opt"}, []string{`mount-options "Bad Opt" is not allowed for ext4`, "allowed are acl"}},
		"backend nl": {map[string]string{"pool": "a\nb"}, []string{"option pool"}},
		"several":    {map[string]string{"fstype": "zfs", "colour": "red"}, []string{`unknown option "colour"`, `fstype "zfs"`}},
	}
	for name, c := range cases {
		_, err := ParseOptions(c.raw, def, []string{"pool"})
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not contain %q", name, err, w)
			}
		}
	}
}

func FuzzParseOptions(f *testing.F) {
	f.Add("size", "10G", "mount-options", "noatime")
	f.Add("fstype", "xfs", "mkfs-options", "-K -L x")
	f.Add("pool", "volumes", "size", "1T")
	f.Add("size", "99999999999999999999P", "colour", "red")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		o, err := ParseOptions(map[string]string{k1: v1, k2: v2}, def, []string{"pool"})
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error is not ErrInvalid: %v", err)
			}
			return
		}
		if o.Size < minSize || o.Size > maxSize {
			t.Fatalf("accepted size %d", o.Size)
		}
		if o.FSType != "ext4" && o.FSType != "xfs" {
			t.Fatalf("accepted fstype %q", o.FSType)
		}
		for _, tok := range o.MkfsOptions {
			if strings.ContainsAny(tok, " ;|&$`'\"\\\n/") && !strings.Contains(tok, "/") {
				t.Fatalf("accepted mkfs token %q", tok)
			}
			if strings.HasPrefix(tok, "/") {
				t.Fatalf("accepted mkfs path %q", tok)
			}
		}
		if strings.ContainsAny(o.MountOptions, " \n\x00") {
			t.Fatalf("accepted mount options %q", o.MountOptions)
		}
	})
}

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"db.1", "..", "a/b", "x\x00", "-a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidateName(name) != nil {
			return
		}
		if name == "." || name == ".." || strings.ContainsAny(name, "/\x00 \n") || len(name) > maxNameLen || name == "" {
			t.Fatalf("accepted %q", name)
		}
	})
}
