package cinder

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// Host identities of the tests: host-a's own, and another machine's.
const (
	myHostID    = "a1a2a3a4a5a6a7a8a9a0b1b2b3b4b5b6"
	otherHostID = "c1c2c3c4c5c6c7c8c9c0d1d2d3d4d5d6"
)

// attachAs gives the volume a completed attachment made under a host identity ("": the older
// name-only format).
func (f *fakeOpenStack) attachAs(v *fakeVolume, host, id, mountID string) *fakeAttachment {
	a := f.attach(v, host, mountID)
	if id != "" {
		f.edit(func() { a.Mountpoint = "docker:" + host + "/" + id + "/" + mountID })
	}
	return a
}

// scriptedRecorder is a Recorder that records its calls and answers as scripted.
type scriptedRecorder struct {
	mu      sync.Mutex
	records []string // "host id clients" per RecordClients
	clears  []string // "pool/image id" per ClearClients
	err     error
}

func (r *scriptedRecorder) RecordClients(_ context.Context, spec driver.ImageSpec, host, id string, clients []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, spec.String()+" "+host+" "+id+" "+strings.Join(clients, ","))
	return r.err
}

func (r *scriptedRecorder) ClearClients(_ context.Context, spec driver.ImageSpec, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clears = append(r.clears, spec.String()+" "+id)
	return r.err
}

