//go:build integration

package main

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// dockerd mounts a container's volume again with the container's own mount ID for each nested
// use (`docker cp` in and out, and its stat) and unmounts once per use. Through the binary, with
// each backend: Mount(A), Mount(A), Unmount(A) leaves the volume mounted, mapped, held by this
// host and writable; the second Unmount(A) releases it. The plugin is SIGKILLed and restarted
// between every two steps, and the counts survive.
func TestProtocolNestedUsesOfOneID(t *testing.T) {
	t.Parallel()
	eachBackend(t, labEnv(t), testProtocolNestedUses)
}

func testProtocolNestedUses(t *testing.T, b backend) {
	l := labEnv(t)
	p := newPlugin(t, l, "host-a", b.env...)
	p.start()
	name := uniq("nested")
	p.create(name, map[string]string{"size": "256M"})
	t.Cleanup(func() { _ = p.try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil) })
	image := b.image(p, name)
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

	crash := func(after string) {
		t.Helper()
		p.kill9()
		p.start()
		t.Logf("SIGKILL and restart after %s", after)
	}
	// assertHeld checks that the volume is mounted, mapped once, recorded for id, held by this
	// host, and that a file written through the mount point reads back.
	assertHeld := func(step string) {
		t.Helper()
		g := p.get(name)
		path := g.Volume.Mountpoint
		if path == "" || !isMounted(t, path) {
			t.Fatalf("%s: not mounted (get: %+v)", step, g.Volume)
		}
		if n := p.mappingsOf(b.pool, image); n != 1 {
			t.Fatalf("%s: %d mappings of %s/%s, want 1", step, n, b.pool, image)
		}
		mounts, _ := g.Volume.Status["mounts"].([]any)
		if len(mounts) != 1 || mounts[0] != id || g.Volume.Status["host"] != "host-a" {
			t.Fatalf("%s: status %+v, want mounts [%s] on host-a", step, g.Volume.Status, id)
		}
		data := randomData(t, 1<<20)
		file := filepath.Join(path, strings.ReplaceAll(step, " ", "-")+".bin")
		writeFile(t, file, data)
		got, err := os.ReadFile(file)
		if err != nil || sha256.Sum256(got) != sha256.Sum256(data) {
			t.Fatalf("%s: write then read through %s: %v", step, path, err)
		}
	}

	p.mount(name, id)
	assertHeld("first Mount")
	crash("the first Mount")
	assertHeld("restart after the first Mount")
	p.mount(name, id)
	crash("the nested Mount")
	assertHeld("restart after the nested Mount")
	p.unmount(name, id)
	assertHeld("the nested Unmount")

	// Another host is still refused: the claim is this host's.
	other := newPlugin(t, l, "host-b", b.env...)
	other.start()
	if msg := other.fail("/VolumeDriver.Mount", map[string]string{"Name": name, "ID": "other-container"}); !strings.Contains(msg, "host-a") {
		t.Fatalf("host-b's Mount while host-a holds the volume: %q, want a refusal naming host-a", msg)
	}
	other.assertClean()

	crash("the nested Unmount")
	assertHeld("restart after the nested Unmount")
	p.unmount(name, id)
	if g := p.get(name); g.Volume.Mountpoint != "" {
		t.Fatalf("still mounted after the last use's Unmount: %+v", g.Volume)
	}
	p.assertClean()
	b.assertReleased(p, name)
	// One Unmount more than the uses counted is harmless.
	p.unmount(name, id)
	crash("the last Unmount")
	p.assertClean()

	// Every file written along the way is there.
	path := p.mount(name, "reader")
	ents, err := os.ReadDir(path)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".bin") {
			files = append(files, e.Name())
		}
	}
	want := []string{"first-Mount.bin", "restart-after-the-first-Mount.bin", "restart-after-the-nested-Mount.bin",
		"restart-after-the-nested-Unmount.bin", "the-nested-Unmount.bin"}
	if slices.Sort(files); !slices.Equal(files, want) {
		t.Fatalf("files in the volume: %q, want %q", files, want)
	}
	p.unmount(name, "reader")
	p.assertClean()
}
