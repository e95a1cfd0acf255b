package driver

import (
	"errors"
	"strings"
	"testing"
)

func TestMkfsOptionsAllowed(t *testing.T) {
	for _, c := range []struct{ fstype, s string }{
		{"ext4", "-m 0"},
		{"ext4", "-m0 -i 65536 -I 256 -N 100000 -b 4096"},
		{"ext4", "-E stride=16,stripe_width=64,lazy_itable_init=0,nodiscard -L data_1"},
		{"ext4", "-E root_owner=1000:1000"},
		{"ext4", "-E root_owner"},
		{"ext4", "-O ^has_journal,metadata_csum,64bit -T largefile4"},
		{"ext4", "-qj -J size=64 -e remount-ro -G 16 -g 32768"},
		{"ext4", "-Ldata"},
		{"xfs", "-b size=4096 -i size=512 -d su=64k,sw=4,agcount=8 -L data"},
		{"xfs", "-m crc=1,reflink=1,bigtime=1 -n ftype=1 -l size=64m,lazy-count=1 -s size=4096"},
		{"xfs", "-K -q"},
		{"xfs", ""},
	} {
		toks, err := ParseMkfsOptions(c.fstype, c.s)
		if err != nil {
			t.Errorf("%s %q: %v", c.fstype, c.s, err)
		}
		if strings.Join(toks, " ") != strings.Join(strings.Fields(c.s), " ") {
			t.Errorf("%s %q: words %q", c.fstype, c.s, toks)
		}
	}
}

// Every refusal names mkfs-options, the offending option, and what is allowed.
func TestMkfsOptionsRefused(t *testing.T) {
	for _, c := range []struct {
		fstype, s string
		want      []string
	}{
		{"ext4", "-d etc/ceph", []string{"-d is not allowed for ext4", "allowed are", "-E (extended options)"}},
		{"ext4", "-d /etc", []string{"-d is not allowed"}},
		{"ext4", "-detc", []string{"-d is not allowed"}},
		{"ext4", "-qd etc", []string{"-d is not allowed"}},
		{"ext4", "-l badblocks", []string{"-l is not allowed"}},
		{"ext4", "-z undo", []string{"-z is not allowed"}},
		{"ext4", "-M /mnt", []string{"-M is not allowed"}},
		{"ext4", "-F", []string{"-F is not allowed"}},
		{"ext4", "-S", []string{"-S is not allowed"}},
		{"ext4", "-J device=/dev/sdb", []string{`"device" is not allowed`, "size=V"}},
		{"ext4", "-O journal_dev", []string{`"journal_dev" is not allowed`, "feature names"}},
		{"ext4", "-E root_owner=../../etc", []string{"root_owner takes numeric uid:gid"}},
		{"ext4", "-E root_owner=0:0:/etc", []string{"root_owner takes numeric uid:gid"}},
		{"ext4", "-E offset=4096", []string{`"offset" is not allowed`, "stride=V"}},
		{"ext4", "-E stride=16,,nodiscard", []string{`"" is not allowed`}},
		{"ext4", "-E stride=/dev/sda", []string{"stride takes a number"}},
		{"ext4", "-L ../x", []string{"-L", "label takes"}},
		{"ext4", "-L a/b", []string{"label takes"}},
		{"ext4", "-L -d", []string{"label takes"}},
		{"ext4", "-T ../../etc/x", []string{"usage types"}},
		{"ext4", "-e panic", []string{"-e", "continue, remount-ro"}},
		{"ext4", "/dev/sda", []string{`"/dev/sda" is not an option`}},
		{"ext4", "-m 1 etc", []string{`"etc" is not an option`}},
		{"ext4", "-- -d etc", []string{"'--' are not allowed"}},
		{"ext4", "--help", []string{"long options"}},
		{"ext4", "-m", []string{"-m needs a value"}},
		{"ext4", "-m 1\n-d etc", []string{"control character", "U+000A"}},
		{"ext4", "-m 1\x00-d etc", []string{"control character", "U+0000"}},
		{"ext4", "\u2010d etc", []string{"non-ASCII", "U+2010"}},
		{"ext4", "-L ｄata", []string{"non-ASCII"}},
		{"ext4", strings.Repeat("-m 1 ", 1000), []string{"the limit is 4096"}},
		{"xfs", "-l logdev=/dev/sdb,size=64m", []string{`"logdev" is not allowed for xfs`, "lazy-count=V"}},
		{"xfs", "-l logdev=loopfile", []string{`"logdev" is not allowed`}},
		{"xfs", "-r rtdev=/dev/sdb", []string{"-r is not allowed for xfs"}},
		{"xfs", "-d file,name=img,size=64m", []string{`"file" is not allowed`, "agcount=V"}},
		{"xfs", "-d su=64k,name=/dev/sdb", []string{`"name" is not allowed`}},
		{"xfs", "-p protofile", []string{"-p is not allowed"}},
		{"xfs", "-c options=/etc/x.conf", []string{"-c is not allowed"}},
		{"xfs", "-f", []string{"-f is not allowed"}},
		{"xfs", "-N", []string{"-N is not allowed"}},
		{"xfs", "-m uuid=../x", []string{`"uuid" is not allowed`}},
		{"xfs", "-L averylonglabel1", []string{"at most 12"}},
		{"xfs", "-m 0", []string{`"0" is not allowed for xfs`}},
		{"btrfs", "-m 0", []string{`fstype "btrfs"`}},
	} {
		_, err := ParseMkfsOptions(c.fstype, c.s)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s %q: err = %v, want ErrInvalid", c.fstype, c.s, err)
			continue
		}
		for _, w := range append([]string{"mkfs-options"}, c.want...) {
			if c.fstype == "btrfs" && w == "mkfs-options" {
				continue
			}
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s %q: %q does not contain %q", c.fstype, c.s, err, w)
			}
		}
	}
}

