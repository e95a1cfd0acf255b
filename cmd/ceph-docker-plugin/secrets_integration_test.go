//go:build integration

package main

import (
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cephdocker/ceph-docker-plugin/plugin/plugintest"
	"github.com/cephdocker/ceph-docker-plugin/rbd/fuse"
)

// The Keystone secrets given to the plugin (OS_PASSWORD, or an application credential's secret)
// are in no process's environment: not the plugin's /proc/PID/environ (the block the kernel
// keeps from execve), not its children's and descendants' while a volume is mounted (the rbd-fuse
// daemon that serves it included), not the environment of any command it ran (rbd-fuse, mkfs,
// ...: recorded by wrappers on PATH), and not its logs. With each auth method, through the real
// Keystone and Cinder.
func TestSecretsReachNoProcess(t *testing.T) {
	t.Parallel()
	l := labEnv(t)
	t.Run("password", func(t *testing.T) {
		t.Parallel()
		// A user of its own, whose password is unique enough to search for (the lab's demo
		// user's is a common word).
		user, pw := keystoneUser(t)
		env := append(cinderEnv(t), "OS_USERNAME="+user, "OS_PASSWORD="+pw)
		testSecretsReachNoProcess(t, l, []string{pw}, env)
	})
	t.Run("application-credential", func(t *testing.T) {
		t.Parallel()
		id, secret := applicationCredential(t)
		env := []string{"BACKEND=cinder", "OS_AUTH_URL=" + os.Getenv("OS_AUTH_URL"), "OS_REGION_NAME=" + os.Getenv("OS_REGION_NAME"),
			"OS_APPLICATION_CREDENTIAL_ID=" + id, "OS_APPLICATION_CREDENTIAL_SECRET=" + secret,
			// Not the demo user's password: this plugin authenticates with the credential only.
			"OS_USERNAME=", "OS_PASSWORD=", "OS_PROJECT_NAME="}
		testSecretsReachNoProcess(t, l, []string{secret}, env)
	})
}

