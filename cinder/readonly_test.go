package cinder

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// Read-only claims through Attach and Detach on the fake: a read-only attachment (mode "ro", in
// the connector too) is shared by the hosts that read a multiattach volume; a writer and a reader
// never both hold it, also when they race (the later one, finding the other's attachment after
// reserving its own, deletes it and refuses).

// multiattachReadOnly makes v a multiattach volume whose access is readonly.
func multiattachReadOnly(f *fakeOpenStack, v *fakeVolume) {
	f.edit(func() { v.Multiattach = true })
	f.setMeta(v, driver.MetaAccess, driver.AccessReadOnly)
}

// completeMeanwhile makes another host's attachment (made by attach) appear completed between
// this host's look at the volume and its reservation, as a host racing it would.
func completeMeanwhile(f *fakeOpenStack, attach func()) {
	var once sync.Once
	f.scriptFunc("cinder", "POST", "/attachments", func(http.ResponseWriter, fakeCall) bool {
		once.Do(attach)
		return false
	})
}

// claimedByA in a case's AttachRequest.Claimed stands for host-a's attachment's ID.
const claimedByA = "(host-a's attachment)"

func TestAttachReadOnly(t *testing.T) {
	cases := []attachCase{{
		name:     "a volume whose access is readonly: a read-only attachment, the connector's mode ro, watchers asked",
		setup:    func(f *fakeOpenStack, v *fakeVolume) { f.setMeta(v, driver.MetaAccess, driver.AccessReadOnly) },
		req:      driver.AttachRequest{MountID: mountA},
		watchers: &scriptedWatchers{},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, att driver.Attachment, _ *scriptedFencer, w *scriptedWatchers) {
			checkNewAttachment(t, f, v, att, mountA, "ro", w)
			conn := f.find("cinder", "POST", "/attachments")[0].Body["attachment"].(map[string]any)["connector"].(map[string]any)
			if conn["mode"] != "ro" {
				t.Errorf("connector %v: want mode ro", conn)
			}
		},
	}, {
		name: "another reader of a multiattach volume: shared, the watchers (its mapping's) not asked",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			multiattachReadOnly(f, v)
			f.attachRO(v, "host-b", mountB)
		},
		req:      driver.AttachRequest{MountID: mountA},
		watchers: &scriptedWatchers{live: []string{"127.0.0.1:0/2"}},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, att driver.Attachment, _ *scriptedFencer, w *scriptedWatchers) {
			as := f.attachmentsOf(v.ID)
			if len(as) != 2 || as[0].Mode != "ro" || as[1].Mode != "ro" || as[0].Status != "attached" || as[1].Status != "attached" {
				t.Errorf("attachments %+v: want two read-only ones, completed", as)
			}
			if !att.Map.ReadOnly || att.ID == "" || len(w.calls) != 0 {
				t.Errorf("Attach returned %+v; watchers asked %v", att, w.calls)
			}
		},
	}, {
		name: "a reader of a volume that is not multiattach: refused before anything is written, saying to use a multiattach type",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			f.setMeta(v, driver.MetaAccess, driver.AccessReadOnly)
			f.attachRO(v, "host-b", mountB)
		},
		req: driver.AttachRequest{MountID: mountA},
		err: driver.ErrBusyElsewhere,
		says: []string{"volume db is read-only and in use by host host-b (container " + InstanceUUID(mountB) + ")",
			"not multiattach", "-o volume-type="},
		check: func(t *testing.T, f *fakeOpenStack, _ *fakeVolume, _ driver.Attachment, _ *scriptedFencer, _ *scriptedWatchers) {
			if w := f.writes(); len(w) != 0 {
				t.Errorf("writes %v", w)
			}
		},
	}, {
		name: "readers: a read-write claim with LOCK_BREAK is refused naming them, nobody fenced",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			f.edit(func() { v.Multiattach = true })
			f.attachRO(v, "host-b", mountB)
		},
		req:    driver.AttachRequest{MountID: mountA, TakeOver: true},
		fencer: &scriptedFencer{},
		err:    driver.ErrBusyElsewhere,
		says:   []string{"volume db is in use read-only by host host-b (container " + InstanceUUID(mountB) + ")"},
		check: func(t *testing.T, f *fakeOpenStack, _ *fakeVolume, _ driver.Attachment, fe *scriptedFencer, _ *scriptedWatchers) {
			if w := f.writes(); len(w) != 0 || len(fe.calls) != 0 {
				t.Errorf("writes %v, fenced %v", w, fe.calls)
			}
		},
	}, {
		name: "race: a writer completes while this reader reserves: the reader gives way naming it",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			multiattachReadOnly(f, v)
			completeMeanwhile(f, func() { f.attach(v, "host-b", mountB) })
		},
		req:      driver.AttachRequest{MountID: mountA},
		watchers: &scriptedWatchers{},
		err:      driver.ErrBusyElsewhere,
		says:     []string{"volume db (a multiattach volume) is attached read-write to host host-b (container " + InstanceUUID(mountB) + ")", "a read-only use waits"},
		check:    checkGaveWay,
	}, {
		name: "race: readers complete while this writer reserves: the writer gives way naming them",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			f.edit(func() { v.Multiattach = true })
			completeMeanwhile(f, func() { f.attachRO(v, "host-b", mountB) })
		},
		req:      driver.AttachRequest{MountID: mountA},
		watchers: &scriptedWatchers{},
		err:      driver.ErrBusyElsewhere,
		says:     []string{"volume db (a multiattach volume) is attached read-only to host host-b (container " + InstanceUUID(mountB) + ")", "every reader"},
		check:    checkGaveWay,
	}, {
		name: "race: another reader completes while this reader reserves: both read",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			multiattachReadOnly(f, v)
			completeMeanwhile(f, func() { f.attachRO(v, "host-b", mountB) })
		},
		req:      driver.AttachRequest{MountID: mountA},
		watchers: &scriptedWatchers{},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, att driver.Attachment, _ *scriptedFencer, w *scriptedWatchers) {
			as := f.attachmentsOf(v.ID)
			if len(as) != 2 || !att.Map.ReadOnly || len(w.calls) != 0 {
				t.Errorf("attachments %+v, Attach %+v, watchers asked %v", as, att, w.calls)
			}
		},
	}, {
		name: "this host's read-only attachment after a restart: served read-only, the other readers' watchers not held against it",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			multiattachReadOnly(f, v)
			f.attachRO(v, "host-b", mountB)
			f.attachRO(v, "host-a", mountA)
			f.setMeta(v, driver.MetaAccess, "") // switched back meanwhile: the attachment says what it is
		},
		req:      driver.AttachRequest{MountID: mountA, Claimed: claimedByA}, // as reconcile asks: no mode
		watchers: &scriptedWatchers{foreign: []string{"127.0.0.1:0/2"}},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, att driver.Attachment, _ *scriptedFencer, w *scriptedWatchers) {
			if !att.Map.ReadOnly || len(w.foreignCalls) != 0 || len(f.writes()) != 0 {
				t.Errorf("Attach %+v, foreign watchers asked %v, writes %v", att, w.foreignCalls, f.writes())
			}
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			v := f.addVolume(projDemo, "db")
			if tc.setup != nil {
				tc.setup(f, v)
			}
			if tc.req.Claimed == claimedByA {
				for _, a := range f.attachmentsOf(v.ID) {
					if strings.HasPrefix(a.Mountpoint, "docker:host-a/") {
						tc.req.Claimed = a.ID
					}
				}
			}
			cfg := f.config("host-a")
			if tc.fencer != nil {
				cfg.Fencer = tc.fencer
			}
			if tc.watchers != nil {
				cfg.Watchers = tc.watchers
			}
			p := New(cfg)
			if _, err := p.Get(withTimeout(t, 5*time.Second), "db"); err != nil {
				t.Fatal(err)
			}
			f.resetCalls()
			att, err := p.Attach(f.ctx(t), "db", tc.req)
			wantErr(t, err, tc.err, tc.says...)
			if tc.check != nil {
				tc.check(t, f, v, att, tc.fencer, tc.watchers)
			}
		})
	}
}

