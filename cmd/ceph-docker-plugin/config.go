package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/sirupsen/logrus"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/rbd"
)

// Config is every setting of the plugin, read from the environment (the managed plugin's
// settable env) and validated at once.
type Config struct {
	Backend       string
	CephConf      string
	CephCluster   string
	CephUser      string
	CephKeyring   string
	Pool          string
	DataPool      string
	Features      []string
	DefaultSize   uint64
	DefaultFSType string
	DefaultRoot   driver.RootOptions
	GrowInterval  time.Duration // 0: off
	Mapper        string
	MountRoot     string
	StateDir      string
	Socket        string
	Protocol      string
	CSIEndpoint   string
	RemoveAction  driver.RemoveAction
	LockBreak     bool
	LogLevel      logrus.Level
	LogFormat     string
	CallTimeout   time.Duration
	CephTimeout   time.Duration
	NodeName      string
	MetricsAddr   string // "" when off
	OpenStack     OpenStack
	// FaultKillAt is for crash tests only: the process kills itself with SIGKILL at that step.
	FaultKillAt string
	// BootID overrides the kernel's boot ID (tests only: a restart with another one is a reboot).
	BootID string
}

// OpenStack are the Keystone settings, as the openstack CLI reads them.
type OpenStack struct {
	AuthURL, Username, Password, UserDomain, ProjectID, ProjectName, ProjectDomain, Region string
	AppCredID, AppCredSecret, CACert                                                       string
}

// openstackAuth is the Keystone authentication of the OS_* settings, as the plugin uses it.
func openstackAuth(o OpenStack) gophercloud.AuthOptions {
	auth := gophercloud.AuthOptions{
		IdentityEndpoint: o.AuthURL, Username: o.Username, Password: o.Password, DomainName: o.UserDomain,
		TenantID: o.ProjectID, ApplicationCredentialID: o.AppCredID, ApplicationCredentialSecret: o.AppCredSecret,
	}
	if o.AppCredID != "" {
		auth.Username, auth.Password, auth.DomainName, auth.TenantID = "", "", "", ""
	} else if o.ProjectID == "" {
		auth.Scope = &gophercloud.AuthScope{ProjectName: o.ProjectName, DomainName: o.ProjectDomain}
	}
	return auth
}

// Setting describes one environment setting: its name, default and meaning (config.json and the
// README are generated from the same list).
type Setting struct {
	Name, Default, Help string
}

// DefaultMetricsAddr is where METRICS_ADDR=on serves: loopback only, as metrics name volumes.
const DefaultMetricsAddr = "127.0.0.1:9380"

