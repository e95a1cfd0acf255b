package cinder

import (
	"errors"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

func newOpts(size uint64, backend map[string]string) driver.Options {
	return driver.Options{Size: size, SizeGiven: true, FSType: "ext4", Backend: backend}
}

// created returns the body of the one volume create the fake received, and its project.
func created(t *testing.T, f *fakeOpenStack) (map[string]any, string) {
	t.Helper()
	cs := f.find("cinder", "POST", "/volumes")
	if len(cs) != 1 {
		t.Fatalf("%d volume creates: %v", len(cs), f.writes())
	}
	body, _ := cs[0].Body["volume"].(map[string]any)
	return body, cs[0].Project
}

func TestCreate(t *testing.T) {
	f := newFake(t)
	p := f.prov("host-a")
	opts := driver.Options{Size: 3<<30 + 1, SizeGiven: true, FSType: "xfs", MkfsOptions: []string{"-m", "crc=1"},
		MountOptions: "noatime,nodiscard", Backend: map[string]string{OptVolumeType: "rbd", OptAvailabilityZone: "nova"}}
	wantErr(t, p.Create(withTimeout(t, 5*time.Second), "db", opts), nil)
	body, project := created(t, f)
	want := map[string]any{
		"name": "db", "size": float64(4), "volume_type": "rbd", "availability_zone": "nova",
		"description": "Docker volume db (ceph-docker-plugin)",
		"metadata": map[string]any{metaManaged: managedBy, metaFSType: "xfs", metaMkfsOptions: "-m crc=1",
			metaMountOptions: "noatime,nodiscard"},
	}
	if !reflect.DeepEqual(body, want) || project != projDemo {
		t.Errorf("create body %v in project %s, want %v in %s", body, project, want, projDemo)
	}
	// Create returns once the volume is available: it polled until then.
	id := ""
	for _, c := range f.find("cinder", "GET", "/volumes/[^/]+") {
		id = strings.TrimPrefix(c.Path, "/volumes/")
	}
	if st, ok := f.volume(id); !ok || st.Status != "available" || f.count("cinder", "GET", "/volumes/"+id) != 2 {
		t.Errorf("volume %q status %q after %d polls", id, st.Status, f.count("cinder", "GET", "/volumes/"+id))
	}
	// It reads back with every option.
	v, err := p.Get(withTimeout(t, 5*time.Second), "db")
	wantErr(t, err, nil)
	if v.Size != 4<<30 || v.FSType != "xfs" || !slices.Equal(v.MkfsOptions, []string{"-m", "crc=1"}) || v.MountOptions != "noatime,nodiscard" ||
		v.Status["volume-type"] != "rbd" || v.Status["availability-zone"] != "nova" || v.Status["cinder-id"] != id || v.Holder != "" {
		t.Errorf("Get: %+v", v)
	}
	// Again: it exists, naming it.
	err = p.Create(withTimeout(t, 5*time.Second), "db", opts)
	wantErr(t, err, driver.ErrExists, "cinder create db", "volume "+id+" in project "+projDemo)
	if n := f.count("cinder", "POST", "/volumes"); n != 1 {
		t.Errorf("%d creates", n)
	}
}

// statusesNamed lists the statuses of the fake's volumes named name.
func statusesNamed(f *fakeOpenStack, name string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, v := range f.volumes {
		if v.Name == name {
			out = append(out, v.Status)
		}
	}
	return out
}

// pollsBeforeDelete counts the reads of one volume before the first delete.
func pollsBeforeDelete(f *fakeOpenStack) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c.Method == http.MethodDelete {
			break
		}
		if c.Service == "cinder" && c.Method == http.MethodGet && uuidPathRE.MatchString(c.Path) {
			n++
		}
	}
	return n
}

var uuidPathRE = regexp.MustCompile(`^/volumes/[0-9a-f-]{36}$`)

