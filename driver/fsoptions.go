package driver

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// The mkfs and mount options a volume may carry. They come from `docker volume create -o`, and
// again from the backend at every Mount (RBD image metadata, Cinder volume properties: anyone who
// can write those can write options), so they are checked against an allowlist on the way in
// (ParseOptions) and on the way out (CheckStored, MountOptionsFor), here and nowhere else. No
// accepted token, `=` value or comma-separated sub-value names a path, a device or a file: values
// are numbers, sizes, enumerated names or labels of a safe charset; mkfs gets no positional
// argument but the device the plugin appends.

// MaxFSOptionsLen bounds mkfs-options and mount-options (each).
const MaxFSOptionsLen = 4096

// ForcedMountFlags are added to every volume mount: a volume's content is written by whoever held
// it last (any container, another host, a Cinder user who uploaded an image), so a setuid binary
// or a device node on it must not count, neither in the containers that bind-mount it (a bind
// mount keeps these flags) nor on the host's propagated mount.
const ForcedMountFlags = "nosuid,nodev"

// mkfsArgRule is one value an option letter or sub-option accepts.
type mkfsArgRule struct {
	re   *regexp.Regexp
	desc string
}

var (
	ruleUint   = mkfsArgRule{regexp.MustCompile(`^[0-9]{1,12}$`), "a number"}
	ruleSize   = mkfsArgRule{regexp.MustCompile(`^[0-9]{1,12}[kmgtKMGTbs]?$`), "a number with an optional unit (k, m, g, t, b, s)"}
	ruleBool   = mkfsArgRule{regexp.MustCompile(`^[01]$`), "0 or 1"}
	rulePct    = mkfsArgRule{regexp.MustCompile(`^[0-9]{1,2}(\.[0-9]{1,3})?$`), "a percentage (0-50, e.g. 1 or 0.5)"}
	ruleExt4Lb = mkfsArgRule{regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,15}$`), "a label of at most 16 letters, digits, '_', '.' or '-', starting with a letter or digit"}
	ruleXFSLb  = mkfsArgRule{regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,11}$`), "a label of at most 12 letters, digits, '_', '.' or '-', starting with a letter or digit"}
	ruleOwner  = mkfsArgRule{regexp.MustCompile(`^[0-9]{1,10}:[0-9]{1,10}$`), "numeric uid:gid (root_owner=1000:1000)"}
)

func ruleEnum(vals ...string) mkfsArgRule {
	return mkfsArgRule{regexp.MustCompile(`^(` + strings.Join(vals, "|") + `)$`), "one of " + strings.Join(vals, ", ")}
}

// subRule is a comma-separated sub-option (mke2fs -E/-J, mkfs.xfs -b/-d/-i/-l/-m/-n/-s).
type subRule struct {
	bare  bool         // may be given without "=value"
	value *mkfsArgRule // nil: takes no value
}

// letterRule is what an option letter takes.
type letterRule struct {
	flag bool               // takes no argument
	arg  *mkfsArgRule       // a single value
	list *mkfsArgRule       // a comma-separated list of values of this rule (-O, -T)
	subs map[string]subRule // comma-separated sub-options
	note string             // shown in refusals
}

func rp(r mkfsArgRule) *mkfsArgRule { return &r }

var ext4Features = []string{"\\^?(has_journal", "extent", "extents", "huge_file", "flex_bg", "metadata_csum", "metadata_csum_seed",
	"64bit", "dir_nlink", "extra_isize", "sparse_super", "sparse_super2", "filetype", "resize_inode", "dir_index",
	"uninit_bg", "quota", "project", "encrypt", "casefold", "inline_data", "bigalloc", "large_file", "large_dir",
	"mmp", "fast_commit", "stable_inodes", "verity", "ea_inode", "orphan_file)"}

