package cinder

import (
	"slices"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

func TestDetach(t *testing.T) {
	type seeded struct{ mine, theirs, pendingMine, pendingOther *fakeAttachment }
	cases := []struct {
		name    string
		setup   func(f *fakeOpenStack, v *fakeVolume) seeded
		att     func(s seeded) driver.Attachment
		script  func(f *fakeOpenStack)
		err     error
		says    []string
		deleted func(s seeded) []string // the attachments Detach deletes, in order
		left    func(s seeded) []string // the attachments left in Cinder
	}{{
		name:    "by ID",
		setup:   func(f *fakeOpenStack, v *fakeVolume) seeded { return seeded{mine: f.attach(v, "host-a", mountA)} },
		att:     func(s seeded) driver.Attachment { return driver.Attachment{ID: s.mine.ID, MountID: mountA} },
		deleted: func(s seeded) []string { return []string{s.mine.ID} },
	}, {
		name: "by ID, only that one on a multiattach volume",
		setup: func(f *fakeOpenStack, v *fakeVolume) seeded {
			f.edit(func() { v.Multiattach = true })
			return seeded{mine: f.attach(v, "host-a", mountA), theirs: f.attach(v, "host-b", mountB)}
		},
		att:     func(s seeded) driver.Attachment { return driver.Attachment{ID: s.mine.ID} },
		deleted: func(s seeded) []string { return []string{s.mine.ID} },
		left:    func(s seeded) []string { return []string{s.theirs.ID} },
	}, {
		name: "ID unknown (a crash before it was recorded): this host's attachments, not another's",
		setup: func(f *fakeOpenStack, v *fakeVolume) seeded {
			f.edit(func() { v.Multiattach = true })
			return seeded{mine: f.attach(v, "host-a", mountA), theirs: f.attach(v, "host-b", mountB)}
		},
		att:     func(s seeded) driver.Attachment { return driver.Attachment{MountID: mountA} },
		deleted: func(s seeded) []string { return []string{s.mine.ID} },
		left:    func(s seeded) []string { return []string{s.theirs.ID} },
	}, {
		name: "an attempt whose answer never came: the pending attachment found by the mount's instance UUID",
		setup: func(f *fakeOpenStack, v *fakeVolume) seeded {
			return seeded{pendingMine: f.reserve(v, "host-a", mountA)}
		},
		att:     func(s seeded) driver.Attachment { return driver.Attachment{MountID: mountA} },
		deleted: func(s seeded) []string { return []string{s.pendingMine.ID} },
	}, {
		name: "another mount's pending attachment is left alone",
		setup: func(f *fakeOpenStack, v *fakeVolume) seeded {
			return seeded{pendingOther: f.reserve(v, "host-b", mountB)}
		},
		att:  func(s seeded) driver.Attachment { return driver.Attachment{MountID: mountA} },
		left: func(s seeded) []string { return []string{s.pendingOther.ID} },
	}, {
		name:  "the attachment is already gone",
		setup: func(f *fakeOpenStack, v *fakeVolume) seeded { return seeded{} },
		att: func(s seeded) driver.Attachment {
			return driver.Attachment{ID: "0f2c5a1e-9d8b-4c7a-8e6f-5d4c3b2a1908", MountID: mountA}
		},
		deleted: func(s seeded) []string { return []string{"0f2c5a1e-9d8b-4c7a-8e6f-5d4c3b2a1908"} },
	}, {
		name:    "nothing attached, no ID: nothing to do",
		setup:   func(f *fakeOpenStack, v *fakeVolume) seeded { return seeded{} },
		att:     func(s seeded) driver.Attachment { return driver.Attachment{MountID: mountA} },
		deleted: func(s seeded) []string { return nil },
	}, {
		name:  "Cinder fails the delete",
		setup: func(f *fakeOpenStack, v *fakeVolume) seeded { return seeded{mine: f.attach(v, "host-a", mountA)} },
		att:   func(s seeded) driver.Attachment { return driver.Attachment{ID: s.mine.ID} },
		script: func(f *fakeOpenStack) {
			f.script("cinder", "DELETE", "/attachments/.*", 1, fakeReply{Status: 500, Body: apiErr("computeFault", 500, "boom")})
		},
		says: []string{"cinder delete attachment", "of db", "Cinder unreachable or failing"},
	}, {
		name: "the pending attachments cannot be listed",
		setup: func(f *fakeOpenStack, v *fakeVolume) seeded {
			return seeded{pendingMine: f.reserve(v, "host-a", mountA)}
		},
		att: func(s seeded) driver.Attachment { return driver.Attachment{MountID: mountA} },
		script: func(f *fakeOpenStack) {
			f.script("cinder", "GET", "/attachments/detail", 1, fakeReply{Status: 403, Body: apiErr("forbidden", 403, "no")})
		},
		err:  driver.ErrPermission,
		says: []string{"cinder list attachments of db"},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			v := f.addVolume(projDemo, "db")
			s := tc.setup(f, v)
			if tc.script != nil {
				tc.script(f)
			}
			err := f.prov("host-a").Detach(withTimeout(t, 5*time.Second), "db", tc.att(s))
			if len(tc.says) > 0 && tc.err == nil {
				if err == nil {
					t.Fatal("no error")
				}
				wantErr(t, err, err, tc.says...)
			} else {
				wantErr(t, err, tc.err, tc.says...)
			}
			if tc.deleted != nil {
				var got []string
				for _, c := range f.find("cinder", "DELETE", "/attachments/.*") {
					got = append(got, c.Path[len("/attachments/"):])
				}
				if want := tc.deleted(s); !slices.Equal(got, want) {
					t.Errorf("deleted %v, want %v", got, want)
				}
			}
			var left []string
			for _, a := range f.attachmentsOf(v.ID) {
				left = append(left, a.ID)
			}
			var want []string
			if tc.left != nil {
				want = tc.left(s)
			} else if tc.err != nil || len(tc.says) > 0 {
				return
			}
			slices.Sort(want)
			if !slices.Equal(left, want) {
				t.Errorf("attachments left %v, want %v", left, want)
			}
		})
	}
}