func TestCreateErrors(t *testing.T) {
	cases := []struct {
		name    string
		setup   func(f *fakeOpenStack)
		opts    driver.Options
		between int // the deadline expires in the n-th wait between polls
		err     error
		says    []string
		check   func(t *testing.T, f *fakeOpenStack)
	}{{
		name:  "exists in another project",
		setup: func(f *fakeOpenStack) { f.addVolume(projDemo2, "db") },
		opts:  newOpts(1<<30, nil),
		err:   driver.ErrExists,
		says:  []string{"in project " + projDemo2},
	}, {
		name: "the volume goes to error: deleted",
		setup: func(f *fakeOpenStack) {
			f.edit(func() { f.createSettle = []string{"creating", "error"} })
		},
		opts: newOpts(1<<30, nil),
		says: []string{"cinder create db", `went to status "error"`, "cinder-volume log"},
		check: func(t *testing.T, f *fakeOpenStack) {
			if n := f.count("cinder", "DELETE", "/volumes/[^/]+"); n != 1 {
				t.Errorf("%d deletes of the failed volume", n)
			}
			if st := statusesNamed(f, "db"); len(st) != 0 {
				t.Errorf("volumes named db: %v, want the failed one deleted", st)
			}
		},
	}, {
		name: "never available: the deadline, and the volume deleted",
		setup: func(f *fakeOpenStack) {
			f.edit(func() { f.createSettle = slices.Repeat([]string{"creating"}, 100) })
			f.deadlineAt("cinder", "GET", "/volumes/[^/]+", 3)
		},
		opts: newOpts(1<<30, nil),
		err:  driver.ErrTimeout, // while polling or between polls
		// The undo's delete is refused while the volume is creating; it waits for the creation
		// to end, until its own deadline, and says what is left.
		says: []string{"cinder create db", "undoing it also failed", `still "creating" at the cleanup deadline`, "openstack volume delete"},
		check: func(t *testing.T, f *fakeOpenStack) {
			if n := f.count("cinder", "DELETE", "/volumes/[^/]+"); n != 1 {
				t.Errorf("%d deletes of the volume left creating", n)
			}
		},
	}, {
		name:    "never available: the deadline between two polls, the volume deleted",
		setup:   func(f *fakeOpenStack) { f.edit(func() { f.createSettle = slices.Repeat([]string{"creating"}, 100) }) },
		opts:    newOpts(1<<30, nil),
		between: 3,
		err:     driver.ErrTimeout,
		says:    []string{"cinder create db", `still "creating", not "available", at the deadline`, `still "creating" at the cleanup deadline`},
		check: func(t *testing.T, f *fakeOpenStack) {
			if n := pollsBeforeDelete(f); n != 3 {
				t.Errorf("%d polls before the undo, want 3", n)
			}
			if n := f.count("cinder", "DELETE", "/volumes/[^/]+"); n != 1 {
				t.Errorf("%d deletes of the volume left creating", n)
			}
		},
	}, {
		name:  "over quota",
		setup: func(f *fakeOpenStack) { f.edit(func() { f.quota = 1 }); f.addVolume(projDemo, "other") },
		opts:  newOpts(1<<30, nil),
		err:   driver.ErrInvalid,
		says:  []string{"cinder create db", "VolumeLimitExceeded"},
	}, {
		name: "an unknown volume type",
		opts: newOpts(1<<30, map[string]string{OptVolumeType: "gold"}),
		err:  driver.ErrNotFound,
		says: []string{"cinder create db", "Volume type with name gold could not be found"},
	}, {
		name:  "Cinder hangs on create",
		setup: func(f *fakeOpenStack) { f.script("cinder", "POST", "/volumes", 1, fakeReply{Hang: true}) },
		opts:  newOpts(1<<30, nil),
		err:   driver.ErrTimeout,
		says:  []string{"cinder create db", "Cinder unreachable or failing"},
	}, {
		name: "a snapshot that does not exist",
		opts: driver.Options{Size: 10 << 30, FSType: "ext4", Backend: map[string]string{OptSnapshotID: "1e0d6a1c-3c5e-4f6a-9b8c-7d6e5f4a3b2c"}},
		err:  driver.ErrNotFound,
		says: []string{"cinder create db", "read snapshot 1e0d6a1c-3c5e-4f6a-9b8c-7d6e5f4a3b2c (option snapshot-id)"},
	}, {
		name: "a source volume that does not exist",
		opts: driver.Options{Size: 10 << 30, FSType: "ext4", Backend: map[string]string{OptSourceVolumeID: "1e0d6a1c-3c5e-4f6a-9b8c-7d6e5f4a3b2c"}},
		err:  driver.ErrNotFound,
		says: []string{"cinder create db", "read volume 1e0d6a1c-3c5e-4f6a-9b8c-7d6e5f4a3b2c (option source-volume-id)"},
	}, {
		name: "the name cannot be looked up",
		setup: func(f *fakeOpenStack) {
			f.script("cinder", "GET", "/volumes/detail", 1, fakeReply{Status: 500, Body: apiErr("computeFault", 500, "db down")})
		},
		opts: newOpts(1<<30, nil),
		says: []string{"cinder list db", "Cinder unreachable or failing", "db down"},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			if tc.setup != nil {
				tc.setup(f)
			}
			p := f.prov("host-a")
			if tc.between > 0 {
				f.expireBetweenPolls(p, tc.between)
			}
			err := p.Create(f.ctx(t), "db", tc.opts)
			if tc.err == nil {
				if err == nil {
					t.Fatal("no error")
				}
				wantErr(t, err, err, tc.says...)
			} else {
				wantErr(t, err, tc.err, tc.says...)
			}
			if tc.check != nil {
				tc.check(t, f)
			}
		})
	}
}

