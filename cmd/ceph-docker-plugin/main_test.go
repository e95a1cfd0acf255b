package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

// MOUNT_ROOT must be a shared mount point (the managed plugin's propagatedMount) and STATE_DIR
// under it; a plain directory, or a STATE_DIR elsewhere, is warned about at start.
func TestCheckMountRootWarns(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		root, state string
		want        []string
	}{
		{dir, filepath.Join(dir, ".state"), []string{"MOUNT_ROOT is not a shared mount point"}},
		{dir, filepath.Join(t.TempDir(), "state"), []string{"MOUNT_ROOT is not a shared mount point", "STATE_DIR is not under MOUNT_ROOT"}},
		{dir, dir, []string{"MOUNT_ROOT is not a shared mount point", "STATE_DIR is not under MOUNT_ROOT"}},
	} {
		logger, hook := logtest.NewNullLogger()
		checkMountRoot(Config{MountRoot: tc.root, StateDir: tc.state}, logrus.NewEntry(logger))
		var got []string
		for _, e := range hook.AllEntries() {
			got = append(got, e.Message)
		}
		if len(got) != len(tc.want) {
			t.Errorf("MOUNT_ROOT=%s STATE_DIR=%s: warnings %q, want %q", tc.root, tc.state, got, tc.want)
			continue
		}
		for i, w := range tc.want {
			if !strings.HasPrefix(got[i], w) {
				t.Errorf("MOUNT_ROOT=%s STATE_DIR=%s: warning %q, want %q", tc.root, tc.state, got[i], w)
			}
		}
	}
}