func TestDetachVolumeGone(t *testing.T) {
	f := newFake(t)
	err := f.prov("host-a").Detach(withTimeout(t, 5*time.Second), "db", driver.Attachment{ID: "0f2c5a1e-9d8b-4c7a-8e6f-5d4c3b2a1908", MountID: mountA})
	wantErr(t, err, nil)
	if w := f.writes(); len(w) != 0 {
		t.Errorf("writes %v: the volume is gone, and its attachments with it", w)
	}
}

func TestDetachKeystoneDown(t *testing.T) {
	f := newFake(t)
	f.addVolume(projDemo, "db")
	f.script("keystone", "POST", "/v3/auth/tokens", -1, fakeReply{Status: 503, Body: `{"error": {"code": 503, "message": "down"}}`})
	err := f.prov("host-a").Detach(withTimeout(t, 5*time.Second), "db", driver.Attachment{ID: "x", MountID: mountA})
	wantErr(t, err, err, "Keystone at "+f.ks.URL+"/v3 unreachable or failing")
}

// TestAttachDetachRoundTrip: Attach then Detach with what Attach returned leaves the volume
// available, and another host can then attach it.
func TestAttachDetachRoundTrip(t *testing.T) {
	f := newFake(t)
	v := f.addVolume(projDemo, "db")
	a, b := f.prov("host-a"), f.prov("host-b")
	att, err := a.Attach(withTimeout(t, 5*time.Second), "db", driver.AttachRequest{MountID: mountA})
	wantErr(t, err, nil)
	att.MountID = mountA
	wantErr(t, a.Detach(withTimeout(t, 5*time.Second), "db", att), nil)
	if st, _ := f.volume(v.ID); st.Status != "available" || len(f.attachmentsOf(v.ID)) != 0 {
		t.Fatalf("after Detach: status %q, attachments %+v", st.Status, f.attachmentsOf(v.ID))
	}
	if _, err := b.Attach(withTimeout(t, 5*time.Second), "db", driver.AttachRequest{MountID: mountB}); err != nil {
		t.Fatalf("host-b after host-a detached: %v", err)
	}
	// Detaching again what is no longer attached succeeds.
	wantErr(t, a.Detach(withTimeout(t, 5*time.Second), "db", att), nil)
	if as := f.attachmentsOf(v.ID); len(as) != 1 || as[0].Mountpoint != "docker:host-b/"+mountB {
		t.Errorf("host-b's attachment: %+v", as)
	}
}