func TestAttachWithHostIdentity(t *testing.T) {
	short, otherShort := driver.ShortHostID(myHostID), driver.ShortHostID(otherHostID)
	type seeded struct{ a *fakeAttachment }
	cases := []struct {
		name     string
		setup    func(f *fakeOpenStack, v *fakeVolume) seeded
		req      func(s seeded) driver.AttachRequest
		watchers *scriptedWatchers
		fencer   *scriptedFencer
		err      error
		says     []string
		check    func(t *testing.T, f *fakeOpenStack, v *fakeVolume, s seeded, att driver.Attachment, w *scriptedWatchers, fe *scriptedFencer)
	}{{
		name:     "a new attachment records the host's identity in its mount point",
		setup:    func(f *fakeOpenStack, v *fakeVolume) seeded { return seeded{} },
		req:      func(seeded) driver.AttachRequest { return driver.AttachRequest{MountID: mountA} },
		watchers: &scriptedWatchers{},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, _ seeded, att driver.Attachment, w *scriptedWatchers, _ *scriptedFencer) {
			as := f.attachmentsOf(v.ID)
			if len(as) != 1 || as[0].ID != att.ID || as[0].Mountpoint != "docker:host-a/"+myHostID+"/"+mountA || as[0].Status != "attached" {
				t.Errorf("attachments %+v", as)
			}
			if len(w.calls) != 1 || len(w.foreignCalls) != 0 {
				t.Errorf("watchers asked %v, foreign watchers %v", w.calls, w.foreignCalls)
			}
			got, err := f.prov("host-c").Get(withTimeout(t, 5*time.Second), "db")
			wantErr(t, err, nil)
			if want := "host host-a (host ID " + short + ") (container " + InstanceUUID(mountA) + ")"; got.Holder != want {
				t.Errorf("holder %q, want %q", got.Holder, want)
			}
		},
	}, {
		name:     "its own attachment again: reused once no other machine's client has the image open",
		setup:    func(f *fakeOpenStack, v *fakeVolume) seeded { return seeded{f.attachAs(v, "host-a", myHostID, mountA)} },
		req:      func(seeded) driver.AttachRequest { return driver.AttachRequest{MountID: mountB} },
		watchers: &scriptedWatchers{},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, s seeded, att driver.Attachment, w *scriptedWatchers, _ *scriptedFencer) {
			if att.ID != s.a.ID || len(f.writes()) != 0 {
				t.Errorf("attachment %q (want %q), writes %v", att.ID, s.a.ID, f.writes())
			}
			if len(w.foreignCalls) != 1 || w.foreignCalls[0] != imageOf(v) || len(w.calls) != 0 {
				t.Errorf("foreign watchers asked %v, watchers %v", w.foreignCalls, w.calls)
			}
		},
	}, {
		name:     "its own attachment, but another machine's client has the image open: refused (a cloned identity)",
		setup:    func(f *fakeOpenStack, v *fakeVolume) seeded { return seeded{f.attachAs(v, "host-a", myHostID, mountA)} },
		req:      func(seeded) driver.AttachRequest { return driver.AttachRequest{MountID: mountB} },
		watchers: &scriptedWatchers{foreign: []string{"10.0.0.9:0/77"}},
		err:      driver.ErrBusyElsewhere,
		says:     []string{"volume db is attached under this host's identity (host host-a, host ID " + short + ")", "10.0.0.9:0/77", "cinder/volume-", driver.HostIDFile},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, _ seeded, _ driver.Attachment, _ *scriptedWatchers, _ *scriptedFencer) {
			if w := f.writes(); len(w) != 0 {
				t.Errorf("writes %v: the attachment is left to the other machine", w)
			}
		},
	}, {
		name:     "its own attachment, the foreign watchers cannot be read",
		setup:    func(f *fakeOpenStack, v *fakeVolume) seeded { return seeded{f.attachAs(v, "host-a", myHostID, mountA)} },
		req:      func(seeded) driver.AttachRequest { return driver.AttachRequest{MountID: mountB} },
		watchers: &scriptedWatchers{foreignErr: errors.New("rados: " + driver.ErrTimeout.Error())},
		says:     []string{"volume db: rados: timed out"},
	}, {
		name: "this host's name under another identity: refused, saying so",
		setup: func(f *fakeOpenStack, v *fakeVolume) seeded {
			return seeded{f.attachAs(v, "host-a", otherHostID, mountB)}
		},
		req: func(seeded) driver.AttachRequest { return driver.AttachRequest{MountID: mountA} },
		err: driver.ErrBusyElsewhere,
		says: []string{"volume db is attached to host host-a (host ID " + otherShort + ") (container " + InstanceUUID(mountB) + ")",
			"it has this host's NODE_NAME, not its identity " + short, "LOCK_BREAK=on"},
	}, {
		name:  "the older name-only format, named by this host's state: this host's",
		setup: func(f *fakeOpenStack, v *fakeVolume) seeded { return seeded{f.attachAs(v, "host-a", "", mountA)} },
		req:   func(s seeded) driver.AttachRequest { return driver.AttachRequest{MountID: mountA, Claimed: s.a.ID} },
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, s seeded, att driver.Attachment, _ *scriptedWatchers, _ *scriptedFencer) {
			if att.ID != s.a.ID || len(f.writes()) != 0 {
				t.Errorf("attachment %q (want %q), writes %v", att.ID, s.a.ID, f.writes())
			}
		},
	}, {
		name:  "the older name-only format, not named by this host's state: another machine's of the same name",
		setup: func(f *fakeOpenStack, v *fakeVolume) seeded { return seeded{f.attachAs(v, "host-a", "", mountB)} },
		req:   func(seeded) driver.AttachRequest { return driver.AttachRequest{MountID: mountA} },
		err:   driver.ErrBusyElsewhere,
		says:  []string{"attached to host host-a (container " + InstanceUUID(mountB) + ")", "it has this host's NODE_NAME"},
	}, {
		name: "takeover from another identity: the fencer is told whose clients to fence",
		setup: func(f *fakeOpenStack, v *fakeVolume) seeded {
			return seeded{f.attachAs(v, "host-b", otherHostID, mountB)}
		},
		req:    func(seeded) driver.AttachRequest { return driver.AttachRequest{MountID: mountA, TakeOver: true} },
		fencer: &scriptedFencer{fenced: []string{"10.0.0.2:0/5"}},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, s seeded, att driver.Attachment, _ *scriptedWatchers, fe *scriptedFencer) {
			if !slices.Equal(fe.holders, []string{otherHostID}) || !slices.Equal(att.Fenced, []string{"10.0.0.2:0/5"}) {
				t.Errorf("fenced holders %q, Fenced %v", fe.holders, att.Fenced)
			}
			if as := f.attachmentsOf(v.ID); len(as) != 1 || as[0].ID != att.ID || as[0].ID == s.a.ID {
				t.Errorf("attachments %+v", as)
			}
		},
	}, {
		name:   "takeover from the name-only format: no holder identity to fence by",
		setup:  func(f *fakeOpenStack, v *fakeVolume) seeded { return seeded{f.attachAs(v, "host-b", "", mountB)} },
		req:    func(seeded) driver.AttachRequest { return driver.AttachRequest{MountID: mountA, TakeOver: true} },
		fencer: &scriptedFencer{},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, _ seeded, _ driver.Attachment, _ *scriptedWatchers, fe *scriptedFencer) {
			if !slices.Equal(fe.holders, []string{""}) {
				t.Errorf("fenced holders %q", fe.holders)
			}
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			v := f.addVolume(projDemo, "db")
			s := tc.setup(f, v)
			cfg := f.config("host-a")
			cfg.HostID = myHostID
			if tc.watchers != nil {
				cfg.Watchers = tc.watchers
			}
			if tc.fencer != nil {
				cfg.Fencer = tc.fencer
			}
			p := New(cfg)
			if _, err := p.Get(withTimeout(t, 5*time.Second), "db"); err != nil {
				t.Fatal(err)
			}
			f.resetCalls()
			att, err := p.Attach(f.ctx(t), "db", tc.req(s))
			if tc.err == nil && len(tc.says) > 0 {
				if err == nil {
					t.Fatal("no error")
				}
				wantErr(t, err, err, tc.says...)
			} else {
				wantErr(t, err, tc.err, tc.says...)
			}
			if tc.check != nil {
				tc.check(t, f, v, s, att, tc.watchers, tc.fencer)
			}
		})
	}
}