// TestCreateSizeFromSource: without -o size, a clone gets its source's size.
func TestCreateSizeFromSource(t *testing.T) {
	f := newFake(t)
	src := f.addVolume(projDemo, "src")
	f.edit(func() {
		src.Size = 7
		f.snapshots["5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d"] = 3
	})
	p := f.prov("host-a")
	def := uint64(10 << 30) // DEFAULT_SIZE
	wantErr(t, p.Create(withTimeout(t, 5*time.Second), "from-snap", driver.Options{Size: def, FSType: "ext4",
		Backend: map[string]string{OptSnapshotID: "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d"}}), nil)
	wantErr(t, p.Create(withTimeout(t, 5*time.Second), "from-vol", driver.Options{Size: def, FSType: "ext4",
		Backend: map[string]string{OptSourceVolumeID: src.ID}}), nil)
	wantErr(t, p.Create(withTimeout(t, 5*time.Second), "sized", driver.Options{Size: 2 << 30, SizeGiven: true, FSType: "ext4",
		Backend: map[string]string{OptSourceVolumeID: src.ID}}), nil)
	wantErr(t, p.Create(withTimeout(t, 5*time.Second), "default", driver.Options{Size: def, FSType: "ext4"}), nil)
	var got []string
	for _, c := range f.find("cinder", "POST", "/volumes") {
		b := c.Body["volume"].(map[string]any)
		got = append(got, strings.Join([]string{b["name"].(string), strings.TrimSuffix(mustJSON(b["size"]), ".0"),
			str(b, "snapshot_id"), str(b, "source_volid")}, " "))
	}
	want := []string{"from-snap 3 5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d ", "from-vol 7  " + src.ID, "sized 2  " + src.ID, "default 10  "}
	if !slices.Equal(got, want) {
		t.Errorf("creates\n%q, want\n%q", got, want)
	}
	if n := f.count("cinder", "GET", "/snapshots/.*"); n != 1 {
		t.Errorf("%d snapshot reads", n)
	}
	v, err := p.Get(withTimeout(t, 5*time.Second), "from-snap")
	wantErr(t, err, nil)
	if v.Status[OptSnapshotID] != "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d" || v.Size != 3<<30 {
		t.Errorf("Get: %+v", v)
	}
	v, err = p.Get(withTimeout(t, 5*time.Second), "from-vol")
	wantErr(t, err, nil)
	if v.Status[OptSourceVolumeID] != src.ID || v.Size != 7<<30 {
		t.Errorf("Get: %+v", v)
	}
}