// mkfsRules are the allowlists, per filesystem, of mke2fs and mkfs.xfs options. Letters that name
// a path or a device are absent: mke2fs -d (copies a host directory in), -l (reads a bad-block
// file), -z (writes an undo file), -M, -J device=, -O journal_dev; mkfs.xfs -p (protofile), -c
// (config file), -l logdev=, -r (realtime device), -d file/name. So are the ones that defeat
// mkfs's own checks or do no formatting (-F, -f, -n, -N, -S), and errors=panic (a filesystem any
// writer of the volume can corrupt must not panic the host).
var mkfsRules = map[string]map[byte]letterRule{
	"ext4": {
		'b': {arg: rp(ruleEnum("1024", "2048", "4096")), note: "block size"},
		'C': {arg: rp(ruleSize), note: "cluster size (bigalloc)"},
		'e': {arg: rp(ruleEnum("continue", "remount-ro")), note: "behaviour on errors"},
		'E': {subs: map[string]subRule{
			"stride": {value: &ruleUint}, "stripe_width": {value: &ruleUint}, "stripe-width": {value: &ruleUint},
			"resize": {value: &ruleUint}, "lazy_itable_init": {bare: true, value: &ruleBool},
			"lazy_journal_init": {bare: true, value: &ruleBool}, "nodiscard": {bare: true}, "discard": {bare: true},
			"num_backup_sb": {value: rp(ruleEnum("0", "1", "2"))}, "packed_meta_blocks": {bare: true, value: &ruleBool},
			"root_owner": {bare: true, value: &ruleOwner}, "mmp_update_interval": {value: &ruleUint},
			"encoding": {value: rp(ruleEnum("utf8", "utf8-12.1"))}, "encoding_flags": {value: rp(ruleEnum("strict"))},
			"quotatype":                {value: rp(mkfsArgRule{regexp.MustCompile(`^(usrquota|grpquota|prjquota)(:(usrquota|grpquota|prjquota)){0,2}$`), "usrquota, grpquota, prjquota joined by ':'"})},
			"assume_storage_prezeroed": {bare: true, value: &ruleBool}, "orphan_file_size": {value: &ruleSize},
		}, note: "extended options"},
		'g': {arg: rp(ruleUint), note: "blocks per group"},
		'G': {arg: rp(ruleUint), note: "groups per flex group"},
		'i': {arg: rp(ruleUint), note: "bytes per inode"},
		'I': {arg: rp(ruleEnum("128", "256", "512", "1024", "2048", "4096")), note: "inode size"},
		'j': {flag: true, note: "journal"},
		'J': {subs: map[string]subRule{"size": {value: &ruleUint}, "fast_commit_size": {value: &ruleUint}}, note: "journal options"},
		'L': {arg: &ruleExt4Lb, note: "label"},
		'm': {arg: &rulePct, note: "reserved blocks percentage"},
		'N': {arg: rp(ruleUint), note: "number of inodes"},
		'O': {list: rp(mkfsArgRule{regexp.MustCompile(`^` + strings.Join(ext4Features, "|") + `$`), "feature names, each optionally prefixed with ^"}), note: "features"},
		'q': {flag: true, note: "quiet"},
		'T': {list: rp(ruleEnum("default", "small", "floppy", "news", "largefile", "largefile4", "big", "huge")), note: "usage types"},
	},
	"xfs": {
		'b': {subs: map[string]subRule{"size": {value: &ruleSize}}, note: "block size"},
		'd': {subs: map[string]subRule{
			"agcount": {value: &ruleUint}, "agsize": {value: &ruleSize}, "su": {value: &ruleSize}, "sw": {value: &ruleUint},
			"sunit": {value: &ruleUint}, "swidth": {value: &ruleUint}, "noalign": {bare: true},
			"cowextsize": {value: &ruleUint}, "extszinherit": {value: &ruleUint},
		}, note: "data section"},
		'i': {subs: map[string]subRule{
			"size": {value: &ruleSize}, "maxpct": {value: &ruleUint}, "align": {value: &ruleBool}, "attr": {value: rp(ruleEnum("2"))},
			"projid32bit": {value: &ruleBool}, "sparse": {bare: true, value: &ruleBool}, "nrext64": {value: &ruleBool},
		}, note: "inodes"},
		'K': {flag: true, note: "no discard"},
		'l': {subs: map[string]subRule{
			"size": {value: &ruleSize}, "su": {value: &ruleSize}, "sunit": {value: &ruleUint},
			"version": {value: rp(ruleEnum("2"))}, "lazy-count": {value: &ruleBool},
		}, note: "internal log"},
		'L': {arg: &ruleXFSLb, note: "label"},
		'm': {subs: map[string]subRule{
			"crc": {bare: true, value: &ruleBool}, "finobt": {bare: true, value: &ruleBool}, "rmapbt": {bare: true, value: &ruleBool},
			"reflink": {bare: true, value: &ruleBool}, "inobtcount": {bare: true, value: &ruleBool}, "bigtime": {bare: true, value: &ruleBool},
		}, note: "metadata"},
		'n': {subs: map[string]subRule{"size": {value: &ruleSize}, "version": {value: rp(ruleEnum("2", "ci"))}, "ftype": {value: &ruleBool}}, note: "naming"},
		'q': {flag: true, note: "quiet"},
		's': {subs: map[string]subRule{"size": {value: &ruleSize}}, note: "sector size"},
	},
}