func TestMountOptions(t *testing.T) {
	for _, c := range []struct{ fstype, s string }{
		{"ext4", ""}, {"ext4", "noatime,nodiratime,discard,data=ordered,commit=30,errors=remount-ro"},
		{"ext4", "nobarrier,barrier=1,journal_checksum,noexec,ro"},
		{"xfs", "noatime,inode64,logbufs=8,logbsize=256k,allocsize=64m,nouuid,prjquota,discard"},
	} {
		if err := CheckMountOptions(c.fstype, c.s); err != nil {
			t.Errorf("%s %q: %v", c.fstype, c.s, err)
		}
	}
	for _, c := range []struct {
		fstype, s string
		want      []string
	}{
		{"ext4", "journal_path=/dev/sdb", []string{`"journal_path=/dev/sdb" is not allowed for ext4`, "allowed are", "noatime"}},
		{"ext4", "journal_dev=2049", []string{`"journal_dev=2049" is not allowed`}},
		{"ext4", "usrjquota=aquota.user,jqfmt=vfsv0", []string{`"usrjquota=aquota.user" is not allowed`}},
		{"xfs", "logdev=/dev/sdb", []string{`"logdev=/dev/sdb" is not allowed for xfs`}},
		{"xfs", "rtdev=/dev/sdb", []string{`"rtdev=/dev/sdb" is not allowed`}},
		{"ext4", "noatime,suid", []string{`"suid"`, "always mounted nosuid,nodev"}},
		{"ext4", "dev", []string{`"dev"`, "nosuid,nodev"}},
		{"ext4", "errors=panic", []string{`"errors=panic"`, "continue, remount-ro"}},
		{"ext4", "noatime,,ro", []string{"empty entry"}},
		{"ext4", "noatime\nro", []string{"control character"}},
		{"ext4", "noatime\x00ro", []string{"control character"}},
		{"xfs", "data=journal", []string{`"data=journal" is not allowed for xfs`}},
		{"ext4", "commit=5;rm", []string{"commit takes a number"}},
		{"ext4", "noatime,context=system_u:object_r:tmp_t", []string{`"context=`}},
		{"ext4", "dax", []string{`"dax" is not allowed`}},
		{"ext4", "ｎoatime", []string{"non-ASCII"}},
		{"ext4", strings.Repeat("noatime,", 8192), []string{"the limit is 4096"}},
		{"ext4", "noatime=1", []string{"takes no value"}},
		{"ext4", "commit", []string{"needs a value"}},
	} {
		err := CheckMountOptions(c.fstype, c.s)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s %q: err = %v, want ErrInvalid", c.fstype, c.s, err)
			continue
		}
		for _, w := range append([]string{"mount-options"}, c.want...) {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s %q: %q does not contain %q", c.fstype, c.s, err, w)
			}
		}
	}
	if got, err := MountOptionsFor("xfs", "noatime"); err != nil || got != "noatime,nosuid,nodev" {
		t.Errorf("MountOptionsFor: %q, %v", got, err)
	}
	if got, err := MountOptionsFor("ext4", ""); err != nil || got != "nosuid,nodev" {
		t.Errorf("MountOptionsFor empty: %q, %v", got, err)
	}
}

func TestCheckStored(t *testing.T) {
	ok := Volume{MkfsOptions: []string{"-m", "0"}, MountOptions: "noatime"}
	if err := CheckStored("ext4", ok); err != nil {
		t.Errorf("good stored options: %v", err)
	}
	for _, c := range []struct {
		fstype string
		vol    Volume
		want   string
	}{
		{"ext4", Volume{MkfsOptions: []string{"-d", "etc/ceph"}}, "mkfs-options -d"},
		{"ext4", Volume{MkfsOptions: []string{"-m", "0\x00"}}, "control character"},
		{"ext4", Volume{MountOptions: "suid"}, `mount-options "suid"`},
		{"btrfs", Volume{}, `fstype "btrfs"`},
		{"ext4", Volume{MkfsOptions: []string{strings.Repeat("x", 65536)}}, "limit is 4096"},
	} {
		err := CheckStored(c.fstype, c.vol)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want ErrInvalid mentioning %q", c.vol, err, c.want)
		}
	}
}