// Settings lists every setting with its default.
var Settings = []Setting{
	{"BACKEND", "rbd", "rbd (images directly in Ceph) or cinder (Cinder volumes via Keystone)"},
	{"CEPH_CONF", "/etc/ceph/ceph.conf", "cluster config"},
	{"CEPH_CLUSTER", "ceph", "cluster name"},
	{"CEPH_USER", "admin", "cephx client name without client. (use a 'profile rbd' user)"},
	{"CEPH_KEYRING", "", "keyring path (empty: /etc/ceph/$cluster.client.$user.keyring, ...)"},
	{"RBD_POOL", "volumes", "default pool"},
	{"RBD_DATA_POOL", "", "optional data pool (erasure-coded)"},
	{"RBD_FEATURES", "layering,exclusive-lock,object-map,fast-diff,deep-flatten", "image features for new images"},
	{"DEFAULT_SIZE", "10G", "size when -o size is absent"},
	{"DEFAULT_FSTYPE", "ext4", "ext4 or xfs"},
	{"DEFAULT_UID", "", "owner (numeric uid) of a new volume's root directory when -o uid is absent (empty: root)"},
	{"DEFAULT_GID", "", "group (numeric gid) of a new volume's root directory when -o gid is absent (empty: root)"},
	{"DEFAULT_MODE", "", "mode (octal) of a new volume's root directory when -o mode is absent (empty: 0755)"},
	{"GROW_INTERVAL", "30s", "how often mounted volumes are checked for a grown image, whose filesystem is then grown (off: only at Mount)"},
	{"MAPPER", "auto", "krbd, fuse (rbd-fuse + loop, for kernels without rbd) or auto"},
	{"MOUNT_ROOT", "/mnt/volumes", "where volumes are mounted (the plugin's PropagatedMount)"},
	{"STATE_DIR", "/mnt/volumes/.state", "persisted state"},
	{"PLUGIN_SOCKET", "/run/docker/plugins/ceph.sock", "unix socket the daemon talks to"},
	{"PROTOCOL", "volume", "volume (docker.volumedriver/1.0 on PLUGIN_SOCKET) or csi (swarm cluster volumes: CSI on CSI_ENDPOINT)"},
	{"CSI_ENDPOINT", "unix:///run/docker/plugins/csi.sock", "PROTOCOL=csi: the CSI gRPC endpoint (unix:///path)"},
	{"REMOVE_ACTION", "delete", "delete, trash (rbd trash, recoverable) or keep (Docker forgets it; the data stays as NAME~removed-TIME)"},
	{"LOCK_BREAK", "off", "on: take over a volume whose holder is dead, after fencing it (blocklist)"},
	{"LOG_LEVEL", "info", "logrus level; debug logs every request with its duration"},
	{"LOG_FORMAT", "text", "text or json"},
	{"CALL_TIMEOUT", "50s", "deadline of each Docker request (the daemon gives up at 60 s)"},
	{"CEPH_TIMEOUT", "20s", "deadline of each single Ceph operation"},
	{"NODE_NAME", "", "this host's name as other hosts see it (empty: the hostname)"},
	{"METRICS_ADDR", "", "Prometheus metrics at http://ADDR/metrics: off (empty), on (127.0.0.1:9380) or HOST:PORT"},
	{"OS_AUTH_URL", "", "BACKEND=cinder: Keystone v3 URL"},
	{"OS_USERNAME", "", "BACKEND=cinder: Keystone user (or use an application credential)"},
	{"OS_PASSWORD", "", "BACKEND=cinder: its password"},
	{"OS_USER_DOMAIN_NAME", "Default", "BACKEND=cinder: the user's domain"},
	{"OS_PROJECT_ID", "", "BACKEND=cinder: project ID (or OS_PROJECT_NAME)"},
	{"OS_PROJECT_NAME", "", "BACKEND=cinder: project name (with OS_PROJECT_DOMAIN_NAME)"},
	{"OS_PROJECT_DOMAIN_NAME", "Default", "BACKEND=cinder: the project's domain"},
	{"OS_REGION_NAME", "", "BACKEND=cinder: region of the Cinder endpoint"},
	{"OS_APPLICATION_CREDENTIAL_ID", "", "BACKEND=cinder: application credential ID (instead of user/password)"},
	{"OS_APPLICATION_CREDENTIAL_SECRET", "", "BACKEND=cinder: application credential secret"},
	{"OS_CACERT", "", "BACKEND=cinder: CA bundle for TLS to Keystone and Cinder"},
}