// MkfsArg is one option of a checked mkfs command line: its letter and its argument (empty for
// a flag).
type MkfsArg struct {
	Letter byte
	Arg    string
	Flag   bool
}

// Tokens renders the option as separate command-line words ("-E", "stride=16").
func (a MkfsArg) Tokens() []string {
	if a.Flag {
		return []string{"-" + string(a.Letter)}
	}
	return []string{"-" + string(a.Letter), a.Arg}
}

// checkChars refuses what is not printable ASCII: NUL, newlines and other control characters,
// and every non-ASCII byte (look-alikes of '-', '/', '=' and ',' included).
func checkChars(opt, s string) error {
	if len(s) > MaxFSOptionsLen {
		return fmt.Errorf("%w: %s is %d bytes long; the limit is %d", ErrInvalid, opt, len(s), MaxFSOptionsLen)
	}
	for i, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: %s has a control character (%U at byte %d): only printable ASCII is allowed", ErrInvalid, opt, r, i)
		}
		if r > 0x7e {
			return fmt.Errorf("%w: %s has a non-ASCII character (%U at byte %d): only printable ASCII is allowed (look-alikes of '-', '/', ',' and '=' are refused)", ErrInvalid, opt, r, i)
		}
	}
	return nil
}

func allowedLetters(fstype string) string {
	rules := mkfsRules[fstype]
	ls := make([]string, 0, len(rules))
	for l, r := range rules {
		ls = append(ls, fmt.Sprintf("-%c (%s)", l, r.note))
	}
	slices.Sort(ls)
	return strings.Join(ls, ", ")
}

// keySyntax is how an allowed key is listed: k (no value), k=V (a value), k[=V] (either).
func keySyntax(k string, takesValue, bare bool) string {
	switch {
	case !takesValue:
		return k
	case bare:
		return k + "[=V]"
	default:
		return k + "=V"
	}
}

func allowedSubs(subs map[string]subRule) string {
	ks := make([]string, 0, len(subs))
	for k, s := range subs {
		ks = append(ks, keySyntax(k, s.value != nil, s.bare))
	}
	slices.Sort(ks)
	return strings.Join(ks, ", ")
}

// MkfsArgs checks mkfs tokens for fstype exactly as mke2fs and mkfs.xfs read them (getopt:
// clustered flags, "-Lname" and "-L name" alike) and returns the options they make. Every token
// is an option or an option's argument: a stray word would become mkfs's device.
func MkfsArgs(fstype string, toks []string) ([]MkfsArg, error) {
	const opt = "mkfs-options"
	rules, ok := mkfsRules[fstype]
	if !ok {
		return nil, fmt.Errorf("%w: fstype %q: allowed are %s", ErrInvalid, fstype, strings.Join(FSTypes, ", "))
	}
	total := 0
	for _, t := range toks {
		total += len(t) + 1
		if err := checkChars(opt, t); err != nil {
			return nil, err
		}
		if t == "" {
			return nil, fmt.Errorf("%w: %s has an empty word", ErrInvalid, opt)
		}
	}
	if total > MaxFSOptionsLen {
		return nil, fmt.Errorf("%w: %s is %d bytes long; the limit is %d", ErrInvalid, opt, total, MaxFSOptionsLen)
	}
	var out []MkfsArg
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		if t == "--" || strings.HasPrefix(t, "--") {
			return nil, fmt.Errorf("%w: %s %q: long options and '--' are not allowed; allowed for %s are %s", ErrInvalid, opt, t, fstype, allowedLetters(fstype))
		}
		if len(t) < 2 || t[0] != '-' {
			return nil, fmt.Errorf("%w: %s %q is not an option: every word must be an option (-X) or its value, and nothing may name a file or device; allowed for %s are %s",
				ErrInvalid, opt, t, fstype, allowedLetters(fstype))
		}
		for j := 1; j < len(t); j++ {
			l := t[j]
			r, ok := rules[l]
			if !ok {
				return nil, fmt.Errorf("%w: %s -%c is not allowed for %s; allowed are %s", ErrInvalid, opt, l, fstype, allowedLetters(fstype))
			}
			if r.flag {
				out = append(out, MkfsArg{Letter: l, Flag: true})
				continue
			}
			arg := t[j+1:]
			if arg == "" {
				if i+1 >= len(toks) {
					return nil, fmt.Errorf("%w: %s -%c needs a value (%s)", ErrInvalid, opt, l, r.note)
				}
				i++
				arg = toks[i]
			}
			if err := checkArg(fstype, l, r, arg); err != nil {
				return nil, err
			}
			out = append(out, MkfsArg{Letter: l, Arg: arg})
			break
		}
	}
	return out, nil
}