// getopt strings of mke2fs 1.47 and mkfs.xfs 6.1: the whole of what the tools accept, not the
// allowlist. The fuzz oracle reads an accepted command line with them, independently of MkfsArgs.
var toolOptstrings = map[string]string{
	"ext4": "b:cd:e:g:i:jl:m:no:qr:s:t:vC:DE:FG:I:J:KL:M:N:O:R:ST:U:Vz:",
	"xfs":  "b:c:d:i:l:L:m:n:KNp:qr:s:CfV",
}

// pathLetters take a path or device as their whole argument; pathSubs are sub-options (and -O
// features) that name one or make mkfs use one.
var (
	pathLetters = map[string]string{"ext4": "dlzM", "xfs": "pcr"}
	pathSubs    = []string{"device", "logdev", "rtdev", "file", "name", "journal_dev", "offset", "options"}
	pathMount   = []string{"journal_path", "journal_dev", "usrjquota", "grpjquota", "logdev", "rtdev", "dev", "suid",
		"context", "fscontext", "defcontext", "rootcontext", "errors=panic"}
)

// namesPathOrDevice is the fuzz oracle: it reads toks as the tool's getopt would and reports
// what in them names (or makes mkfs use) a path, a device or a file, or would become mkfs's
// device argument.
func namesPathOrDevice(fstype string, toks []string) string {
	optstr := toolOptstrings[fstype]
	for _, t := range toks {
		if strings.ContainsAny(t, "/\x00\n") || strings.HasPrefix(t, ".") || strings.Contains(t, "=.") || strings.Contains(t, ",.") {
			return "word " + t
		}
		for _, r := range t {
			if r < 0x20 || r > 0x7e {
				return "non-printable in " + t
			}
		}
	}
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		if t == "--" || len(t) < 2 || t[0] != '-' {
			return "positional " + t
		}
		for j := 1; j < len(t); j++ {
			l := t[j]
			k := strings.IndexByte(optstr, l)
			if k < 0 || l == ':' {
				return "unknown letter " + string(l)
			}
			if strings.IndexByte(pathLetters[fstype], l) >= 0 {
				return "path letter -" + string(l)
			}
			if k+1 < len(optstr) && optstr[k+1] == ':' {
				arg := t[j+1:]
				if arg == "" {
					if i+1 >= len(toks) {
						return "missing argument"
					}
					i++
					arg = toks[i]
				}
				for _, sub := range strings.Split(arg, ",") {
					key, _, _ := strings.Cut(sub, "=")
					key = strings.TrimLeft(key, "^")
					for _, p := range pathSubs {
						if key == p {
							return "path sub-option " + key
						}
					}
				}
				break
			}
		}
	}
	return ""
}

var fuzzMkfsSeeds = []string{
	"-m 0", "-E stride=16,root_owner=1000:1000", "-d etc", "-qd etc", "-l logdev=/dev/sdb", "-r rtdev=x",
	"-d file,name=x", "-E offset=1", "-L data", "-O ^has_journal", "-Ldata -m0 -Tnews", "-- x", "-L -d",
	"-J device=x", "-d su=64k,sw=4", "-m crc=1", "-i size=512", "-b size=4096", "-E root_owner=0:0",
}

func FuzzMkfsOptions(f *testing.F) {
	for _, s := range fuzzMkfsSeeds {
		f.Add(false, s)
		f.Add(true, s)
	}
	f.Fuzz(func(t *testing.T, xfs bool, s string) {
		fstype := "ext4"
		if xfs {
			fstype = "xfs"
		}
		toks, err := ParseMkfsOptions(fstype, s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "mkfs-options") {
				t.Fatalf("refusal does not name mkfs-options: %v", err)
			}
			return
		}
		if why := namesPathOrDevice(fstype, toks); why != "" {
			t.Fatalf("accepted %q for %s: %s", s, fstype, why)
		}
		if len(s) > MaxFSOptionsLen {
			t.Fatalf("accepted %d bytes", len(s))
		}
		// What mkfs gets from the accepted words is checked the same way.
		args, err := MkfsArgs(fstype, toks)
		if err != nil {
			t.Fatalf("words of accepted %q refused: %v", s, err)
		}
		var words []string
		for _, a := range args {
			words = append(words, a.Tokens()...)
		}
		if why := namesPathOrDevice(fstype, words); why != "" {
			t.Fatalf("accepted %q for %s makes %q: %s", s, fstype, words, why)
		}
	})
}

