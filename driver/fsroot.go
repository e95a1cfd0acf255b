package driver

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"
)

// Volume root options: who owns the root directory of a volume's filesystem, its mode, and
// whether lost+found stays in it. They are applied once, when the plugin formats the volume (its
// first Mount anywhere); a filesystem that exists already is never changed (a Mount that finds
// its root different says so in the log), since its owner may have changed it on purpose and a
// chown would fight them on every Mount.
const (
	OptUID       = "uid"
	OptGID       = "gid"
	OptMode      = "mode"
	OptLostFound = "lost-found"
)

// RootOptions are a volume's root options as given and stored, in canonical form ("" when not
// set): UID and GID decimal, Mode octal with a leading 0, LostFound "keep" or "remove". The zero
// value sets nothing (root:root 0755 and lost+found kept, what mkfs makes).
type RootOptions struct {
	UID, GID, Mode, LostFound string
}

// maxID is the largest uid or gid accepted: 2^32-2 (2^32-1 is chown's "no change").
const maxID = 1<<32 - 2

// modeMask is what mode may set: the permission bits, the sticky bit and setgid (new files then
// take the directory's group). Setuid is refused: it means nothing on a directory, and a value
// that carries it was written for something else.
const modeMask = 0o3777

// IsZero says no root option is set.
func (r RootOptions) IsZero() bool { return r == RootOptions{} }