func checkArg(fstype string, l byte, r letterRule, arg string) error {
	const opt = "mkfs-options"
	switch {
	case r.arg != nil:
		if !r.arg.re.MatchString(arg) {
			return fmt.Errorf("%w: %s -%c %q: %s takes %s", ErrInvalid, opt, l, arg, r.note, r.arg.desc)
		}
	case r.list != nil:
		for _, v := range strings.Split(arg, ",") {
			if !r.list.re.MatchString(v) {
				return fmt.Errorf("%w: %s -%c %q: %q is not allowed; %s takes %s, separated by commas", ErrInvalid, opt, l, arg, v, r.note, r.list.desc)
			}
		}
	case r.subs != nil:
		for _, sub := range strings.Split(arg, ",") {
			k, v, hasV := strings.Cut(sub, "=")
			s, ok := r.subs[k]
			if !ok {
				return fmt.Errorf("%w: %s -%c %q: %q is not allowed for %s (nothing may name a file or device); allowed are %s",
					ErrInvalid, opt, l, arg, k, fstype, allowedSubs(r.subs))
			}
			switch {
			case !hasV && !s.bare:
				return fmt.Errorf("%w: %s -%c %q: %s needs a value (%s=V)", ErrInvalid, opt, l, arg, k, k)
			case hasV && s.value == nil:
				return fmt.Errorf("%w: %s -%c %q: %s takes no value", ErrInvalid, opt, l, arg, k)
			case hasV && !s.value.re.MatchString(v):
				return fmt.Errorf("%w: %s -%c %q: %s takes %s", ErrInvalid, opt, l, arg, k, s.value.desc)
			}
		}
	}
	return nil
}

// SplitMkfsOptions splits a stored mkfs-options value into words on ASCII spaces only, so that
// every other character (tabs, newlines, NUL, Unicode spaces) stays in a word, where MkfsArgs
// refuses it. Backends use it on the value they read back.
func SplitMkfsOptions(s string) []string {
	var words []string
	for _, w := range strings.Split(s, " ") {
		if w != "" {
			words = append(words, w)
		}
	}
	return words
}

// ParseMkfsOptions checks an mkfs-options value for fstype and splits it into words.
func ParseMkfsOptions(fstype, s string) ([]string, error) {
	if err := checkChars("mkfs-options", s); err != nil {
		return nil, err
	}
	toks := strings.Fields(s)
	if _, err := MkfsArgs(fstype, toks); err != nil {
		return nil, err
	}
	return toks, nil
}

// mountRule: an option that is a bare word, or key=value with a value of a rule.
type mountRule struct {
	bare  bool
	value *mkfsArgRule
}

var commonMountOptions = map[string]mountRule{
	"ro": {bare: true}, "rw": {bare: true}, "noatime": {bare: true}, "nodiratime": {bare: true}, "relatime": {bare: true},
	"strictatime": {bare: true}, "lazytime": {bare: true}, "nosuid": {bare: true}, "nodev": {bare: true},
	"noexec": {bare: true}, "exec": {bare: true}, "sync": {bare: true}, "dirsync": {bare: true},
	"discard": {bare: true}, "nodiscard": {bare: true},
}