func FuzzMountOptions(f *testing.F) {
	for _, s := range []string{"noatime", "data=journal", "journal_path=/dev/x", "logdev=x", "suid", "noatime,,ro",
		"commit=5", "errors=panic", "inode64,logbufs=8", "allocsize=64k", "context=x"} {
		f.Add(false, s)
		f.Add(true, s)
	}
	f.Fuzz(func(t *testing.T, xfs bool, s string) {
		fstype := "ext4"
		if xfs {
			fstype = "xfs"
		}
		got, err := MountOptionsFor(fstype, s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "mount-options") {
				t.Fatalf("refusal does not name mount-options: %v", err)
			}
			return
		}
		if !strings.HasSuffix(got, ForcedMountFlags) {
			t.Fatalf("%q: %q lacks %s", s, got, ForcedMountFlags)
		}
		for _, o := range strings.Split(got, ",") {
			if strings.ContainsAny(o, "/ ") || o == "" {
				t.Fatalf("accepted %q: entry %q", s, o)
			}
			for _, r := range o {
				if r < 0x20 || r > 0x7e {
					t.Fatalf("accepted %q: non-printable", s)
				}
			}
			for _, p := range pathMount {
				if k, _, _ := strings.Cut(o, "="); k == p || o == p {
					t.Fatalf("accepted %q: %q", s, o)
				}
			}
		}
	})
}

// setStored plants options in a fake volume as another writer of the backend's metadata would.
func (p *fakeProvisioner) setStored(name, fstype string, mkfs []string, mount string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v := p.vols[name]
	v.FSType, v.MkfsOptions, v.MountOptions = fstype, mkfs, mount
	p.vols[name] = v
}

// Options planted in the backend after Create are checked again at Mount: the volume is refused
// with a message naming it, the option and what to do, and neither mapped, formatted nor mounted.
func TestMountRefusesStoredOptions(t *testing.T) {
	for _, c := range []struct {
		fstype string
		mkfs   []string
		mount  string
		want   string
	}{
		{"ext4", []string{"-d", "etc/ceph"}, "", "mkfs-options -d is not allowed"},
		{"xfs", []string{"-l", "logdev=/dev/sdb"}, "", `"logdev" is not allowed`},
		{"ext4", nil, "noatime,suid,dev", `mount-options "suid"`},
		{"ext4", nil, "journal_path=/dev/sdb", `mount-options "journal_path=/dev/sdb"`},
		{"btrfs", nil, "", `fstype "btrfs"`},
	} {
		e := newTestDriver(t)
		e.prov.add("v", 1<<30, "ext4")
		e.prov.setStored("v", c.fstype, c.mkfs, c.mount)
		m := e.rec.mark()
		_, err := e.d.Mount(bg, "v", "id1")
		assertErr(t, err, ErrInvalid, "mount volume v", c.want, "nothing was formatted or mounted", "rbd image-meta remove", "openstack volume unset")
		for _, op := range e.rec.since(m) {
			if strings.HasPrefix(op, "map.Map") || strings.HasPrefix(op, "mnt.") {
				t.Errorf("%v: %s was called", c, op)
			}
		}
		e.assertGone("v")
	}
}

// A device carrying a filesystem the plugin does not make is refused, naming it, and released;
// a supported one other than recorded is mounted as what it is.
func TestMountRefusesForeignFilesystems(t *testing.T) {
	for _, fs := range []string{"btrfs", "vfat", "ext2", "squashfs"} {
		e := newTestDriver(t)
		e.prov.add("v", 1<<30, "ext4")
		e.mounter.setFS("/dev/fake0", fs)
		_, err := e.d.Mount(bg, "v", "id1")
		assertErr(t, err, ErrInvalid, "mount volume v", "carries a "+fs+" filesystem", "mounts only ext4 and xfs")
		if n := e.mounter.mountCount(); n != 0 {
			t.Errorf("%s: %d mounts", fs, n)
		}
		e.assertGone("v")
	}
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "xfs")
	e.prov.setStored("v", "xfs", nil, "inode64")
	e.mounter.setFS("/dev/fake0", "ext4")
	_, err := e.d.Mount(bg, "v", "id1")
	assertErr(t, err, nil, "carries ext4 while xfs was recorded", `mount-options "inode64" is not allowed for ext4`)
	e.assertGone("v")
}

func TestSplitMkfsOptions(t *testing.T) {
	got := SplitMkfsOptions("  -m 1\t-d\u00a0etc  -L x\n")
	want := []string{"-m", "1\t-d\u00a0etc", "-L", "x\n"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q, want %q", got, want)
	}
	if _, err := MkfsArgs("ext4", got); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "control character") {
		t.Fatalf("stored words with a tab: %v", err)
	}
}