// adminCLI runs the openstack CLI as the lab's Keystone admin (scripts/openstack-up.sh writes
// its settings to $LAB_DIR/openstack/admin-env).
func adminCLI(t *testing.T, args ...string) string {
	t.Helper()
	script := "set -a; . " + plugintest.AdminEnvFile() + "; exec /usr/bin/openstack \"$@\""
	out, err := exec.Command("sh", append([]string{"-c", script, "sh"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("openstack %v (as admin): %v: %s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// keystoneUser creates a Keystone user with a random password and the member role in the lab's
// project (deleted when the test ends), and returns its name and password.
func keystoneUser(t *testing.T) (name, password string) {
	t.Helper()
	name = uniq("cdp-secrets")
	password = hex.EncodeToString(randomData(t, 16))
	id := adminCLI(t, "user", "create", "--domain", "Default", "--password", password, "-f", "value", "-c", "id", name)
	t.Cleanup(func() { adminCLI(t, "user", "delete", id) })
	adminCLI(t, "role", "add", "--project", os.Getenv("OS_PROJECT_NAME"), "--project-domain", "Default", "--user", id, "member")
	return name, password
}

// applicationCredential creates an application credential of the lab's Keystone user (deleted
// when the test ends) and returns its ID and secret.
func applicationCredential(t *testing.T) (id, secret string) {
	t.Helper()
	name := uniq("cdp-secrets")
	var ac struct{ ID, Secret string }
	openstackCLI(t, &ac, "application", "credential", "create", name)
	if ac.ID == "" || ac.Secret == "" {
		t.Fatalf("application credential %s: no id or secret", name)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("/usr/bin/openstack", "application", "credential", "delete", ac.ID).CombinedOutput(); err != nil {
			t.Errorf("delete application credential %s: %v: %s", name, err, out)
		}
	})
	return ac.ID, ac.Secret
}

func testSecretsReachNoProcess(t *testing.T, l lab, secrets, env []string) {
	for _, s := range secrets {
		if len(s) < 6 {
			t.Fatalf("a secret of %d characters: too short to search for", len(s))
		}
	}
	names := []string{"OS_PASSWORD", "OS_APPLICATION_CREDENTIAL_SECRET"}
	// Wrappers on PATH record the environment every command the plugin runs gets.
	wrap := t.TempDir()
	seen := filepath.Join(t.TempDir(), "seen")
	if err := os.Mkdir(seen, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"rbd-fuse", "mkfs.ext4", "mkfs.xfs", "blkid", "modprobe"} {
		real, err := exec.LookPath(cmd)
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		script := fmt.Sprintf("#!/bin/sh\ntr '\\000' '\\n' </proc/$$/environ >%s/%s.$$\nexec %s \"$@\"\n", seen, cmd, real)
		if err := os.WriteFile(filepath.Join(wrap, cmd), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p := newPlugin(t, l, "host-a", append(env, "PATH="+wrap+":"+os.Getenv("PATH"))...)
	p.start()
	name := uniq("secrets")
	p.create(name, map[string]string{"size": "1G"})
	t.Cleanup(func() { _ = p.try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil) })
	path := p.mount(name, "c1")
	writeFile(t, filepath.Join(path, "data"), randomData(t, 4096))

	check := func(what string, environ []byte) {
		t.Helper()
		for _, v := range append(names, secrets...) {
			if strings.Contains(string(environ), v) {
				label := v
				if !strings.HasPrefix(v, "OS_") {
					label = "the secret's value"
				}
				t.Errorf("%s holds %s", what, label)
			}
		}
	}
	// The plugin, its descendants, and the rbd-fuse daemons it started (daemonized: their parent
	// is no longer the plugin).
	procs := append(descendants(t, p.Pid()), fuse.Daemons(p.fuseRoot())...)
	daemons := len(fuse.Daemons(p.fuseRoot()))
	if daemons == 0 {
		t.Fatal("no rbd-fuse daemon serves the mounted volume: nothing to look at")
	}
	for _, pid := range procs {
		environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			t.Fatalf("read the environment of pid %d: %v", pid, err)
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		check(fmt.Sprintf("/proc/%d/environ (%s)", pid, strings.TrimSpace(string(comm))), environ)
	}
	unmountDespiteNova(t, p, name, "c1")
	runs, err := os.ReadDir(seen)
	if err != nil {
		t.Fatal(err)
	}
	ran := map[string]bool{}
	for _, r := range runs {
		raw, err := os.ReadFile(filepath.Join(seen, r.Name()))
		if err != nil {
			t.Fatal(err)
		}
		cmd, _, _ := strings.Cut(r.Name(), ".") // rbd-fuse.PID, mkfs.ext4.PID, ...
		ran[cmd] = true
		check("the environment of "+r.Name(), raw)
	}
	if !ran["rbd-fuse"] || !ran["mkfs"] {
		t.Fatalf("commands seen by the wrappers: %v; want rbd-fuse and mkfs at least", ran)
	}
	check("the plugin's log", []byte(p.logs()))
	t.Logf("%d processes (the plugin, %d rbd-fuse daemon(s), descendants) and %d commands checked: no secret",
		len(procs), daemons, len(runs))
}

// descendants returns pid and every process below it (by parent pid, from /proc).
func descendants(t *testing.T, pid int) []int {
	t.Helper()
	procs, err := plugintest.Procs()
	if err != nil {
		t.Fatal(err)
	}
	children := map[int][]int{}
	for _, p := range procs {
		children[p.PPID] = append(children[p.PPID], p.PID)
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// unmountDespiteNova unmounts a volume. Cinder (Zed, with the fix of its bug #2004555) asks Nova
// about an attachment before deleting it, with a token made from the caller's; Keystone refuses
// to make one from an application credential's token ("Using a delegated token to create another
// token is not allowed"), and Cinder answers 500. So a plugin authenticated by an application
// credential cannot detach on such a Cinder: that is logged here (a known limitation, reported),
// and the attachment is deleted as the lab's demo user instead, after which Unmount completes.
func unmountDespiteNova(t *testing.T, p *plugin, name, id string) {
	t.Helper()
	err := p.try("/VolumeDriver.Unmount", map[string]string{"Name": name, "ID": id}, nil)
	if err == nil {
		return
	}
	if !strings.Contains(err.Error(), "delete attachment") || !strings.Contains(err.Error(), "500") {
		t.Fatalf("unmount %s: %v", name, err)
	}
	t.Logf("unmount %s: Cinder cannot delete the attachment for this caller (its Nova check needs a token "+
		"Keystone refuses to make from an application credential's): %v", name, err)
	cinderID, _ := p.get(name).Volume.Status["cinder-id"].(string)
	var atts []struct{ ID string }
	openstackCLI(t, &atts, "volume", "attachment", "list", "--volume-id", cinderID)
	for _, a := range atts {
		if out, err := exec.Command("/usr/bin/openstack", "--os-volume-api-version", "3.54", "volume", "attachment", "delete", a.ID).CombinedOutput(); err != nil {
			t.Fatalf("delete attachment %s of %s as the demo user: %v: %s", a.ID, name, err, out)
		}
	}
	p.unmount(name, id)
}
