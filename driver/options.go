package driver

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Common option keys (every backend).
const (
	OptSize         = "size"
	OptFSType       = "fstype"
	OptMkfsOptions  = "mkfs-options"
	OptMountOptions = "mount-options"
)

// FSTypes are the filesystems the plugin formats and mounts.
var FSTypes = []string{"ext4", "xfs"}

const (
	minSize    = 16 << 20  // smallest volume (ext4 needs a few MiB)
	minXFSSize = 300 << 20 // xfsprogs 6 refuses smaller filesystems
	maxSize    = 1 << 50   // 1 PiB
	maxNameLen = 200
)

// nameChars says whether name matches [A-Za-z0-9][A-Za-z0-9_.-]* (by hand: List checks every
// name of the pool, and a regexp costs 45 ms of CPU for 100,000 names).
func nameChars(name string) bool {
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return name != ""
}

// ValidateName checks a Docker volume name: Docker's own rule ([A-Za-z0-9][A-Za-z0-9_.-]*), at
// most 200 bytes; it becomes an image name and a directory name, so no path tricks.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: the volume name is empty", ErrInvalid)
	case len(name) > maxNameLen:
		return fmt.Errorf("%w: volume name %.40q... is %d bytes long; the limit is %d", ErrInvalid, name, len(name), maxNameLen)
	case !nameChars(name):
		return fmt.Errorf("%w: volume name %q may contain only letters, digits, '_', '.' and '-', and must start with a letter or digit", ErrInvalid, name)
	}
	return nil
}

var sizeRE = regexp.MustCompile(`^([0-9]+)\s*([KMGTP]?)(I?B)?$`)

// ParseSize reads a size: a bare number is GiB ("10"), or a number with a unit: K, M, G, T, P
// (binary: 512M = 512 MiB; "GiB" and "GB" are accepted as G).
func ParseSize(s string) (uint64, error) {
	m := sizeRE.FindStringSubmatch(strings.ToUpper(strings.TrimSpace(s)))
	if m == nil {
		return 0, fmt.Errorf("%w: size %q: use a number of GiB (10) or a number with a unit (512M, 10G, 1T)", ErrInvalid, s)
	}
	n, err := strconv.ParseUint(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: size %q: %v", ErrInvalid, s, err)
	}
	shift := map[string]uint{"": 30, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50}[m[2]]
	if n > maxSize>>shift {
		return 0, fmt.Errorf("%w: size %q is larger than the 1P limit", ErrInvalid, s)
	}
	return n << shift, nil
}

// FormatSize renders bytes as the largest exact binary unit ("10G", "512M").
func FormatSize(b uint64) string {
	for _, u := range []struct {
		s     string
		shift uint
	}{{"P", 50}, {"T", 40}, {"G", 30}, {"M", 20}, {"K", 10}} {
		if b >= 1<<u.shift && b%(1<<u.shift) == 0 {
			return strconv.FormatUint(b>>u.shift, 10) + u.s
		}
	}
	return strconv.FormatUint(b, 10) + "B"
}

// OptionDefaults are what Options get when -o leaves them out.
type OptionDefaults struct {
	Size   uint64
	FSType string
	// Root are the root options (DEFAULT_UID, DEFAULT_GID, DEFAULT_MODE) a volume records when
	// -o leaves them out, in canonical form.
	Root RootOptions
}

// ParseOptions validates `docker volume create -o` options. Unknown keys and bad values are
// errors naming the option and what is allowed; backendKeys are the backend's own keys.
func ParseOptions(raw map[string]string, def OptionDefaults, backendKeys []string) (Options, error) {
	o := Options{Size: def.Size, FSType: def.FSType, Root: def.Root, Backend: map[string]string{}}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var errs []string
	for _, k := range keys {
		v := raw[k]
		var err error
		switch k {
		case OptSize:
			o.Size, err = ParseSize(v)
			o.SizeGiven = true
		case OptFSType:
			if !slices.Contains(FSTypes, v) {
				err = fmt.Errorf("%w: fstype %q: allowed are %s", ErrInvalid, v, strings.Join(FSTypes, ", "))
			}
			o.FSType = v
		case OptMkfsOptions, OptMountOptions:
			// Checked below, against the filesystem they are for.
		case OptAccess:
			if v == "" {
				v = AccessReadWrite
			}
			err = CheckAccess(v)
			o.Access = v
		case OptUID, OptGID, OptMode, OptLostFound:
			var c string
			c, _, err = parseRootOption(k, v)
			o.Root.set(k, c)
		default:
			if !slices.Contains(backendKeys, k) {
				allowed := append([]string{OptSize, OptFSType, OptMkfsOptions, OptMountOptions, OptUID, OptGID, OptMode, OptLostFound, OptAccess}, backendKeys...)
				err = fmt.Errorf("%w: unknown option %q: allowed are %s", ErrInvalid, k, strings.Join(allowed, ", "))
			} else if strings.ContainsAny(v, "\x00\n") || len(v) > 512 {
				err = fmt.Errorf("%w: option %s: value is not a single line of at most 512 bytes", ErrInvalid, k)
			}
			o.Backend[k] = v
		}
		if err != nil {
			errs = append(errs, strings.TrimPrefix(err.Error(), ErrInvalid.Error()+": "))
		}
	}
	if slices.Contains(FSTypes, o.FSType) {
		if v, ok := raw[OptMkfsOptions]; ok {
			var err error
			if o.MkfsOptions, err = ParseMkfsOptions(o.FSType, v); err != nil {
				errs = append(errs, strings.TrimPrefix(err.Error(), ErrInvalid.Error()+": "))
			}
		}
		if v, ok := raw[OptMountOptions]; ok {
			err := checkChars(OptMountOptions, v)
			if v = strings.Trim(v, " "); err == nil {
				err = CheckMountOptions(o.FSType, v)
			}
			if err != nil {
				errs = append(errs, strings.TrimPrefix(err.Error(), ErrInvalid.Error()+": "))
			}
			o.MountOptions = v
		}
	}
	if len(errs) == 0 {
		switch {
		case o.Size < minSize:
			errs = append(errs, fmt.Sprintf("size %s is below the minimum of 16M", FormatSize(o.Size)))
		case o.FSType == "xfs" && o.Size < minXFSSize:
			errs = append(errs, fmt.Sprintf("size %s is too small for xfs (minimum 300M)", FormatSize(o.Size)))
		}
	}
	if len(errs) > 0 {
		return Options{}, fmt.Errorf("%w: %s", ErrInvalid, strings.Join(errs, "; "))
	}
	return o, nil
}
