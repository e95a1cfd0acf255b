package krbd

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"gopkg.in/ini.v1"
)

// KeySource returns the cephx secret of a user (without "client."). The kernel client needs the
// secret itself; it is written straight to sysfs and never appears in a process listing or a log.
type KeySource interface {
	Key(user string) (string, error)
}

// KeyringFile reads secrets from a Ceph keyring file. With Path empty it searches where librados
// does: /etc/ceph/$cluster.client.$user.keyring, /etc/ceph/$cluster.keyring, /etc/ceph/keyring.
type KeyringFile struct {
	Path    string
	Cluster string // default "ceph"
	// Dir replaces /etc/ceph in the default search (tests).
	Dir string
}

// Key implements KeySource.
func (k KeyringFile) Key(user string) (string, error) {
	paths := []string{k.Path}
	if k.Path == "" {
		cluster, dir := k.Cluster, k.Dir
		if cluster == "" {
			cluster = "ceph"
		}
		if dir == "" {
			dir = "/etc/ceph"
		}
		paths = []string{
			fmt.Sprintf("%s/%s.client.%s.keyring", dir, cluster, user),
			fmt.Sprintf("%s/%s.keyring", dir, cluster),
			dir + "/keyring",
		}
	}
	section := "client." + user
	for _, p := range paths {
		f, err := ini.LoadSources(ini.LoadOptions{Insensitive: false, IgnoreInlineComment: true}, p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("read keyring %s: %w", p, err)
		}
		sec, err := f.GetSection(section)
		if err != nil {
			continue
		}
		if key := strings.TrimSpace(sec.Key("key").String()); key != "" {
			return key, nil
		}
	}
	return "", fmt.Errorf("no key for %s in %s: set CEPH_KEYRING or put the keyring in /etc/ceph", section, strings.Join(paths, ", "))
}