// mountRules are the allowlists, per filesystem, beyond commonMountOptions. Absent on purpose:
// options that name a device or file (ext4 journal_path=, journal_dev=, usrjquota=, grpjquota=;
// xfs logdev=, rtdev=), suid and dev (ForcedMountFlags), errors=panic, dax, norecovery/noload
// (mounting a dirty filesystem without its journal), security contexts.
var mountRules = map[string]map[string]mountRule{
	"ext4": {
		"data": {value: rp(ruleEnum("ordered", "journal", "writeback"))}, "commit": {value: &ruleUint},
		"errors": {value: rp(ruleEnum("continue", "remount-ro"))}, "barrier": {bare: true, value: &ruleBool},
		"nobarrier": {bare: true}, "journal_checksum": {bare: true}, "nojournal_checksum": {bare: true},
		"journal_async_commit": {bare: true}, "auto_da_alloc": {bare: true, value: &ruleBool}, "noauto_da_alloc": {bare: true},
		"delalloc": {bare: true}, "nodelalloc": {bare: true}, "dioread_nolock": {bare: true}, "dioread_lock": {bare: true},
		"max_batch_time": {value: &ruleUint}, "min_batch_time": {value: &ruleUint}, "stripe": {value: &ruleUint},
		"inode_readahead_blks": {value: &ruleUint}, "init_itable": {bare: true, value: &ruleUint}, "noinit_itable": {bare: true},
		"block_validity": {bare: true}, "noblock_validity": {bare: true}, "user_xattr": {bare: true}, "acl": {bare: true},
		"noacl": {bare: true}, "quota": {bare: true}, "noquota": {bare: true}, "usrquota": {bare: true}, "grpquota": {bare: true},
		"prjquota": {bare: true}, "resuid": {value: &ruleUint}, "resgid": {value: &ruleUint}, "i_version": {bare: true},
		"nombcache": {bare: true},
	},
	"xfs": {
		"allocsize": {value: &ruleSize}, "attr2": {bare: true}, "noattr2": {bare: true}, "grpid": {bare: true},
		"bsdgroups": {bare: true}, "nogrpid": {bare: true}, "sysvgroups": {bare: true}, "filestreams": {bare: true},
		"ikeep": {bare: true}, "noikeep": {bare: true}, "inode32": {bare: true}, "inode64": {bare: true},
		"largeio": {bare: true}, "nolargeio": {bare: true}, "logbufs": {value: rp(ruleEnum("2", "3", "4", "5", "6", "7", "8"))},
		"logbsize": {value: &ruleSize}, "noalign": {bare: true}, "nouuid": {bare: true}, "swalloc": {bare: true},
		"sunit": {value: &ruleUint}, "swidth": {value: &ruleUint}, "wsync": {bare: true},
		"uquota": {bare: true}, "usrquota": {bare: true}, "quota": {bare: true}, "uqnoenforce": {bare: true},
		"qnoenforce": {bare: true}, "gquota": {bare: true}, "grpquota": {bare: true}, "gqnoenforce": {bare: true},
		"pquota": {bare: true}, "prjquota": {bare: true}, "pqnoenforce": {bare: true}, "noquota": {bare: true},
	},
}

func allowedMount(fstype string) string {
	var ks []string
	for _, m := range []map[string]mountRule{commonMountOptions, mountRules[fstype]} {
		for k, r := range m {
			ks = append(ks, keySyntax(k, r.value != nil, r.bare))
		}
	}
	slices.Sort(ks)
	return strings.Join(ks, ", ")
}

