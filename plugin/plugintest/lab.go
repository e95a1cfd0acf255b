package plugintest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/cephdocker/ceph-docker-plugin/driver/execx"
)

// LabDir is where the lab scripts keep their state and env files ($LAB_DIR, which the Makefile
// exports; /var/lib/ceph-docker-plugin-lab by default).
func LabDir() string { return EnvOr("LAB_DIR", "/var/lib/ceph-docker-plugin-lab") }

// EnvOr returns the environment variable key, or def when it is unset or empty.
func EnvOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// EnvFile is one of the env files the lab scripts write: KEY=VALUE lines, as `set -a; . file`
// loads them.
type EnvFile map[string]string

// ReadEnvFile reads an env file: KEY=VALUE lines (surrounding quotes dropped); blank lines and
// comments are skipped.
func ReadEnvFile(path string) (EnvFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("lab env file (the lab scripts under scripts/ write it): %w", err)
	}
	defer f.Close()
	out := EnvFile{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if ok && k != "" && !strings.HasPrefix(k, "#") {
			out[k] = strings.Trim(v, `"'`)
		}
	}
	return out, sc.Err()
}

// MustEnvFile is ReadEnvFile for tests: a missing file fails the test.
func MustEnvFile(t TB, path string) EnvFile { t.Helper(); return must[EnvFile](t)(ReadEnvFile(path)) }

// must returns a function that fails t on an error and returns the value otherwise.
func must[T any](t TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%v", err)
		}
		return v
	}
}

// List returns the settings as KEY=VALUE, sorted, for a process's environment.
func (e EnvFile) List() []string {
	out := make([]string, 0, len(e))
	for k, v := range e {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// Ceph is the lab Ceph's coordinates (scripts/ceph-up.sh writes them to $LAB_DIR/ceph/env).
type Ceph struct {
	Conf, User, Keyring, AdminKeyring, Pool string
}

// CephFromEnv reads the lab Ceph's coordinates from the environment.
func CephFromEnv() (Ceph, error) {
	c := Ceph{Conf: os.Getenv("CEPH_CONF"), User: os.Getenv("CEPH_USER"), Keyring: os.Getenv("CEPH_KEYRING"),
		AdminKeyring: os.Getenv("CEPH_ADMIN_KEYRING"), Pool: os.Getenv("RBD_POOL")}
	if c.Conf == "" || c.User == "" || c.Keyring == "" || c.AdminKeyring == "" || c.Pool == "" {
		return c, fmt.Errorf("CEPH_CONF, CEPH_USER, CEPH_KEYRING, CEPH_ADMIN_KEYRING and RBD_POOL must be set: " +
			"the make targets load them from $LAB_DIR/ceph/env (scripts/ceph-up.sh starts the lab Ceph and writes it)")
	}
	return c, nil
}

// MustCeph is CephFromEnv for tests: a missing variable fails the test (it never skips).
func MustCeph(t TB) Ceph { t.Helper(); return must[Ceph](t)(CephFromEnv()) }

// Settings are the plugin's settings for the lab Ceph as its least-privilege user.
func (c Ceph) Settings() []string {
	return []string{"CEPH_CONF=" + c.Conf, "CEPH_USER=" + c.User, "CEPH_KEYRING=" + c.Keyring, "RBD_POOL=" + c.Pool}
}

// OpenStack is a Keystone user's coordinates, as OS_* variables give them.
type OpenStack struct {
	AuthURL, Username, Password, ProjectName string
	UserDomain, ProjectDomain, Region        string
}

// openStackFrom reads OS_* through get, from source (for the error); the domains default to
// Default, as the plugin's do.
func openStackFrom(get func(string) string, source string) (OpenStack, error) {
	o := OpenStack{AuthURL: get("OS_AUTH_URL"), Username: get("OS_USERNAME"), Password: get("OS_PASSWORD"),
		ProjectName: get("OS_PROJECT_NAME"), UserDomain: get("OS_USER_DOMAIN_NAME"),
		ProjectDomain: get("OS_PROJECT_DOMAIN_NAME"), Region: get("OS_REGION_NAME")}
	if o.AuthURL == "" || o.Username == "" || o.Password == "" || o.ProjectName == "" {
		return o, fmt.Errorf("OS_AUTH_URL, OS_USERNAME, OS_PASSWORD and OS_PROJECT_NAME must be set in %s "+
			"(scripts/openstack-up.sh starts the lab Keystone + Cinder and writes them)", source)
	}
	if o.UserDomain == "" {
		o.UserDomain = "Default"
	}
	if o.ProjectDomain == "" {
		o.ProjectDomain = "Default"
	}
	return o, nil
}

// OpenStackFromEnv reads the plugin's Keystone user (the lab's demo user) from the environment.
func OpenStackFromEnv() (OpenStack, error) {
	return openStackFrom(os.Getenv, "the environment (the make targets load $LAB_DIR/openstack/env)")
}

// MustOpenStack is OpenStackFromEnv for tests: a missing variable fails the test.
func MustOpenStack(t TB) OpenStack { t.Helper(); return must[OpenStack](t)(OpenStackFromEnv()) }

// AdminEnvFile is the env file of the lab Keystone's admin (another user than the plugin's).
func AdminEnvFile() string { return filepath.Join(LabDir(), "openstack", "admin-env") }

// MustOpenStackAdmin reads the lab Keystone's admin credentials from AdminEnvFile.
func MustOpenStackAdmin(t TB) OpenStack {
	t.Helper()
	e := MustEnvFile(t, AdminEnvFile())
	return must[OpenStack](t)(openStackFrom(func(k string) string { return e[k] }, AdminEnvFile()))
}

// Settings are the plugin's settings for BACKEND=cinder as this user (BACKEND itself not included).
func (o OpenStack) Settings() []string {
	return []string{"OS_AUTH_URL=" + o.AuthURL, "OS_USERNAME=" + o.Username, "OS_PASSWORD=" + o.Password,
		"OS_PROJECT_NAME=" + o.ProjectName, "OS_USER_DOMAIN_NAME=" + o.UserDomain,
		"OS_PROJECT_DOMAIN_NAME=" + o.ProjectDomain, "OS_REGION_NAME=" + o.Region}
}

// AuthOptions are gophercloud's options for a password login scoped to the user's project.
func (o OpenStack) AuthOptions() gophercloud.AuthOptions {
	return gophercloud.AuthOptions{
		IdentityEndpoint: o.AuthURL, Username: o.Username, Password: o.Password, DomainName: o.UserDomain,
		Scope: &gophercloud.AuthScope{ProjectName: o.ProjectName, DomainName: o.ProjectDomain},
	}
}

// Admin runs a Ceph CLI tool (ceph, rbd, rados) as client.admin on the lab cluster and returns
// its standard output: for test set-up, inspection and cleanup only. It gives up after a minute.
func (c Ceph) Admin(tool string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	full := append([]string{"-c", c.Conf, "-n", "client.admin", "-k", c.AdminKeyring}, args...)
	res, err := execx.Run(ctx, execx.Cmd{Name: tool, Args: full})
	return string(res.Stdout), err
}
