package main

import (
	"path/filepath"
	"testing"
)

// The doctor reports what the start-up warnings say (TestCheckMountRootWarns), as findings: a
// plain directory fails the mount-root check (except in CSI mode, where only swarm's publish
// targets propagate), a STATE_DIR outside MOUNT_ROOT is a warning.
func TestCheckMountRootFindings(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		protocol, state string
		want            []string // check:status
	}{
		{"", filepath.Join(dir, ".state"), []string{"mount-root:fail"}},
		{"", filepath.Join(t.TempDir(), "state"), []string{"mount-root:fail", "state-dir:warn"}},
		{"", dir, []string{"mount-root:fail", "state-dir:warn"}},
		{"csi", filepath.Join(dir, ".state"), []string{"mount-root:ok"}},
	} {
		var got []string
		for _, f := range checkMountRootFindings(Config{Protocol: tc.protocol, MountRoot: dir, StateDir: tc.state}) {
			got = append(got, f.check+":"+f.status)
		}
		if len(got) != len(tc.want) {
			t.Errorf("PROTOCOL=%q STATE_DIR=%s: findings %q, want %q", tc.protocol, tc.state, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("PROTOCOL=%q STATE_DIR=%s: findings %q, want %q", tc.protocol, tc.state, got, tc.want)
				break
			}
		}
	}
}
