package driver

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// Read-only sharing. A volume's access (-o access, stored with the volume) is readwrite (the
// default: one host at a time, read-write) or readonly: mapped read-only, and held by any number of
// hosts at once, never beside a read-write holder. A use may also ask for a shared read-only claim
// of a readwrite volume (CSI's MULTI_NODE_READER_ONLY), or require a writable one.

// OptAccess is the -o key of a volume's access.
const OptAccess = "access"

// The values of -o access.
const (
	AccessReadWrite = "readwrite"
	AccessReadOnly  = "readonly"
)

// MetaAccess is the key a backend stores a readonly volume's access under (nothing is stored for
// readwrite). An operator switches a volume by setting it (rbd image-meta set POOL/IMAGE
// docker-plugin.access readonly; openstack volume set --property docker-plugin.access=readonly
// VOLUME): the next first Mount on a host reads it.
const MetaAccess = MetaPrefix + OptAccess

// CheckAccess refuses an access value other than "" (readwrite), readwrite and readonly: it is
// read back from the volume's metadata, which whoever can write the image's metadata controls.
func CheckAccess(v string) error {
	switch v {
	case "", AccessReadWrite, AccessReadOnly:
		return nil
	}
	return fmt.Errorf("%w: access %q: allowed are %s and %s", ErrInvalid, v, AccessReadWrite, AccessReadOnly)
}

// ErrReadOnly marks the refusals of a volume mapped read-only: a writable use, a first mount of a
// blank device (it cannot be formatted), a filesystem whose journal must be replayed. They wrap
// ErrInvalid too (their messages are unchanged); a front end that tells a bad argument from a
// volume's state (CSI: FailedPrecondition) tests for ErrReadOnly.
var ErrReadOnly = errors.New("read-only")

// readOnlyErr is err marked with ErrReadOnly, with err's message.
type readOnlyErr struct{ error }

func (e readOnlyErr) Unwrap() error        { return e.error }
func (e readOnlyErr) Is(target error) bool { return target == ErrReadOnly }

// ReadOnly says the volume's access is readonly.
func (vol Volume) ReadOnly() bool { return vol.Access == AccessReadOnly }

// Use is what a use of a volume asks of it.
type Use struct {
	// Raw: mapped without a filesystem (CSI's block access type).
	Raw bool
	// ReadOnly asks for a shared read-only claim (many hosts, no writer), whatever the volume's
	// access.
	ReadOnly bool
	// Writable refuses a volume that the backend maps read-only (access=readonly).
	Writable bool
	// replay: the plugin's own exclusive read-write use of a volume to be used read-only, to
	// replay its journal (replay.go, AttachRequest.IgnoreAccess).
	replay bool
}

// sameUse says whether a new use of a volume up on this host can share it: the same raw-ness and
// the same read-only mapping.
func sameUse(st *State, u Use) error {
	if st.Raw != u.Raw {
		return fmt.Errorf("%w: volume %s is in use on this host %s; a use %s must wait until it is released",
			ErrInUse, st.Name, usedAs(st.Raw), usedAs(u.Raw))
	}
	ro := st.Attach.Map.ReadOnly
	switch {
	case u.ReadOnly && !ro:
		return fmt.Errorf("%w: volume %s is in use read-write on this host; a shared read-only use must wait until it is released", ErrInUse, st.Name)
	case u.Writable && ro:
		return readOnlyRefusal(st.Name)
	}
	return nil
}

// readOnlyRefusal refuses a writable use of a volume mapped read-only.
func readOnlyRefusal(name string) error {
	return readOnlyErr{fmt.Errorf("%w: volume %s is read-only (access=readonly, or held read-only by other hosts): it can be used only read-only; "+
		"to write it, unmount it on every host and set its access to readwrite (rbd image-meta remove POOL/IMAGE %s; openstack volume unset --property %s VOLUME)",
		ErrInvalid, name, MetaAccess, MetaAccess)}
}

// noFilesystemReadOnly refuses a read-only first mount of a blank device: it cannot be formatted.
func noFilesystemReadOnly(name string) error {
	return readOnlyErr{fmt.Errorf("mount volume %s: %w: the volume is read-only and has no filesystem yet, so it cannot be formatted; "+
		"make it from a volume with data (-o from-volume=SOURCE), or set its access to readwrite (rbd image-meta remove POOL/IMAGE %s), fill it, and set it back",
		name, ErrInvalid, MetaAccess)}
}

// readOnlyMountError explains a read-only mount the kernel refused with EROFS: the filesystem's
// journal (ext4) or log (xfs) needs recovery, which a read-only device cannot have. It is
// marked errNeedsReplay: the first read-only use replays it (replay.go); a user sees this
// message only when that replay could not help.
func readOnlyMountError(name string, err error) error {
	if !errors.Is(err, syscall.EROFS) {
		return fmt.Errorf("mount volume %s read-only: %w", name, err)
	}
	return readOnlyErr{fmt.Errorf("mount volume %s read-only: %w: its last writer did not unmount it cleanly, and its journal must be replayed, which a read-only mapping cannot do (%w): "+
		"set its access to readwrite (rbd image-meta remove POOL/IMAGE %s), mount it once on one host, stop it, and set it back to readonly", name, err, errNeedsReplay, MetaAccess)}
}

// OptFromVolume is the -o key of a copy's source (each backend accepts it: BackendOptions).
const OptFromVolume = "from-volume"

// withReadOnly adds ro to mount options (replacing an rw).
func withReadOnly(opts string) string {
	var out []string
	for _, o := range strings.Split(opts, ",") {
		if o != "" && o != "rw" && o != "ro" {
			out = append(out, o)
		}
	}
	return strings.Join(append(out, "ro"), ",")
}