// String renders the options set, as -o would give them ("uid=999 gid=999"), for logs and errors.
func (r RootOptions) String() string {
	var parts []string
	for _, kv := range r.pairs() {
		if kv[1] != "" {
			parts = append(parts, kv[0]+"="+kv[1])
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

func (r RootOptions) pairs() [][2]string {
	return [][2]string{{OptUID, r.UID}, {OptGID, r.GID}, {OptMode, r.Mode}, {OptLostFound, r.LostFound}}
}

// Meta is what a backend stores with the volume: each option set, under its option key (the
// backend adds its own prefix, "docker-plugin.").
func (r RootOptions) Meta() map[string]string {
	m := map[string]string{}
	for _, kv := range r.pairs() {
		if kv[1] != "" {
			m[kv[0]] = kv[1]
		}
	}
	return m
}

// RootFromMeta reads the root options a backend stored (get returns the value of an option key,
// "" when absent). The values are kept as stored: CheckRoot, run at every Mount, refuses a bad one
// (anyone who can write the image's metadata or the volume's properties can write them).
func RootFromMeta(get func(key string) string) RootOptions {
	return RootOptions{UID: get(OptUID), GID: get(OptGID), Mode: get(OptMode), LostFound: get(OptLostFound)}
}

// ParseID reads a uid or gid: decimal digits only, 0 to 4294967294; the canonical form drops
// leading zeros.
func ParseID(opt, s string) (string, error) {
	if s == "" || len(s) > 10 || strings.Trim(s, "0123456789") != "" {
		return "", fmt.Errorf("%w: %s %q: use a numeric id from 0 to %d (names are not resolved: the host's users are not the container's)", ErrInvalid, opt, s, maxID)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > maxID {
		return "", fmt.Errorf("%w: %s %q: use a numeric id from 0 to %d", ErrInvalid, opt, s, maxID)
	}
	return strconv.FormatUint(n, 10), nil
}

// ParseMode reads a directory mode in octal (750, 0750, 1777, 2770): permission bits, sticky
// and setgid; the canonical form has four digits.
func ParseMode(s string) (string, error) {
	if s == "" || len(s) > 5 || strings.Trim(s, "01234567") != "" {
		return "", fmt.Errorf("%w: mode %q: use octal permission bits such as 755, 0750 or 1777", ErrInvalid, s)
	}
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n&^modeMask != 0 {
		return "", fmt.Errorf("%w: mode %q: only permission bits, sticky (1000) and setgid (2000) are allowed; setuid (4000) and higher bits are refused", ErrInvalid, s)
	}
	return fmt.Sprintf("%04o", n), nil
}

// ParseLostFound reads the lost-found option.
func ParseLostFound(s string) (string, error) {
	if s != "keep" && s != "remove" {
		return "", fmt.Errorf("%w: lost-found %q: use keep or remove", ErrInvalid, s)
	}
	return s, nil
}

// parseRootOption canonicalises the value of one root option key; ok is false for other keys.
func parseRootOption(k, v string) (string, bool, error) {
	var out string
	var err error
	switch k {
	case OptUID, OptGID:
		out, err = ParseID(k, v)
	case OptMode:
		out, err = ParseMode(v)
	case OptLostFound:
		out, err = ParseLostFound(v)
	default:
		return "", false, nil
	}
	return out, true, err
}

// set stores one canonical value under its key.
func (r *RootOptions) set(k, v string) {
	switch k {
	case OptUID:
		r.UID = v
	case OptGID:
		r.GID = v
	case OptMode:
		r.Mode = v
	case OptLostFound:
		r.LostFound = v
	}
}

// CheckRoot checks root options read back from a backend; the error names the option.
func CheckRoot(r RootOptions) error {
	for _, kv := range r.pairs() {
		if kv[1] == "" {
			continue
		}
		if _, _, err := parseRootOption(kv[0], kv[1]); err != nil {
			return err
		}
	}
	return nil
}

// RootSpec is what the filesystem's root gets when the plugin formats a volume: -1 leaves the
// uid, gid or mode as mkfs made them.
type RootSpec struct {
	UID, GID, Mode  int64
	RemoveLostFound bool
}

// Spec resolves checked options. lost+found stays unless asked (lost-found=remove): Docker copies
// an image's directory into an *empty* volume at its first use, and with it that directory's
// owner and mode onto the volume's root (moby's copy-up; measured with dockerd 20.10 and 28: the
// root of a uid=999 volume without lost+found became root:root 0755, busybox's mount point), so
// an ext4 with lost+found (never empty) keeps the owner the plugin gave it. Images that refuse a
// data directory that is not empty (postgres, mysql) want lost-found=remove; their own directory
// then gives the root its owner, or `-v NAME:/path:nocopy` keeps the plugin's. An ext4 without
// lost+found is consistent (e2fsck -n reports nothing; e2fsck -p makes it again when it repairs).
func (r RootOptions) Spec() RootSpec {
	num := func(s string, base int) int64 {
		if s == "" {
			return -1
		}
		n, err := strconv.ParseInt(s, base, 64)
		if err != nil {
			return -1
		}
		return n
	}
	s := RootSpec{UID: num(r.UID, 10), GID: num(r.GID, 10), Mode: num(r.Mode, 8)}
	s.RemoveLostFound = r.LostFound == "remove"
	return s
}

// RootInfo is what the root directory of a mounted filesystem has.
type RootInfo struct {
	UID, GID, Mode uint32 // Mode: permission, sticky and setgid bits
	LostFound      bool   // it holds lost+found
}

// rootDifferences lists what info does not have of what r asks for ("uid 999 (it has 0)").
func rootDifferences(r RootOptions, info RootInfo) []string {
	s := r.Spec()
	var diffs []string
	if s.UID >= 0 && uint32(s.UID) != info.UID {
		diffs = append(diffs, fmt.Sprintf("uid %d (it has %d)", s.UID, info.UID))
	}
	if s.GID >= 0 && uint32(s.GID) != info.GID {
		diffs = append(diffs, fmt.Sprintf("gid %d (it has %d)", s.GID, info.GID))
	}
	if s.Mode >= 0 && uint32(s.Mode) != info.Mode {
		diffs = append(diffs, fmt.Sprintf("mode %04o (it has %04o)", s.Mode, info.Mode))
	}
	return diffs
}

// rootCompatible lists the root options given to a Create (raw) that the existing volume does
// not record: an existing filesystem is never changed, so a request for another owner is refused
// like any other option difference.
func rootCompatible(raw map[string]string, vol Volume, opts Options) []string {
	var diffs []string
	for _, k := range slices.Sorted(maps.Keys(opts.Root.Meta())) {
		if _, given := raw[k]; !given {
			continue
		}
		want, have := opts.Root.Meta()[k], vol.Root.Meta()[k]
		if want != have {
			if have == "" {
				have = "none recorded"
			}
			diffs = append(diffs, fmt.Sprintf("%s %s (it has %s)", k, want, have))
		}
	}
	return diffs
}

// FSAdmin changes and measures mounted filesystems: the root options at the first format, and
// growing. volfs.FS implements it.
type FSAdmin interface {
	// SetRoot applies spec to the root of the filesystem mounted at path.
	SetRoot(ctx context.Context, path string, spec RootSpec) error
	// RootOf describes the root directory of the filesystem mounted at path.
	RootOf(ctx context.Context, path string) (RootInfo, error)
	// Sizes returns the size of dev and of the fstype filesystem on it, in bytes; path is where
	// it is mounted ("" when it is not).
	Sizes(ctx context.Context, dev, path, fstype string) (Sizes, error)
	// Grow grows the fstype filesystem on dev, mounted at path ("": not mounted, ext4 only), to
	// the size of dev.
	Grow(ctx context.Context, dev, path, fstype string) error
	// OnlineGrowError says why a mounted fstype filesystem cannot be grown by this process (nil:
	// it can).
	OnlineGrowError(fstype string) error
}

// setUpRoot runs after the first mount of a volume on this host: made says the plugin has just
// formatted it. A new filesystem gets the volume's root options; an existing one is only
// compared with them, and a difference is logged (never changed).
func (d *Driver) setUpRoot(ctx context.Context, name, path string, root RootOptions, made bool) error {
	if root.IsZero() {
		return nil
	}
	log := d.log.WithFields(logrus.Fields{"volume": name, "root": root.String()})
	if d.cfg.FS == nil {
		log.Warn("this plugin was built without filesystem administration: the volume's root options are not applied")
		return nil
	}
	if made {
		if err := d.cfg.FS.SetRoot(ctx, path, root.Spec()); err != nil {
			return fmt.Errorf("set the root of the new filesystem (%s): %w", root, err)
		}
		log.Info("new filesystem: root options applied")
		return nil
	}
	info, err := d.cfg.FS.RootOf(ctx, path)
	if err != nil {
		log.WithError(err).Warn("could not read the root directory to compare it with the volume's root options")
		return nil
	}
	if diffs := rootDifferences(root, info); len(diffs) > 0 {
		log.WithField("differences", strings.Join(diffs, ", ")).Warn("the filesystem's root differs from the volume's root options; " +
			"they apply only when the plugin formats a volume, and an existing filesystem is left as it is: chown/chmod its root from a container if it should change")
	}
	return nil
}
