package driver

import "strings"

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