// TestCreateInAnotherProject: -o project-id scopes a token to that project and creates there;
// every host then finds the volume by name, and a project without a role is refused by name.
func TestCreateInAnotherProject(t *testing.T) {
	f := newFake(t)
	p := f.prov("host-a")
	wantErr(t, p.Create(withTimeout(t, 5*time.Second), "db", newOpts(1<<30, map[string]string{OptProjectID: projDemo3})), nil)
	if _, project := created(t, f); project != projDemo3 {
		t.Errorf("created in %s, want %s", project, projDemo3)
	}
	scoped := false
	for _, c := range f.find("keystone", "POST", "/v3/auth/tokens") {
		scoped = scoped || str(c.Body, "auth", "scope", "project", "id") == projDemo3
	}
	if !scoped {
		t.Error("no token scoped to the project by id")
	}
	// demo3 is not in /v3/auth/projects: another host does not find it there...
	_, err := f.prov("host-b").Get(withTimeout(t, 5*time.Second), "db")
	wantErr(t, err, driver.ErrNotFound, `no volume named "db"`)
	// ... but once listed, it does.
	f.edit(func() { f.projects[2].Listed = true })
	v, err := f.prov("host-b").Get(withTimeout(t, 5*time.Second), "db")
	wantErr(t, err, nil)
	if v.Status["project-id"] != projDemo3 {
		t.Errorf("project-id %v", v.Status["project-id"])
	}
	// A project where the user has no role.
	f.edit(func() { f.projects[1].Role = false })
	err = f.prov("host-a").Create(withTimeout(t, 5*time.Second), "db2", newOpts(1<<30, map[string]string{OptProjectID: projDemo2}))
	wantErr(t, err, driver.ErrPermission, "does not let user demo work in project "+projDemo2, "does the user have a role there?")
	if strings.Contains(err.Error(), fakePassword) {
		t.Errorf("the error shows the password: %v", err)
	}
}

func TestGet(t *testing.T) {
	f := newFake(t)
	v := f.addVolume(projDemo, "db")
	f.edit(func() {
		v.Metadata[metaMkfsOptions] = "-E nodiscard"
		v.Metadata[metaMountOptions] = "noatime"
		v.Multiattach = true
	})
	f.attach(v, "host-b", mountB)
	f.attach(v, "host-c", mountA)
	got, err := f.prov("host-a").Get(withTimeout(t, 5*time.Second), "db")
	wantErr(t, err, nil)
	want := driver.Volume{Name: "db", Size: 1 << 30, FSType: "ext4", MkfsOptions: []string{"-E", "nodiscard"}, MountOptions: "noatime",
		CreatedAt: v.Created,
		Status: map[string]any{"cinder-id": v.ID, "cinder-status": "in-use", "volume-type": "rbd", "availability-zone": "nova",
			"project-id": projDemo},
	}
	holders := strings.Split(got.Holder, ", ")
	slices.Sort(holders)
	got.Holder = ""
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Get\n%+v, want\n%+v", got, want)
	}
	if wantH := []string{"host host-b (container " + InstanceUUID(mountB) + ")", "host host-c (container " + InstanceUUID(mountA) + ")"}; !slices.Equal(holders, wantH) {
		t.Errorf("holders %q, want %q", holders, wantH)
	}
}

