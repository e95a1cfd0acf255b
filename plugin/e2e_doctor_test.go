//go:build e2e

package plugin

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The doctor runs inside the installed plugin, with its settings, mounts and capabilities, the
// way the README tells operators to run it: a request on the plugin's own socket.
func TestDoctorInsideThePlugin(t *testing.T) {
	// dockerd keeps a managed plugin's socket in /run/docker/plugins/<id>/ whatever its exec-root.
	id := must(t, "plugin", "inspect", "-f", "{{.Id}}", pluginName())
	sock := filepath.Join("/run/docker/plugins", id, "ceph.sock")
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("the plugin's socket: %v", err)
	}
	client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := client.Get("http://plugin/Plugin.Doctor")
	if err != nil {
		t.Fatalf("doctor on %s: %v", sock, err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	report := string(raw)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("doctor answered HTTP %d, want 200 (no check failed)", resp.StatusCode)
	}
	want := []string{"[ OK ] settings", "[ OK ] mount-root MOUNT_ROOT /mnt/volumes is a shared mount point", "[ OK ] ceph", "[ OK ] pool", "[ OK ] blocklist", "[ OK ] clock", "no check failed"}
	if cinderMode() {
		want = append(want, "[ OK ] cinder")
	}
	for _, w := range want {
		if !strings.Contains(report, w) {
			t.Errorf("the doctor's report lacks %q", w)
		}
	}
	// The plugin goes on serving: the doctor ran in its own process, not in a new one in its task.
	must(t, "volume", "ls")
	if t.Failed() {
		t.Logf("report:\n%s", report)
	}
}