// checkGaveWay checks that this host's reservation was deleted, never completed, and host-b's
// attachment kept.
func checkGaveWay(t *testing.T, f *fakeOpenStack, v *fakeVolume, _ driver.Attachment, _ *scriptedFencer, w *scriptedWatchers) {
	t.Helper()
	as := f.attachmentsOf(v.ID)
	if len(as) != 1 || !strings.HasPrefix(as[0].Mountpoint, "docker:host-b/") {
		t.Errorf("attachments %+v: want host-b's alone (this host's reservation deleted)", as)
	}
	if n := f.count("cinder", "POST", "/attachments/[^/]+/action"); n != 0 || len(w.calls) != 0 {
		t.Errorf("%d completes, watchers asked %v", n, w.calls)
	}
}

// TestReadersAndWriters: hosts in turn on one multiattach volume, through the fake: two readers
// share it, a writer is refused naming both and so is a reader beside a writer; inspect (Get)
// names the readers; a reader's Detach leaves the other's attachment, and records nothing with
// the Recorder.
func TestReadersAndWriters(t *testing.T) {
	f := newFake(t)
	v := f.addVolume(projDemo, "db")
	multiattachReadOnly(f, v)
	rec := &scriptedRecorder{}
	host := func(name, id string) *Provisioner {
		cfg := f.config(name)
		cfg.HostID, cfg.Recorder = id, rec
		return New(cfg)
	}
	a, b, c := host("host-a", myHostID), host("host-b", otherHostID), host("host-c", "e1e2e3e4e5e6e7e8e9e0f1f2f3f4f5f6")
	ctx := withTimeout(t, 10*time.Second)
	attA, err := a.Attach(ctx, "db", driver.AttachRequest{MountID: mountA})
	wantErr(t, err, nil)
	attB, err := b.Attach(ctx, "db", driver.AttachRequest{MountID: mountB})
	wantErr(t, err, nil)
	if !attA.Map.ReadOnly || !attB.Map.ReadOnly || attA.ID == attB.ID {
		t.Fatalf("claims %+v and %+v: want two read-only attachments", attA, attB)
	}
	got, err := c.Get(ctx, "db")
	wantErr(t, err, nil)
	for _, want := range []string{"host host-a (host ID " + driver.ShortHostID(myHostID) + ") (container " + InstanceUUID(mountA) + ", read-only)",
		"host host-b (host ID " + driver.ShortHostID(otherHostID) + ") (container " + InstanceUUID(mountB) + ", read-only)"} {
		if !strings.Contains(got.Holder, want) {
			t.Errorf("holder %q does not name %q", got.Holder, want)
		}
	}
	// Back to readwrite while both read: a writer is refused naming both.
	f.setMeta(v, driver.MetaAccess, "")
	_, err = c.Attach(ctx, "db", driver.AttachRequest{MountID: mountC})
	wantErr(t, err, driver.ErrBusyElsewhere, "in use read-only by", "host host-a", "host host-b")
	// Both let go; a writer comes, and a reader is refused naming it.
	wantErr(t, a.Detach(ctx, "db", attA), nil)
	if as := f.attachmentsOf(v.ID); len(as) != 1 || as[0].ID != attB.ID {
		t.Fatalf("attachments after host-a's Detach %+v: want host-b's", as)
	}
	wantErr(t, b.Detach(ctx, "db", attB), nil)
	attC, err := c.Attach(ctx, "db", driver.AttachRequest{MountID: mountC})
	wantErr(t, err, nil)
	if attC.Map.ReadOnly {
		t.Fatalf("host-c's claim %+v: want read-write", attC)
	}
	_, err = a.Attach(ctx, "db", driver.AttachRequest{MountID: mountA, ReadOnly: true})
	wantErr(t, err, driver.ErrBusyElsewhere, "in use read-write by host host-c")
	if got, _ := a.Get(ctx, "db"); strings.Contains(got.Holder, "read-only") || !strings.Contains(got.Holder, "host-c") {
		t.Errorf("holder %q: want host-c, not read-only", got.Holder)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.clears) != 0 || len(rec.records) != 0 {
		t.Errorf("the readers' Detach touched the holder record: clears %v, records %v", rec.clears, rec.records)
	}
}