func TestLocate(t *testing.T) {
	cases := []struct {
		name    string
		setup   func(f *fakeOpenStack) map[string]*fakeVolume
		err     error
		says    []string
		project string // where it is found
		check   func(t *testing.T, f *fakeOpenStack)
	}{{
		name: "in the configured project: the others are not asked",
		setup: func(f *fakeOpenStack) map[string]*fakeVolume {
			return map[string]*fakeVolume{"a": f.addVolume(projDemo, "db"), "b": f.addVolume(projDemo2, "db")}
		},
		project: projDemo,
		check: func(t *testing.T, f *fakeOpenStack) {
			if n := f.count("keystone", "GET", "/v3/auth/projects"); n != 0 {
				t.Errorf("%d project lists", n)
			}
		},
	}, {
		name: "in another project",
		setup: func(f *fakeOpenStack) map[string]*fakeVolume {
			return map[string]*fakeVolume{"a": f.addVolume(projDemo2, "db")}
		},
		project: projDemo2,
	}, {
		name: "twice in the configured project",
		setup: func(f *fakeOpenStack) map[string]*fakeVolume {
			return map[string]*fakeVolume{"a": f.addVolume(projDemo, "db"), "b": f.addVolume(projDemo, "db")}
		},
		err:  driver.ErrInvalid,
		says: []string{`2 Cinder volumes are named "db"`, "%a", "%b", "rename or delete all but one"},
	}, {
		name: "in two other projects",
		setup: func(f *fakeOpenStack) map[string]*fakeVolume {
			f.edit(func() { f.projects[2].Listed = true })
			return map[string]*fakeVolume{"a": f.addVolume(projDemo2, "db"), "b": f.addVolume(projDemo3, "db")}
		},
		err:  driver.ErrInvalid,
		says: []string{`2 Cinder volumes are named "db"`, "%a in project " + projDemo2, "%b in project " + projDemo3},
	}, {
		name: "a listed project without a role is skipped",
		setup: func(f *fakeOpenStack) map[string]*fakeVolume {
			f.edit(func() { f.projects[1].Role, f.projects[2].Listed = false, true })
			return map[string]*fakeVolume{"a": f.addVolume(projDemo2, "db"), "b": f.addVolume(projDemo3, "db")}
		},
		project: projDemo3,
	}, {
		name: "a disabled project is skipped",
		setup: func(f *fakeOpenStack) map[string]*fakeVolume {
			f.edit(func() { f.projects[1].Enabled = false })
			return map[string]*fakeVolume{"a": f.addVolume(projDemo2, "db")}
		},
		err:  driver.ErrNotFound,
		says: []string{`no volume named "db"`},
		check: func(t *testing.T, f *fakeOpenStack) {
			if n := f.count("cinder", "GET", "/volumes/detail"); n != 1 {
				t.Errorf("%d volume lists, want only the configured project's", n)
			}
			for _, c := range f.find("keystone", "POST", "/v3/auth/tokens") {
				if str(c.Body, "auth", "scope", "project", "id") == projDemo2 {
					t.Error("a token was asked for the disabled project")
				}
			}
		},
	}, {
		name:  "nowhere",
		setup: func(f *fakeOpenStack) map[string]*fakeVolume { f.addVolume(projDemo2, "dbx"); return nil },
		err:   driver.ErrNotFound,
		says:  []string{`no volume named "db"`},
	}, {
		name: "another project's Cinder fails",
		setup: func(f *fakeOpenStack) map[string]*fakeVolume {
			f.scriptFunc("cinder", "GET", "/volumes/detail", func(w http.ResponseWriter, c fakeCall) bool {
				if c.Project != projDemo2 {
					return false
				}
				f.reply(w, 500, apiErr("computeFault", 500, "boom"))
				return true
			})
			return nil
		},
		says: []string{"cinder list db", "Cinder unreachable or failing"},
	}, {
		name: "Keystone fails for another project",
		setup: func(f *fakeOpenStack) map[string]*fakeVolume {
			f.scriptFunc("keystone", "POST", "/v3/auth/tokens", func(w http.ResponseWriter, c fakeCall) bool {
				if str(c.Body, "auth", "scope", "project", "id") != projDemo2 {
					return false
				}
				f.reply(w, 500, `{"error": {"code": 500, "message": "boom"}}`)
				return true
			})
			return nil
		},
		says: []string{"Keystone at", "unreachable or failing"},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			vs := tc.setup(f)
			v, err := f.prov("host-a").Get(withTimeout(t, 5*time.Second), "db")
			var says []string
			for _, s := range tc.says {
				for k, fv := range vs {
					s = strings.ReplaceAll(s, "%"+k, fv.ID)
				}
				says = append(says, s)
			}
			if tc.err == nil && len(says) > 0 {
				if err == nil {
					t.Fatal("no error")
				}
				wantErr(t, err, err, says...)
			} else {
				wantErr(t, err, tc.err, says...)
			}
			if tc.project != "" && v.Status["project-id"] != tc.project {
				t.Errorf("found in %v, want %s", v.Status["project-id"], tc.project)
			}
			if tc.check != nil {
				tc.check(t, f)
			}
		})
	}
}