// TestDetachWithHostIdentity: without the attachment's ID, Detach deletes the attachments made
// under this host's identity, not those of another machine that shares its name, nor an older
// name-only one (its state would have named it), and clears the clients it recorded.
func TestDetachWithHostIdentity(t *testing.T) {
	f := newFake(t)
	v := f.addVolume(projDemo, "db")
	f.edit(func() { v.Multiattach = true })
	mine := f.attachAs(v, "host-a", myHostID, mountA)
	twin := f.attachAs(v, "host-a", otherHostID, mountB)
	old := f.attachAs(v, "host-a", "", mountB)
	rec := &scriptedRecorder{}
	cfg := f.config("host-a")
	cfg.HostID, cfg.Recorder = myHostID, rec
	p := New(cfg)
	spec := imageOf(v)
	err := p.Detach(f.ctx(t), "db", driver.Attachment{MountID: mountA, Map: driver.MapRequest{ImageSpec: spec}})
	wantErr(t, err, nil)
	if w := f.writes(); !slices.Equal(w, []string{"cinder DELETE /attachments/" + mine.ID}) {
		t.Errorf("writes %v, want only %s deleted", w, mine.ID)
	}
	var left []string
	for _, a := range f.attachmentsOf(v.ID) {
		left = append(left, a.ID)
	}
	want := []string{twin.ID, old.ID}
	slices.Sort(want)
	if !slices.Equal(left, want) {
		t.Errorf("attachments left %v, want %v", left, want)
	}
	if !slices.Equal(rec.clears, []string{spec.String() + " " + myHostID}) {
		t.Errorf("clears %q", rec.clears)
	}
	// Nothing of this host's left: nothing deleted, nothing cleared.
	f.resetCalls()
	wantErr(t, p.Detach(f.ctx(t), "db", driver.Attachment{MountID: mountA, Map: driver.MapRequest{ImageSpec: spec}}), nil)
	if w := f.writes(); len(w) != 0 || len(rec.clears) != 1 {
		t.Errorf("writes %v, clears %q", w, rec.clears)
	}
	// A failure to clear the record does not keep the attachment.
	rec.err = errors.New("rados: down")
	a := f.attachAs(v, "host-a", myHostID, mountA)
	wantErr(t, p.Detach(f.ctx(t), "db", driver.Attachment{ID: a.ID, Map: driver.MapRequest{ImageSpec: spec}}), nil)
	if as := f.attachmentsOf(v.ID); len(as) != 2 {
		t.Errorf("attachments %+v", as)
	}
}

func TestRecordClients(t *testing.T) {
	spec := driver.ImageSpec{Pool: "cinder", Image: "volume-1"}
	att := driver.Attachment{Map: driver.MapRequest{ImageSpec: spec}}
	ctx := withTimeout(t, 5*time.Second)
	rec := &scriptedRecorder{}
	p := New(Config{Host: "host-a", HostID: myHostID, Recorder: rec})
	wantErr(t, p.RecordClients(ctx, "db", att, driver.Mapping{ImageSpec: spec, Client: "10.0.0.1:0/9"}), nil)
	// An attachment without the image (an older record): the mapping's.
	wantErr(t, p.RecordClients(ctx, "db", driver.Attachment{}, driver.Mapping{ImageSpec: spec}), nil)
	if want := []string{"cinder/volume-1 host-a " + myHostID + " 10.0.0.1:0/9", "cinder/volume-1 host-a " + myHostID + " "}; !slices.Equal(rec.records, want) {
		t.Errorf("records %q, want %q", rec.records, want)
	}
	rec.err = fmt.Errorf("rados: %w", driver.ErrTimeout)
	wantErr(t, p.RecordClients(ctx, "db", att, driver.Mapping{}), driver.ErrTimeout, "volume db: rados")
	// Without a recorder or an identity, nothing is recorded.
	for _, cfg := range []Config{{Host: "host-a", HostID: myHostID}, {Host: "host-a", Recorder: rec}} {
		wantErr(t, New(cfg).RecordClients(ctx, "db", att, driver.Mapping{}), nil)
	}
	if len(rec.records) != 3 {
		t.Errorf("records %q", rec.records)
	}
}
