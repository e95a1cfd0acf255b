//go:build integration

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Root options through the plugin binary, with both backends and both filesystems: the first
// Mount formats the volume with its root owned and moded as asked and, with lost-found=remove,
// without lost+found (the default keeps it: see RootOptions.Spec); a
// Create of the same name with other root options is refused naming them; a root changed by hand
// is left alone at the next Mount (and logged). DEFAULT_UID applies when -o uid is absent.
func TestVolumeRootOptions(t *testing.T) {
	t.Parallel()
	l := labEnv(t)
	eachBackend(t, l, func(t *testing.T, b backend) {
		p := newPlugin(t, l, "host-a", append(b.env, "DEFAULT_UID=1234")...)
		p.start()
		for _, fstype := range []string{"ext4", "xfs"} {
			name := uniq("root-" + fstype)
			p.create(name, map[string]string{"size": "1G", "fstype": fstype, "gid": "999", "mode": "2770", "lost-found": "remove"})
			t.Cleanup(func() { _ = p.try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil) })
			if got := p.get(name).Volume.Status["root"]; got != "uid=1234 gid=999 mode=2770 lost-found=remove" {
				t.Errorf("%s: status root = %v", fstype, got)
			}
			msg := p.fail("/VolumeDriver.Create", map[string]any{"Name": name, "Opts": map[string]string{"gid": "1000", "mode": "0770"}})
			for _, want := range []string{"gid 1000 (it has 999)", "mode 0770 (it has 2770)", "exists with other options"} {
				if !strings.Contains(msg, want) {
					t.Errorf("%s: Create with other root options: %q lacks %q", fstype, msg, want)
				}
			}
			p.create(name, map[string]string{"gid": "999"}) // the same: accepted

			path := p.mount(name, "c1")
			var st unix.Stat_t
			if err := unix.Stat(path, &st); err != nil {
				t.Fatal(err)
			}
			if st.Uid != 1234 || st.Gid != 999 || st.Mode&0o7777 != 0o2770 {
				t.Errorf("%s: root %d:%d %04o, want 1234:999 2770", fstype, st.Uid, st.Gid, st.Mode&0o7777)
			}
			if entries, err := os.ReadDir(path); err != nil || len(entries) != 0 {
				t.Errorf("%s: root entries %v, %v; want none", fstype, entries, err)
			}
			writeFile(t, filepath.Join(path, "f"), []byte("x"))
			if err := os.Chown(path, 0, 0); err != nil {
				t.Fatal(err)
			}
			p.unmount(name, "c1")
			path = p.mount(name, "c2")
			if err := unix.Stat(path, &st); err != nil || st.Uid != 0 {
				t.Errorf("%s: the root changed by hand was changed back at Mount: uid %d, %v", fstype, st.Uid, err)
			}
			if !strings.Contains(p.logs(), "root differs from the volume's root options") {
				t.Errorf("%s: the root's difference was not logged", fstype)
			}
			p.unmount(name, "c2")
		}
		for opt, want := range map[string]string{"uid": "-1", "gid": "4294967295", "mode": "4755", "lost-found": "maybe"} {
			msg := p.fail("/VolumeDriver.Create", map[string]any{"Name": uniq("badroot"), "Opts": map[string]string{opt: want}})
			if !strings.Contains(msg, opt) {
				t.Errorf("Create -o %s=%s: %q does not name the option", opt, want, msg)
			}
		}
		p.assertClean()
	})
}
