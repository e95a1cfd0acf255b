package cinder

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// copyOpts are the options of a Create with -o from-volume=src and the -o keys given.
func copyOpts(src string, given ...string) driver.Options {
	o := driver.Options{Size: 10 << 30, FSType: "ext4", Backend: map[string]string{OptFromVolume: src},
		Given: map[string]bool{OptFromVolume: true}}
	for _, k := range given {
		o.Given[k] = true
	}
	return o
}

// -o from-volume finds the source by name (attached or not) and creates the copy from its ID in
// its project, with its size and stored options.
func TestCreateFromVolume(t *testing.T) {
	f := newFake(t)
	src := f.addVolume(projDemo, "src")
	f.edit(func() {
		src.Size = 7
		src.Metadata[metaFSType] = "xfs"
		src.Metadata[metaMountOptions] = "noatime"
	})
	f.attach(src, "host-b", "m1") // in use: Cinder copies it anyway
	other := f.addVolume(projDemo2, "elsewhere")
	p := f.prov("host-a")
	wantErr(t, p.Create(withTimeout(t, 5*time.Second), "cp", copyOpts("src")), nil)
	wantErr(t, p.Create(withTimeout(t, 5*time.Second), "cp2", copyOpts("elsewhere")), nil)
	posts := f.find("cinder", "POST", "/volumes")
	if len(posts) != 2 {
		t.Fatalf("%d creates", len(posts))
	}
	b := posts[0].Body["volume"].(map[string]any)
	md, _ := b["metadata"].(map[string]any)
	if str(b, "source_volid") != src.ID || mustJSON(b["size"]) != "7" || md[metaFSType] != "xfs" ||
		md[metaMountOptions] != "noatime" || md[metaFromVolume] != "src" {
		t.Errorf("create body %s", mustJSON(b))
	}
	if posts[1].Project != projDemo2 || str(posts[1].Body["volume"].(map[string]any), "source_volid") != other.ID {
		t.Errorf("the copy of a volume of another project is made in project %s from %v", posts[1].Project, posts[1].Body)
	}
	v, err := p.Get(withTimeout(t, 5*time.Second), "cp")
	wantErr(t, err, nil)
	if v.Status[OptFromVolume] != "src" || v.Status[OptSourceVolumeID] != src.ID || v.Size != 7<<30 || v.FSType != "xfs" {
		t.Errorf("Get: %+v", v)
	}
	if diffs, err := p.Differences(withTimeout(t, 5*time.Second), v, copyOpts("src")); err != nil || len(diffs) != 0 {
		t.Errorf("same source: %q %v", diffs, err)
	}
	if diffs, _ := p.Differences(withTimeout(t, 5*time.Second), v, copyOpts("other")); len(diffs) != 1 || diffs[0] != "from-volume other (it has src)" {
		t.Errorf("another source: %q", diffs)
	}
}

// Refusals come before anything is created, and name the source.
func TestCreateFromVolumeRefused(t *testing.T) {
	f := newFake(t)
	src := f.addVolume(projDemo, "src")
	f.edit(func() { src.Size = 2 })
	busy := f.addVolume(projDemo, "busy")
	f.reserve(busy, "host-b", "m1")
	p := f.prov("host-a")
	small := copyOpts("src", driver.OptSize)
	small.Size, small.SizeGiven = 1<<30, true
	xfs := copyOpts("src", driver.OptFSType)
	xfs.FSType = "xfs"
	both := copyOpts("src")
	both.Backend[OptSourceVolumeID] = src.ID
	elsewhere := copyOpts("src")
	elsewhere.Backend[OptProjectID] = projDemo2
	for _, c := range []struct {
		opts driver.Options
		err  error
		says string
	}{
		{copyOpts("../x"), driver.ErrInvalid, "from-volume"},
		{copyOpts("a b"), driver.ErrInvalid, "from-volume"},
		{copyOpts("nope"), driver.ErrNotFound, "from-volume nope"},
		{copyOpts("busy"), driver.ErrInUse, `from-volume busy (` + busy.ID + `) is "attaching"`},
		{small, driver.ErrInvalid, "cannot be shrunk"},
		{xfs, driver.ErrInvalid, "holds a ext4 filesystem"},
		{both, driver.ErrInvalid, "not both"},
		{elsewhere, driver.ErrInvalid, "is in project " + projDemo},
	} {
		err := p.Create(withTimeout(t, 5*time.Second), "cp", c.opts)
		if err == nil || !strings.Contains(err.Error(), "cinder create cp") {
			t.Errorf("%v: %v", c.opts.Backend, err)
			continue
		}
		wantErr(t, err, c.err, c.says)
	}
	if n := f.count("cinder", "POST", "/volumes"); n != 0 {
		t.Errorf("%d creates after refusals", n)
	}
	for _, c := range f.find("cinder", "GET", "/volumes.*") {
		if n := c.Query.Get("name"); n == "../x" || n == "a b" {
			t.Errorf("a hostile name reached Cinder: %s %v", c.Path, c.Query)
		}
	}
}

// A copy that Cinder fails to make is deleted, as any Create's volume is.
func TestCreateFromVolumeUndone(t *testing.T) {
	f := newFake(t)
	f.addVolume(projDemo, "src")
	f.edit(func() { f.createSettle = []string{"creating", "error"} })
	p := f.prov("host-a")
	err := p.Create(withTimeout(t, 5*time.Second), "cp", copyOpts("src"))
	if err == nil || !strings.Contains(err.Error(), `went to status "error"`) {
		t.Fatalf("err %v", err)
	}
	if n := f.count("cinder", "DELETE", "/volumes/[^/]+"); n != 1 || !slices.Equal(statusesNamed(f, "cp"), nil) {
		t.Errorf("%d deletes; volumes named cp: %v", n, statusesNamed(f, "cp"))
	}
}
