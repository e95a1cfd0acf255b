package driver

import (
	"fmt"
	"strings"
)

// What both backends store with a volume they create (RBD image metadata, Cinder volume
// metadata), under the same keys, and read back with it: the options the plugin applies at Mount
// and the front end that created it. A backend adds keys of its own (creation time, managed-by).

// MetaPrefix begins every key the plugin stores with a volume.
const MetaPrefix = "docker-plugin."

// The keys of the stored options.
const (
	MetaFSType       = MetaPrefix + "fstype"
	MetaMkfsOptions  = MetaPrefix + "mkfs-options"
	MetaMountOptions = MetaPrefix + "mount-options"
	// MetaFrontEnd is the front end that created the volume (FrontEndVolume or FrontEndCSI), so
	// that each front end refuses the other's volumes (frontend.go).
	MetaFrontEnd = MetaPrefix + "front-end"
)

// StoredMeta is the metadata a backend stores with a volume created with opts: its filesystem,
// mkfs and mount options, root options, its access (readonly only), and the front end that
// created it. Options not given
// store nothing.
func StoredMeta(opts Options) map[string]string {
	meta := map[string]string{MetaFSType: opts.FSType}
	if len(opts.MkfsOptions) > 0 {
		meta[MetaMkfsOptions] = strings.Join(opts.MkfsOptions, " ")
	}
	if opts.MountOptions != "" {
		meta[MetaMountOptions] = opts.MountOptions
	}
	for k, v := range opts.Root.Meta() {
		meta[MetaPrefix+k] = v
	}
	if opts.FrontEnd != "" {
		meta[MetaFrontEnd] = opts.FrontEnd
	}
	if opts.Access == AccessReadOnly {
		meta[MetaAccess] = opts.Access
	}
	return meta
}

// SetStored fills what StoredMeta stored into vol, from get (the value of a key, "" when absent).
// The values are kept as stored: CheckStored and CheckRoot, run at every Mount, refuse a bad one.
func (vol *Volume) SetStored(get func(key string) string) {
	vol.FSType = get(MetaFSType)
	vol.MountOptions = get(MetaMountOptions)
	vol.FrontEnd = get(MetaFrontEnd)
	vol.Access = get(MetaAccess)
	vol.Root = RootFromMeta(func(k string) string { return get(MetaPrefix + k) })
	vol.MkfsOptions = nil
	if v := get(MetaMkfsOptions); v != "" {
		vol.MkfsOptions = SplitMkfsOptions(v)
	}
}

// gave says whether the request gave option key (true when Given is not known).
func (o Options) gave(key string) bool { return o.Given == nil || o.Given[key] }

// CopyOf is what a volume copied from src (-o from-volume) is created with: the options the
// request gave, and src's stored options for the others (its filesystem, mkfs and mount options,
// root options), since the copy carries src's filesystem. An fstype other than src's is refused;
// so is a size below src's (a larger one grows the copy). Without -o size the copy has src's size.
func (o Options) CopyOf(src Volume) (Options, error) {
	c := o
	if src.FSType != "" {
		if o.gave(OptFSType) && o.FSType != src.FSType {
			return o, fmt.Errorf("%w: fstype %s: volume %s holds a %s filesystem, which its copy keeps; leave -o fstype out",
				ErrInvalid, o.FSType, src.Name, src.FSType)
		}
		c.FSType = src.FSType
	}
	if !o.gave(OptMkfsOptions) {
		c.MkfsOptions = src.MkfsOptions
	}
	if !o.gave(OptMountOptions) {
		c.MountOptions = src.MountOptions
	}
	for _, kv := range src.Root.pairs() {
		if !o.gave(kv[0]) {
			c.Root.set(kv[0], kv[1])
		}
	}
	switch {
	case !o.SizeGiven:
		c.Size = src.Size
	case o.Size < src.Size:
		return o, fmt.Errorf("%w: size %s is smaller than volume %s (%s): a copy cannot be shrunk; leave -o size out or give at least %s",
			ErrInvalid, FormatSize(o.Size), src.Name, FormatSize(src.Size), FormatSize(src.Size))
	}
	return c, nil
}