// TestOtherProjectsCached: the list of other projects is read once a minute, and kept when
// Keystone fails to give it again.
func TestOtherProjectsCached(t *testing.T) {
	f := newFake(t)
	f.addVolume(projDemo2, "db")
	p := f.prov("host-a")
	for i := 0; i < 3; i++ {
		if _, err := p.Get(withTimeout(t, 5*time.Second), "db"); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.count("keystone", "GET", "/v3/auth/projects"); n != 1 {
		t.Errorf("%d project lists for 3 calls in a minute", n)
	}
	// A minute later Keystone fails to list: the projects known are kept.
	p.mu.Lock()
	p.othersAt = time.Now().Add(-othersTTL)
	p.mu.Unlock()
	f.script("keystone", "GET", "/v3/auth/projects", 1, fakeReply{Status: 500, Body: `{"error": {"code": 500, "message": "boom"}}`})
	v, err := p.Get(withTimeout(t, 5*time.Second), "db")
	wantErr(t, err, nil)
	if v.Status["project-id"] != projDemo2 || f.count("keystone", "GET", "/v3/auth/projects") != 2 {
		t.Errorf("found in %v after %d lists", v.Status["project-id"], f.count("keystone", "GET", "/v3/auth/projects"))
	}
}

func TestList(t *testing.T) {
	f := newFake(t)
	f.edit(func() { f.pageSize = 2 }) // Cinder's osapi_max_limit: the list comes page by page
	for _, n := range []string{"web", "db", "cache", "logs", "db~removed-20261129T150000.000Z", "bad name"} {
		f.addVolume(projDemo, n)
	}
	unmanaged := f.addVolume(projDemo, "unmanaged") // made outside the plugin: listed too
	f.addVolume(projDemo2, "shared")
	f.addVolume(projDemo2, "db") // the configured project's wins
	theirs := f.addVolume(projDemo2, "theirs")
	f.edit(func() { unmanaged.Metadata, theirs.Metadata = map[string]string{}, map[string]string{} })
	f.addVolume(projDemo3, "unlisted")
	vs, err := f.prov("host-a").List(withTimeout(t, 5*time.Second))
	wantErr(t, err, nil)
	var got []string
	for _, v := range vs {
		got = append(got, v.Name+"@"+v.Status["project-id"].(string)[:5])
	}
	want := []string{"cache@17cd7", "db@17cd7", "logs@17cd7", "shared@42dd6", "unmanaged@17cd7", "web@17cd7"}
	if !slices.Equal(got, want) {
		t.Errorf("List %v, want %v", got, want)
	}
	lists := f.find("cinder", "GET", "/volumes/detail")
	if len(lists) < 5 {
		t.Errorf("%d pages read, want every page", len(lists))
	}
	for _, c := range lists {
		md := c.Query.Get("metadata")
		if (c.Project == projDemo) != (md == "") || (md != "" && md != "{'"+metaManaged+"':'"+managedBy+"'}") {
			t.Errorf("list of project %s with metadata filter %q", c.Project, md)
		}
	}
}

func TestListFails(t *testing.T) {
	f := newFake(t)
	f.addVolume(projDemo, "db")
	f.script("cinder", "GET", "/volumes/detail", 1, fakeReply{Status: 503, Body: apiErr("computeFault", 503, "down")})
	_, err := f.prov("host-a").List(withTimeout(t, 5*time.Second))
	wantErr(t, err, err, "cinder list volumes of project "+projDemo, "Cinder unreachable or failing")

	f = newFake(t)
	f.scriptFunc("cinder", "GET", "/volumes/detail", func(w http.ResponseWriter, c fakeCall) bool {
		if c.Project != projDemo2 {
			return false
		}
		f.reply(w, 403, apiErr("forbidden", 403, "no"))
		return true
	})
	_, err = f.prov("host-a").List(withTimeout(t, 5*time.Second))
	wantErr(t, err, driver.ErrPermission, "cinder list volumes of project "+projDemo2)

	// A listed project without a role is skipped.
	f = newFake(t)
	f.addVolume(projDemo2, "x")
	f.edit(func() { f.projects[1].Role = false })
	vs, err := f.prov("host-a").List(withTimeout(t, 5*time.Second))
	wantErr(t, err, nil)
	if len(vs) != 0 {
		t.Errorf("List %+v", vs)
	}
}

func TestRemove(t *testing.T) {
	keptRE := regexp.MustCompile(`^db~removed-\d{8}T\d{6}\.\d{3}Z$`)
	cases := []struct {
		name    string
		setup   func(f *fakeOpenStack, v *fakeVolume)
		action  driver.RemoveAction
		between int // the deadline expires in the n-th wait between polls
		err     error
		says    []string
		writes  []string // the Cinder writes, "%ID" for the volume's id
		check   func(t *testing.T, f *fakeOpenStack, v *fakeVolume)
	}{{
		name:   "delete: waits until it is gone",
		action: driver.RemoveDelete,
		writes: []string{"cinder DELETE /volumes/%ID"},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume) {
			if _, ok := f.volume(v.ID); ok {
				t.Error("the volume is still there")
			}
			if n := f.count("cinder", "GET", "/volumes/"+v.ID); n != 2 {
				t.Errorf("%d polls, want 2 (deleting, gone)", n)
			}
		},
	}, {
		name:   "keep: renamed out of Docker's sight",
		action: driver.RemoveKeep,
		writes: []string{"cinder PUT /volumes/%ID"},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume) {
			st, _ := f.volume(v.ID)
			if !keptRE.MatchString(st.Name) || !strings.Contains(st.Description, "REMOVE_ACTION=keep") || st.Status != "available" {
				t.Errorf("kept as %q (%q), status %s", st.Name, st.Description, st.Status)
			}
			if _, err := f.prov("host-a").Get(withTimeout(t, 5*time.Second), "db"); !errors.Is(err, driver.ErrNotFound) {
				t.Errorf("Get after keep: %v", err)
			}
		},
	}, {
		name:   "trash: refused, Cinder has none",
		action: driver.RemoveTrash,
		err:    driver.ErrInvalid,
		says:   []string{"REMOVE_ACTION=trash needs BACKEND=rbd"},
	}, {
		name:   "attached: refused naming the holder",
		setup:  func(f *fakeOpenStack, v *fakeVolume) { f.attach(v, "host-b", mountB) },
		action: driver.RemoveDelete,
		err:    driver.ErrInUse,
		says:   []string{"volume db is attached to host host-b (container " + InstanceUUID(mountB) + ")", "stop its containers there first"},
	}, {
		name:   "attached: keep refused too",
		setup:  func(f *fakeOpenStack, v *fakeVolume) { f.attach(v, "host-b", mountB) },
		action: driver.RemoveKeep,
		err:    driver.ErrInUse,
	}, {
		name:   "being attached (an attachment not completed): refused with the command that shows it",
		setup:  func(f *fakeOpenStack, v *fakeVolume) { f.reserve(v, "host-b", mountB) },
		action: driver.RemoveDelete,
		err:    driver.ErrInUse,
		says:   []string{"volume db is being attached", "Cinder status attaching", "openstack volume attachment list --volume-id %ID"},
	}, {
		name: "Cinder refuses the delete (snapshots)",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			f.script("cinder", "DELETE", "/volumes/.*", 1, fakeReply{Status: 400, Body: mustJSON(fixture("cinder_volume_delete_in_use.json"))})
		},
		action: driver.RemoveDelete,
		err:    driver.ErrInvalid,
		says:   []string{"cinder delete db", "have snapshots"},
		writes: []string{"cinder DELETE /volumes/%ID"},
	}, {
		name: "deletion fails in Cinder",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			f.edit(func() { f.deleteSettle = []string{"deleting", "error_deleting"} })
		},
		action: driver.RemoveDelete,
		says:   []string{"cinder could not delete volume db (%ID): status error_deleting"},
		writes: []string{"cinder DELETE /volumes/%ID"},
	}, {
		name: "deletion never ends: the deadline",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			f.edit(func() { f.deleteSettle = slices.Repeat([]string{"deleting"}, 100) })
			f.deadlineAt("cinder", "GET", "/volumes/"+v.ID, 3)
		},
		action: driver.RemoveDelete,
		err:    driver.ErrTimeout, // while polling or between polls
		says:   []string{"db"},
		writes: []string{"cinder DELETE /volumes/%ID"},
	}, {
		name: "deletion never ends: the deadline between two polls",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			f.edit(func() { f.deleteSettle = slices.Repeat([]string{"deleting"}, 100) })
		},
		action:  driver.RemoveDelete,
		between: 2,
		err:     driver.ErrTimeout,
		says:    []string{`volume db (%ID) still "deleting" at the deadline`},
		writes:  []string{"cinder DELETE /volumes/%ID"},
	}, {
		name: "Cinder fails while polling the deletion",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			f.script("cinder", "GET", "/volumes/"+v.ID, 1, fakeReply{Status: 500, Body: apiErr("computeFault", 500, "boom")})
		},
		action: driver.RemoveDelete,
		says:   []string{"cinder get db", "Cinder unreachable or failing"},
		writes: []string{"cinder DELETE /volumes/%ID"},
	}, {
		name: "the rename fails",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			f.script("cinder", "PUT", "/volumes/.*", 1, fakeReply{Status: 403, Body: apiErr("forbidden", 403, "no")})
		},
		action: driver.RemoveKeep,
		err:    driver.ErrPermission,
		says:   []string{"cinder rename (REMOVE_ACTION=keep) to db~removed-"},
		writes: []string{"cinder PUT /volumes/%ID"},
	}, {
		name:   "not there",
		setup:  func(f *fakeOpenStack, v *fakeVolume) { f.edit(func() { v.Name = "other" }) },
		action: driver.RemoveDelete,
		err:    driver.ErrNotFound,
		says:   []string{`no volume named "db"`},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			v := f.addVolume(projDemo, "db")
			if tc.setup != nil {
				tc.setup(f, v)
			}
			p := f.prov("host-a")
			if tc.between > 0 {
				f.expireBetweenPolls(p, tc.between)
			}
			err := p.Remove(f.ctx(t), "db", tc.action)
			var says []string
			for _, s := range tc.says {
				says = append(says, strings.ReplaceAll(s, "%ID", v.ID))
			}
			if tc.err == nil && len(says) > 0 {
				if err == nil {
					t.Fatal("no error")
				}
				wantErr(t, err, err, says...)
			} else {
				wantErr(t, err, tc.err, says...)
			}
			var want []string
			for _, w := range tc.writes {
				want = append(want, strings.ReplaceAll(w, "%ID", v.ID))
			}
			if got := f.writes(); !slices.Equal(got, want) {
				t.Errorf("writes %v, want %v", got, want)
			}
			if tc.check != nil {
				tc.check(t, f, v)
			}
		})
	}
}

