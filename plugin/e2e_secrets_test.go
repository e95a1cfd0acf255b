//go:build e2e

package plugin

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cephdocker/ceph-docker-plugin/plugin/plugintest"
)

// No process of the managed plugin holds the Keystone password in its environment: not the
// plugin, and not PID 1 of its namespace (tini, which reaps rbd-fuse's orphans). The binary is
// the entrypoint, takes the secrets out of the environment, then hands PID 1 over to tini.
func TestNoSecretInPluginProcesses(t *testing.T) {
	if !cinderMode() {
		t.Skip("the rbd backend takes no secret setting (CDP_BACKEND=cinder runs this)")
	}
	password := plugintest.MustEnvFile(t, filepath.Join(plugintest.LabDir(), "openstack", "env"))["OS_PASSWORD"]
	if len(password) < 4 {
		t.Fatalf("no usable OS_PASSWORD in the lab's openstack env (%d characters)", len(password))
	}
	id := must(t, "plugin", "inspect", "-f", "{{.Id}}", pluginName())
	cmdlines := map[int]string{}
	procs, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	for _, c := range procs {
		cg, err := os.ReadFile(c)
		if err != nil || !strings.Contains(string(cg), id) {
			continue
		}
		dir := filepath.Dir(c)
		var pid int
		fmt.Sscanf(filepath.Base(dir), "%d", &pid)
		cmd, _ := os.ReadFile(filepath.Join(dir, "cmdline"))
		cmdlines[pid] = strings.ReplaceAll(strings.TrimRight(string(cmd), "\x00"), "\x00", " ")
		env, err := os.ReadFile(filepath.Join(dir, "environ"))
		if err != nil {
			t.Fatalf("read the environment of %d (%s): %v", pid, cmdlines[pid], err)
		}
		if strings.Contains(string(env), password) {
			t.Errorf("process %d (%s) of the plugin holds OS_PASSWORD in /proc/%d/environ", pid, cmdlines[pid], pid)
		}
		if !strings.Contains(string(env), "OS_USERNAME=") && strings.HasPrefix(cmdlines[pid], "/usr/bin/ceph-docker-plugin") {
			t.Errorf("process %d (%s) lacks the plugin's other settings: the check reads the wrong block", pid, cmdlines[pid])
		}
	}
	var init, plugin bool
	for _, c := range cmdlines {
		init = init || strings.HasPrefix(c, "/usr/bin/tini -s -- /usr/bin/ceph-docker-plugin")
		plugin = plugin || strings.HasPrefix(c, "/usr/bin/ceph-docker-plugin")
	}
	if !init || !plugin {
		t.Fatalf("want tini as the plugin's init and the plugin under it, found %v", cmdlines)
	}
}