// LoadConfig reads the settings through getenv and reports every bad one together.
func LoadConfig(getenv func(string) string) (Config, error) {
	get := func(name string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		for _, s := range Settings {
			if s.Name == name {
				return s.Default
			}
		}
		return ""
	}
	var errs []string
	bad := func(name, v, allowed string) { errs = append(errs, fmt.Sprintf("%s=%q: %s", name, v, allowed)) }
	oneOf := func(name string, allowed ...string) string {
		v := get(name)
		if !slices.Contains(allowed, v) {
			bad(name, v, "allowed are "+strings.Join(allowed, ", "))
		}
		return v
	}
	duration := func(name string) time.Duration {
		v := get(name)
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second || d > 10*time.Minute {
			bad(name, v, "a duration between 1s and 10m, such as 50s")
		}
		return d
	}
	absPath := func(name string) string {
		v := get(name)
		if !filepath.IsAbs(v) {
			bad(name, v, "an absolute path")
		}
		return filepath.Clean(v)
	}

	c := Config{
		Backend:       oneOf("BACKEND", "rbd", "cinder"),
		CephConf:      absPath("CEPH_CONF"),
		CephCluster:   get("CEPH_CLUSTER"),
		CephUser:      strings.TrimPrefix(get("CEPH_USER"), "client."),
		CephKeyring:   get("CEPH_KEYRING"),
		Pool:          get("RBD_POOL"),
		DataPool:      get("RBD_DATA_POOL"),
		DefaultFSType: oneOf("DEFAULT_FSTYPE", driver.FSTypes...),
		Mapper:        oneOf("MAPPER", "auto", "krbd", "fuse"),
		MountRoot:     absPath("MOUNT_ROOT"),
		StateDir:      absPath("STATE_DIR"),
		Socket:        absPath("PLUGIN_SOCKET"),
		Protocol:      oneOf("PROTOCOL", driver.FrontEndVolume, driver.FrontEndCSI), // recorded with each volume as its front end
		CSIEndpoint:   get("CSI_ENDPOINT"),
		RemoveAction:  driver.RemoveAction(oneOf("REMOVE_ACTION", "delete", "trash", "keep")),
		LogFormat:     oneOf("LOG_FORMAT", "text", "json"),
		CallTimeout:   duration("CALL_TIMEOUT"),
		CephTimeout:   duration("CEPH_TIMEOUT"),
		NodeName:      get("NODE_NAME"),
		FaultKillAt:   strings.TrimSpace(getenv("TEST_FAULT_KILL_AT")),
		BootID:        strings.TrimSpace(getenv("TEST_BOOT_ID")),
	}
	if p := strings.TrimPrefix(strings.TrimPrefix(c.CSIEndpoint, "unix://"), "unix:"); !filepath.IsAbs(p) {
		bad("CSI_ENDPOINT", c.CSIEndpoint, "unix:///absolute/path")
	}
	if c.CephKeyring != "" && !filepath.IsAbs(c.CephKeyring) {
		bad("CEPH_KEYRING", c.CephKeyring, "an absolute path, or empty")
	}
	switch get("LOCK_BREAK") {
	case "on", "true", "1", "yes":
		c.LockBreak = true
	case "off", "false", "0", "no":
	default:
		bad("LOCK_BREAK", get("LOCK_BREAK"), "on or off")
	}
	for _, n := range []struct{ name, v string }{{"RBD_POOL", c.Pool}, {"CEPH_USER", c.CephUser}, {"CEPH_CLUSTER", c.CephCluster}} {
		if n.v == "" || strings.ContainsAny(n.v, " /@,\t\n=") {
			bad(n.name, n.v, "a Ceph name without spaces, '/', '@', ',' or '='")
		}
	}
	if c.DataPool != "" && strings.ContainsAny(c.DataPool, " /@,\t\n") {
		bad("RBD_DATA_POOL", c.DataPool, "a pool name, or empty")
	}
	c.Features = strings.Split(strings.ReplaceAll(get("RBD_FEATURES"), " ", ""), ",")
	if _, err := rbd.ParseFeatures(c.Features); err != nil {
		bad("RBD_FEATURES", get("RBD_FEATURES"), strings.TrimPrefix(err.Error(), driver.ErrInvalid.Error()+": "))
	}
	size, err := driver.ParseSize(get("DEFAULT_SIZE"))
	if err != nil {
		bad("DEFAULT_SIZE", get("DEFAULT_SIZE"), "a size such as 10G or 512M")
	} else if _, err := driver.ParseOptions(nil, driver.OptionDefaults{Size: size, FSType: c.DefaultFSType}, nil); err != nil {
		// Every Create without -o size would fail with it.
		bad("DEFAULT_SIZE", get("DEFAULT_SIZE"), strings.TrimPrefix(err.Error(), driver.ErrInvalid.Error()+": "))
	}
	c.DefaultSize = size
	for _, r := range []struct {
		name, opt string
		parse     func(string) (string, error)
	}{
		{"DEFAULT_UID", driver.OptUID, func(v string) (string, error) { return driver.ParseID(driver.OptUID, v) }},
		{"DEFAULT_GID", driver.OptGID, func(v string) (string, error) { return driver.ParseID(driver.OptGID, v) }},
		{"DEFAULT_MODE", driver.OptMode, driver.ParseMode},
	} {
		v := get(r.name)
		if v == "" {
			continue
		}
		canon, err := r.parse(v)
		if err != nil {
			bad(r.name, v, strings.TrimPrefix(err.Error(), driver.ErrInvalid.Error()+": "))
		}
		switch r.opt {
		case driver.OptUID:
			c.DefaultRoot.UID = canon
		case driver.OptGID:
			c.DefaultRoot.GID = canon
		default:
			c.DefaultRoot.Mode = canon
		}
	}
	if v := get("GROW_INTERVAL"); v != "off" && v != "0" {
		c.GrowInterval = duration("GROW_INTERVAL")
	}
	if lvl, err := logrus.ParseLevel(get("LOG_LEVEL")); err != nil {
		bad("LOG_LEVEL", get("LOG_LEVEL"), "panic, fatal, error, warn, info, debug or trace")
	} else {
		c.LogLevel = lvl
	}
	switch v := get("METRICS_ADDR"); v {
	case "", "off":
	case "on":
		c.MetricsAddr = DefaultMetricsAddr
	default:
		host, port, err := net.SplitHostPort(v)
		if p, perr := strconv.Atoi(port); err != nil || perr != nil || p < 1 || p > 65535 || (host != "" && net.ParseIP(host) == nil) {
			bad("METRICS_ADDR", v, "off, on (127.0.0.1:9380), or an IP address and port such as 127.0.0.1:9380")
		}
		c.MetricsAddr = v
	}
	if c.NodeName == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			bad("NODE_NAME", "", "set it: the hostname cannot be read")
		}
		c.NodeName = h
	}
	c.OpenStack = OpenStack{
		AuthURL: get("OS_AUTH_URL"), Username: get("OS_USERNAME"), Password: getenv("OS_PASSWORD"),
		UserDomain: get("OS_USER_DOMAIN_NAME"), ProjectID: get("OS_PROJECT_ID"), ProjectName: get("OS_PROJECT_NAME"),
		ProjectDomain: get("OS_PROJECT_DOMAIN_NAME"), Region: get("OS_REGION_NAME"),
		AppCredID: get("OS_APPLICATION_CREDENTIAL_ID"), AppCredSecret: getenv("OS_APPLICATION_CREDENTIAL_SECRET"),
		CACert: get("OS_CACERT"),
	}
	if c.Backend == "cinder" {
		o := c.OpenStack
		if !strings.HasPrefix(o.AuthURL, "http://") && !strings.HasPrefix(o.AuthURL, "https://") {
			bad("OS_AUTH_URL", o.AuthURL, "the Keystone v3 URL (http[s]://host:5000/v3) with BACKEND=cinder")
		}
		if o.AppCredID == "" && (o.Username == "" || o.Password == "") {
			errs = append(errs, "BACKEND=cinder needs OS_USERNAME and OS_PASSWORD, or OS_APPLICATION_CREDENTIAL_ID and _SECRET")
		}
		if o.AppCredID != "" && o.AppCredSecret == "" {
			errs = append(errs, "OS_APPLICATION_CREDENTIAL_ID needs OS_APPLICATION_CREDENTIAL_SECRET")
		}
		if o.AppCredID == "" && o.ProjectID == "" && o.ProjectName == "" {
			errs = append(errs, "BACKEND=cinder needs OS_PROJECT_ID or OS_PROJECT_NAME")
		}
		if c.RemoveAction == driver.RemoveTrash {
			bad("REMOVE_ACTION", "trash", "delete or keep with BACKEND=cinder (Cinder has no trash)")
		}
	}
	if len(errs) > 0 {
		return c, errors.New("bad settings: " + strings.Join(errs, "; "))
	}
	return c, nil
}