func TestDifferences(t *testing.T) {
	f := newFake(t)
	v := f.addVolume(projDemo, "db")
	f.edit(func() { v.VolumeType = "rbd-multiattach" })
	p := f.prov("host-a")
	vol, err := p.Get(withTimeout(t, 5*time.Second), "db")
	wantErr(t, err, nil)
	cases := []struct {
		backend map[string]string
		want    []string
	}{
		{nil, nil},
		{map[string]string{OptVolumeType: "rbd-multiattach", OptProjectID: projDemo, OptAvailabilityZone: "nova"}, nil},
		// Cinder takes a type's name or its id: the id of the volume's type is no difference.
		{map[string]string{OptVolumeType: "9b1449dd-d32b-4cdd-9792-0d972a018f31"}, nil},
		{map[string]string{OptVolumeType: "f387ba0f-8a47-47bf-891d-825247ad119b"}, []string{"volume-type f387ba0f-8a47-47bf-891d-825247ad119b (it has rbd-multiattach)"}},
		{map[string]string{OptVolumeType: "rbd"}, []string{"volume-type rbd (it has rbd-multiattach)"}},
		{map[string]string{OptProjectID: projDemo2, OptAvailabilityZone: "az2", OptSnapshotID: "s1"},
			[]string{"project-id " + projDemo2 + " (it has " + projDemo + ")", "availability-zone az2 (it has nova)", "snapshot-id s1 (it has none)"}},
	}
	for _, tc := range cases {
		got, err := p.Differences(withTimeout(t, 5*time.Second), vol, driver.Options{Backend: tc.backend})
		wantErr(t, err, nil)
		if !slices.Equal(got, tc.want) {
			t.Errorf("Differences(%v) = %q, want %q", tc.backend, got, tc.want)
		}
	}
	if n := f.count("cinder", "GET", "/types/.*"); n != 3 {
		t.Errorf("%d type reads, want one per type option that is not the volume's type's name", n)
	}
}

// TestCreateUndoAtTheDeadline: Create's deadline expires while Cinder still creates the volume.
// The undo's delete is refused (Cinder deletes a volume that is creating only before it is
// scheduled: recorded in testdata/cinder_volume_delete_creating.json): the undo waits for the
// creation to end, on its own deadline, then deletes the volume, so that it does not hold the
// name although Create failed.
func TestCreateUndoAtTheDeadline(t *testing.T) {
	f := newFake(t)
	f.edit(func() { f.createSettle = []string{"creating", "creating", "creating", "available"} })
	p := f.prov("host-a")
	f.expireBetweenPolls(p, 2)
	err := p.Create(f.ctx(t), "db", newOpts(1<<30, nil))
	wantErr(t, err, driver.ErrTimeout, "cinder create db")
	if st := statusesNamed(f, "db"); len(st) != 0 && !slices.Equal(st, []string{"deleting"}) {
		t.Errorf("volumes named db after the failed Create: %v, want none (or one being deleted)", st)
	}
}