// CheckMountOptions checks a comma-separated mount-options value for fstype.
func CheckMountOptions(fstype, s string) error {
	const opt = "mount-options"
	if err := checkChars(opt, s); err != nil {
		return err
	}
	if _, ok := mountRules[fstype]; !ok {
		return fmt.Errorf("%w: fstype %q: allowed are %s", ErrInvalid, fstype, strings.Join(FSTypes, ", "))
	}
	if s == "" {
		return nil
	}
	for _, o := range strings.Split(s, ",") {
		k, v, hasV := strings.Cut(o, "=")
		r, ok := commonMountOptions[k]
		if !ok {
			r, ok = mountRules[fstype][k]
		}
		switch {
		case o == "":
			return fmt.Errorf("%w: %s %q has an empty entry: separate options with single commas", ErrInvalid, opt, s)
		case k == "suid" || k == "dev":
			return fmt.Errorf("%w: %s %q: volumes are always mounted %s (their content comes from whoever wrote them last); leave %s out", ErrInvalid, opt, o, ForcedMountFlags, k)
		case !ok:
			return fmt.Errorf("%w: %s %q is not allowed for %s (nothing may name a file or device); allowed are %s", ErrInvalid, opt, o, fstype, allowedMount(fstype))
		case !hasV && !r.bare:
			return fmt.Errorf("%w: %s %q needs a value (%s=V)", ErrInvalid, opt, o, k)
		case hasV && r.value == nil:
			return fmt.Errorf("%w: %s %q takes no value", ErrInvalid, opt, o)
		case hasV && !r.value.re.MatchString(v):
			return fmt.Errorf("%w: %s %q: %s takes %s", ErrInvalid, opt, o, k, r.value.desc)
		}
	}
	return nil
}

// MountOptionsFor checks stored mount options for fstype and adds ForcedMountFlags: what the
// Mounter gets.
func MountOptionsFor(fstype, s string) (string, error) {
	if err := CheckMountOptions(fstype, s); err != nil {
		return "", err
	}
	if s == "" {
		return ForcedMountFlags, nil
	}
	return s + "," + ForcedMountFlags, nil
}

// CheckStored checks the options of a volume as the backend returned them, before they are
// used: its fstype, mkfs-options and mount-options, which anyone able to write the RBD image's
// metadata or the Cinder volume's properties may have changed since Create. fstype is the
// volume's filesystem (its recorded one, or DEFAULT_FSTYPE). The error names the option; the
// caller names the volume.
func CheckStored(fstype string, vol Volume) error {
	if !slices.Contains(FSTypes, fstype) {
		return fmt.Errorf("%w: fstype %q: allowed are %s", ErrInvalid, fstype, strings.Join(FSTypes, ", "))
	}
	if _, err := MkfsArgs(fstype, vol.MkfsOptions); err != nil {
		return err
	}
	if err := CheckRoot(vol.Root); err != nil {
		return err
	}
	if err := CheckAccess(vol.Access); err != nil {
		return err
	}
	return CheckMountOptions(fstype, vol.MountOptions)
}

// storedRefusal is Mount's answer to a volume whose stored options fail CheckStored.
func storedRefusal(name string, err error) error {
	return fmt.Errorf("mount volume %s: refused, nothing was formatted or mounted: the options stored with the volume are not allowed: %w. "+
		"They are read from the volume's RBD image metadata or Cinder volume properties (keys docker-plugin.fstype, docker-plugin.mkfs-options, "+
		"docker-plugin.mount-options, docker-plugin.uid, docker-plugin.gid, docker-plugin.mode, docker-plugin.lost-found, docker-plugin.access), which were changed after it was created: remove the bad key (rbd image-meta remove POOL/IMAGE KEY; "+
		"openstack volume unset --property KEY VOLUME) or set it to allowed options, then mount again", name, err)
}

// checkFound decides about the filesystem a device carries (found) when the volume records
// another (recorded): only the filesystems the plugin makes are mounted; a supported one other
// than recorded (an operator reformatted the volume, or it was copied from another one) is
// mounted with the mount options checked again for it.
func checkFound(name, recorded, found, mountOptions string) error {
	if !slices.Contains(FSTypes, found) {
		return fmt.Errorf("mount volume %s: %w: its device carries a %s filesystem, and the plugin mounts only %s (the host kernel would parse a filesystem the plugin did not make, which whoever wrote the volume controls): "+
			"copy the data out elsewhere (for example in a VM) and remove the volume, or reformat it as %s by hand", name, ErrInvalid, found, strings.Join(FSTypes, " and "), recorded)
	}
	if found != recorded {
		if err := CheckMountOptions(found, mountOptions); err != nil {
			return fmt.Errorf("mount volume %s: the device carries %s while %s was recorded, and its stored mount-options do not apply to %s: %w; set docker-plugin.mount-options to options for %s (or remove it)",
				name, found, recorded, found, err, found)
		}
	}
	return nil
}
