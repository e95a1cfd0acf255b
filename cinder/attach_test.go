package cinder

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/plugin/plugintest"
)

// Docker mount IDs (container IDs) of the tests.
const (
	mountA = "53a902c4101d880e80f73c8145e76a2f89d7a44eaab3901326e35bf7251c2974"
	mountB = "0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d"
	mountC = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0"
)

// uuidPat matches an attachment's ID in a fake's path pattern (not "detail", the list).
const uuidPat = "[0-9a-f]{8}-[0-9a-f-]{27}"

func withTimeout(t *testing.T, d time.Duration) context.Context { return plugintest.Context(t, d) }

// wantErr checks err against the sentinel (nil: no error expected) and that its text holds each of parts.
func wantErr(t *testing.T, err error, sentinel error, parts ...string) {
	t.Helper()
	switch {
	case sentinel == nil && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case sentinel != nil && err == nil:
		t.Fatalf("no error, want %v", sentinel)
	case sentinel != nil && !errors.Is(err, sentinel):
		t.Fatalf("error %q is not %v", err, sentinel)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not say %q", err, p)
		}
	}
}

func imageOf(v *fakeVolume) driver.ImageSpec {
	return driver.ImageSpec{Pool: "cinder", Image: "volume-" + v.ID}
}

// attachCase is one Attach: the volume "db" in project demo, seen from host-a.
type attachCase struct {
	name     string
	setup    func(f *fakeOpenStack, v *fakeVolume)
	req      driver.AttachRequest
	fencer   *scriptedFencer
	watchers *scriptedWatchers
	between  int      // the deadline expires in the n-th wait between status polls
	err      error    // sentinel; nil: success
	says     []string // parts of the error's text ("%ID": the volume's id)
	check    func(t *testing.T, f *fakeOpenStack, v *fakeVolume, att driver.Attachment, fe *scriptedFencer, w *scriptedWatchers)
}

// checkNewAttachment checks that the mount's attachment was created for host-a, the watchers
// asked, and the attachment completed, in that order, and what Attach returned.
func checkNewAttachment(t *testing.T, f *fakeOpenStack, v *fakeVolume, att driver.Attachment, mountID, mode string, w *scriptedWatchers) {
	t.Helper()
	creates := f.find("cinder", "POST", "/attachments")
	if len(creates) != 1 {
		t.Fatalf("%d attachment creates, want 1: %v", len(creates), f.writes())
	}
	body, _ := creates[0].Body["attachment"].(map[string]any)
	conn, _ := body["connector"].(map[string]any)
	if body["volume_uuid"] != v.ID || body["instance_uuid"] != InstanceUUID(mountID) || body["mode"] != mode ||
		conn["host"] != "host-a" || conn["mountpoint"] != "docker:host-a/"+mountID || conn["do_local_attach"] != false {
		t.Errorf("attachment create body %v", creates[0].Body)
	}
	if got := creates[0].Header.Get("OpenStack-API-Version"); got != "volume 3.54" {
		t.Errorf("attachment create with microversion header %q, want volume 3.54", got)
	}
	as := f.attachmentsOf(v.ID)
	if len(as) != 1 || as[0].Status != "attached" || as[0].ID != att.ID || as[0].Mode != mode {
		t.Fatalf("attachments in Cinder %+v, Attach returned %q", as, att.ID)
	}
	if got := f.find("cinder", "POST", "/attachments/"+att.ID+"/action"); len(got) != 1 || !reflect.DeepEqual(got[0].Body, map[string]any{"os-complete": nil}) {
		t.Errorf("completes: %v", got)
	}
	want := driver.MapRequest{ImageSpec: imageOf(v), ReadOnly: mode == "ro", Monitors: []string{"127.0.0.1:6789"}, User: "docker"}
	if !reflect.DeepEqual(att.Map, want) {
		t.Errorf("map request %+v, want %+v", att.Map, want)
	}
	if att.Volume == nil || att.Volume.Name != "db" || att.Volume.Status["project-id"] != projDemo || att.Volume.FSType != "ext4" {
		t.Errorf("volume %+v", att.Volume)
	}
	if w != nil && (len(w.calls) != 1 || w.calls[0] != imageOf(v)) {
		t.Errorf("watchers asked about %v, want once about %v", w.calls, imageOf(v))
	}
	if st, _ := f.volume(v.ID); st.Status != "in-use" {
		t.Errorf("volume status %q after Attach, want in-use", st.Status)
	}
}

func TestAttach(t *testing.T) {
	const fencedClient = "127.0.0.1:0/3935442785"
	cases := []attachCase{{
		name:     "new attachment: reserved, watchers asked, completed",
		req:      driver.AttachRequest{MountID: mountA},
		watchers: &scriptedWatchers{},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, att driver.Attachment, _ *scriptedFencer, w *scriptedWatchers) {
			checkNewAttachment(t, f, v, att, mountA, "rw", w)
			if len(att.Fenced) != 0 {
				t.Errorf("fenced %v", att.Fenced)
			}
		},
	}, {
		name: "read-only",
		req:  driver.AttachRequest{MountID: mountA, ReadOnly: true},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, att driver.Attachment, _ *scriptedFencer, _ *scriptedWatchers) {
			checkNewAttachment(t, f, v, att, mountA, "ro", nil)
		},
	}, {
		name:     "this host's attachment again (plugin restarted): the same one serves",
		setup:    func(f *fakeOpenStack, v *fakeVolume) { f.attach(v, "host-a", mountA) },
		req:      driver.AttachRequest{MountID: mountB},
		watchers: &scriptedWatchers{live: []string{"127.0.0.1:0/1"}}, // its own mapping: not asked
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, att driver.Attachment, _ *scriptedFencer, w *scriptedWatchers) {
			as := f.attachmentsOf(v.ID)
			if len(as) != 1 || att.ID != as[0].ID {
				t.Fatalf("attachment %q, Cinder has %+v", att.ID, as)
			}
			if w := f.writes(); len(w) != 0 {
				t.Errorf("writes %v", w)
			}
			if f.count("cinder", "GET", "/attachments/"+att.ID) != 1 {
				t.Error("the attachment's connection info was not read")
			}
			if att.Map.ImageSpec != imageOf(v) || att.Map.User != "docker" || len(att.Map.Monitors) != 1 {
				t.Errorf("map request %+v", att.Map)
			}
			if len(w.calls) != 0 {
				t.Errorf("watchers asked about its own attachment: %v", w.calls)
			}
		},
	}, {
		name:  "another host's attachment: refused naming host and container",
		setup: func(f *fakeOpenStack, v *fakeVolume) { f.attach(v, "host-b", mountB) },
		req:   driver.AttachRequest{MountID: mountA},
		err:   driver.ErrBusyElsewhere,
		says:  []string{"volume db", "attached to host host-b", "container " + InstanceUUID(mountB), "LOCK_BREAK=on"},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, _ driver.Attachment, _ *scriptedFencer, _ *scriptedWatchers) {
			if w := f.writes(); len(w) != 0 {
				t.Errorf("writes %v", w)
			}
		},
	}, {
		name: "another host's attachment with host_name set by Cinder",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			a := f.attach(v, "host-b", mountB)
			f.mu.Lock()
			a.HostName, a.Mountpoint = "node-7", "/dev/vdb"
			f.mu.Unlock()
		},
		req:  driver.AttachRequest{MountID: mountA},
		err:  driver.ErrBusyElsewhere,
		says: []string{"attached to host node-7"},
	}, {
		name: "another host's attachment that names no host",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			a := f.attach(v, "host-b", mountB)
			f.mu.Lock()
			a.Mountpoint = "/dev/vdb"
			f.mu.Unlock()
		},
		req:  driver.AttachRequest{MountID: mountA},
		err:  driver.ErrBusyElsewhere,
		says: []string{"attached to host (unknown host)"},
	}, {
		name:   "takeover: the holder fenced before its attachment is deleted, then a new attachment",
		setup:  func(f *fakeOpenStack, v *fakeVolume) { f.attach(v, "host-b", mountB) },
		req:    driver.AttachRequest{MountID: mountA, TakeOver: true},
		fencer: &scriptedFencer{fenced: []string{fencedClient}},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, att driver.Attachment, fe *scriptedFencer, _ *scriptedWatchers) {
			if len(fe.calls) != 1 || fe.calls[0] != imageOf(v) {
				t.Errorf("fenced %v, want %v once", fe.calls, imageOf(v))
			}
			if len(fe.writesBefore) != 1 || len(fe.writesBefore[0]) != 0 {
				t.Errorf("Cinder writes before the fence: %v, want none (fence first)", fe.writesBefore)
			}
			if !reflect.DeepEqual(att.Fenced, []string{fencedClient}) {
				t.Errorf("Fenced %v", att.Fenced)
			}
			w := f.writes()
			if len(w) != 3 || !strings.HasPrefix(w[0], "cinder DELETE /attachments/") || w[1] != "cinder POST /attachments" {
				t.Errorf("writes %v: want the old attachment deleted, a new one created and completed", w)
			}
			checkNewAttachment(t, f, v, att, mountA, "rw", nil)
		},
	}, {
		name:  "takeover without Ceph access to fence: refused, nothing deleted",
		setup: func(f *fakeOpenStack, v *fakeVolume) { f.attach(v, "host-b", mountB) },
		req:   driver.AttachRequest{MountID: mountA, TakeOver: true},
		err:   driver.ErrInvalid,
		says:  []string{"take volume db over from host host-b", "no Ceph access to fence host host-b"},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, _ driver.Attachment, _ *scriptedFencer, _ *scriptedWatchers) {
			if w := f.writes(); len(w) != 0 {
				t.Errorf("writes %v", w)
			}
		},
	}, {
		name:   "takeover of a live holder: the fencer refuses, the attachment stays",
		setup:  func(f *fakeOpenStack, v *fakeVolume) { f.attach(v, "host-b", mountB) },
		req:    driver.AttachRequest{MountID: mountA, TakeOver: true},
		fencer: &scriptedFencer{err: errors.New("the holder still watches: " + driver.ErrBusyElsewhere.Error())},
		says:   []string{"take volume db over from host host-b", "still watches"},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, _ driver.Attachment, fe *scriptedFencer, _ *scriptedWatchers) {
			if len(fe.calls) != 1 {
				t.Errorf("fence calls %v", fe.calls)
			}
			if w := f.writes(); len(w) != 0 {
				t.Errorf("writes %v", w)
			}
			if as := f.attachmentsOf(v.ID); len(as) != 1 {
				t.Errorf("attachments %+v", as)
			}
		},
	}, {
		name: "takeover of an attachment whose image cannot be told: refused, nothing fenced",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			a := f.attach(v, "host-b", mountB)
			f.mu.Lock()
			a.ConnInfo = map[string]any{"driver_volume_type": "rbd", "name": "no-pool"}
			f.mu.Unlock()
		},
		req:    driver.AttachRequest{MountID: mountA, TakeOver: true},
		fencer: &scriptedFencer{},
		says:   []string{"cannot tell which RBD image host host-b maps"},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, _ driver.Attachment, fe *scriptedFencer, _ *scriptedWatchers) {
			if len(fe.calls) != 0 || len(f.writes()) != 0 {
				t.Errorf("fenced %v, writes %v", fe.calls, f.writes())
			}
		},
	}, {
		name: "takeover of an attachment without connection info: nothing to fence, deleted",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			a := f.attach(v, "host-b", mountB)
			f.mu.Lock()
			a.ConnInfo = nil
			f.mu.Unlock()
		},
		req:    driver.AttachRequest{MountID: mountA, TakeOver: true},
		fencer: &scriptedFencer{},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, att driver.Attachment, fe *scriptedFencer, _ *scriptedWatchers) {
			if len(fe.calls) != 0 {
				t.Errorf("fenced %v", fe.calls)
			}
			checkNewAttachment(t, f, v, att, mountA, "rw", nil)
		},
	}, {
		name:   "takeover when Cinder cannot read the holder's attachment",
		setup:  func(f *fakeOpenStack, v *fakeVolume) { f.attach(v, "host-b", mountB) },
		req:    driver.AttachRequest{MountID: mountA, TakeOver: true},
		fencer: &scriptedFencer{},
		says:   []string{"take volume db over from host host-b", "cinder get attachment db", "Cinder unreachable or failing"},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, _ driver.Attachment, fe *scriptedFencer, _ *scriptedWatchers) {
			if len(fe.calls) != 0 || len(f.writes()) != 0 {
				t.Errorf("fenced %v, writes %v", fe.calls, f.writes())
			}
		},
	}, {
		name:     "live watcher without an attachment: refused, the reserved attachment deleted",
		req:      driver.AttachRequest{MountID: mountA},
		watchers: &scriptedWatchers{live: []string{"127.0.0.1:0/4242", "127.0.0.1:0/4343"}},
		err:      driver.ErrBusyElsewhere,
		says:     []string{"volume db", "cinder/volume-%ID", "127.0.0.1:0/4242, 127.0.0.1:0/4343", "unmap it there first"},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, _ driver.Attachment, _ *scriptedFencer, w *scriptedWatchers) {
			checkUndone(t, f, v)
			if len(w.calls) != 1 || w.calls[0] != imageOf(v) {
				t.Errorf("watchers asked about %v", w.calls)
			}
		},
	}, {
		name:     "watchers cannot be read: the reserved attachment deleted",
		req:      driver.AttachRequest{MountID: mountA},
		watchers: &scriptedWatchers{err: errors.New("rados: " + driver.ErrTimeout.Error())},
		says:     []string{"rados: timed out"},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, _ driver.Attachment, _ *scriptedFencer, _ *scriptedWatchers) {
			checkUndone(t, f, v)
		},
	}, {
		name:  "this mount's pending attachment (an answer lost): found by instance UUID, deleted, attached anew",
		setup: func(f *fakeOpenStack, v *fakeVolume) { f.reserve(v, "host-a", mountA) },
		req:   driver.AttachRequest{MountID: mountA},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, att driver.Attachment, _ *scriptedFencer, _ *scriptedWatchers) {
			lists := f.find("cinder", "GET", "/attachments/detail")
			if len(lists) != 1 || lists[0].Query.Get("volume_id") != v.ID {
				t.Errorf("attachment lists %v", lists)
			}
			w := f.writes()
			if len(w) != 3 || !strings.HasPrefix(w[0], "cinder DELETE /attachments/") || strings.HasSuffix(w[0], att.ID) {
				t.Errorf("writes %v: want the pending attachment deleted first", w)
			}
			checkNewAttachment(t, f, v, att, mountA, "rw", nil)
		},
	}, {
		name:  "another mount's pending attachment: refused naming it",
		setup: func(f *fakeOpenStack, v *fakeVolume) { f.reserve(v, "host-b", mountB) },
		req:   driver.AttachRequest{MountID: mountA},
		err:   driver.ErrBusyElsewhere,
		says:  []string{"volume db is being attached elsewhere", "status attaching", "for instance " + InstanceUUID(mountB), "LOCK_BREAK=on"},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, _ driver.Attachment, _ *scriptedFencer, _ *scriptedWatchers) {
			if w := f.writes(); len(w) != 0 {
				t.Errorf("writes %v", w)
			}
		},
	}, {
		name:   "another mount's pending attachment, taken over",
		setup:  func(f *fakeOpenStack, v *fakeVolume) { f.reserve(v, "host-b", mountB) },
		req:    driver.AttachRequest{MountID: mountA, TakeOver: true},
		fencer: &scriptedFencer{fenced: []string{fencedClient}},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, att driver.Attachment, fe *scriptedFencer, _ *scriptedWatchers) {
			if len(fe.calls) != 1 || !reflect.DeepEqual(att.Fenced, []string{fencedClient}) {
				t.Errorf("fence calls %v, Fenced %v", fe.calls, att.Fenced)
			}
			if len(fe.writesBefore) != 1 || len(fe.writesBefore[0]) != 0 {
				t.Errorf("Cinder writes before the fence: %v, want none (fence first)", fe.writesBefore)
			}
			checkNewAttachment(t, f, v, att, mountA, "rw", nil)
		},
	}, {
		name:  "another mount's pending attachment, takeover refused without a fencer",
		setup: func(f *fakeOpenStack, v *fakeVolume) { f.reserve(v, "host-b", mountB) },
		req:   driver.AttachRequest{MountID: mountA, TakeOver: true},
		err:   driver.ErrInvalid,
		says:  []string{"take volume db over from instance " + InstanceUUID(mountB), "the host of instance " + InstanceUUID(mountB)},
	}, {
		name:  "pending attachments cannot be listed",
		setup: func(f *fakeOpenStack, v *fakeVolume) { f.reserve(v, "host-b", mountB) },
		req:   driver.AttachRequest{MountID: mountA},
		says:  []string{"cinder list attachments of db", "Cinder unreachable or failing"},
	}, {
		name: "reserved with no attachment left (deleted meanwhile): waits for available, then attaches",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			f.setStatus(v, "reserved", "reserved", "reserved", "available")
		},
		req: driver.AttachRequest{MountID: mountA},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, att driver.Attachment, _ *scriptedFencer, _ *scriptedWatchers) {
			if n := f.count("cinder", "GET", "/volumes/"+v.ID); n != 3 {
				t.Errorf("%d polls of the volume, want 3", n)
			}
			checkNewAttachment(t, f, v, att, mountA, "rw", nil)
		},
	}, {
		name: "attaching with no attachment listed, never available again: the deadline",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			f.setStatus(v, "attaching", slices.Repeat([]string{"detaching"}, 100)...)
			f.deadlineAt("cinder", "GET", "/volumes/"+v.ID, 3)
		},
		req:  driver.AttachRequest{MountID: mountA},
		err:  driver.ErrTimeout, // while polling or between polls
		says: []string{"cinder attach db"},
	}, {
		name: "attaching with no attachment listed, never available again: the deadline between two polls",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			f.setStatus(v, "attaching", slices.Repeat([]string{"detaching"}, 100)...)
		},
		req:     driver.AttachRequest{MountID: mountA},
		between: 2,
		err:     driver.ErrTimeout,
		says:    []string{"cinder attach db", `volume %ID still "detaching", not "available", at the deadline`},
	}, {
		name:     "multiattach volume, no other attachment: attached",
		setup:    func(f *fakeOpenStack, v *fakeVolume) { f.edit(func() { v.Multiattach = true }) },
		req:      driver.AttachRequest{MountID: mountA},
		watchers: &scriptedWatchers{},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, att driver.Attachment, _ *scriptedFencer, w *scriptedWatchers) {
			checkNewAttachment(t, f, v, att, mountA, "rw", w)
			if n := f.count("cinder", "GET", "/attachments/detail"); n != 1 {
				t.Errorf("%d attachment lists, want one (is there another attachment?)", n)
			}
		},
	}, {
		name: "multiattach volume attached meanwhile by another host: this one gives way naming it",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			f.edit(func() { v.Multiattach = true })
			var once sync.Once // host-b completes its attachment between this host's lookup and reservation
			f.scriptFunc("cinder", "POST", "/attachments", func(http.ResponseWriter, fakeCall) bool {
				once.Do(func() { f.attach(v, "host-b", mountB) })
				return false
			})
		},
		req:      driver.AttachRequest{MountID: mountA},
		watchers: &scriptedWatchers{},
		err:      driver.ErrBusyElsewhere,
		says:     []string{"volume db (a multiattach volume) is attached to host host-b (container " + InstanceUUID(mountB) + ")", "one host at a time"},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, _ driver.Attachment, _ *scriptedFencer, w *scriptedWatchers) {
			as := f.attachmentsOf(v.ID)
			if len(as) != 1 || as[0].Mountpoint != "docker:host-b/"+mountB {
				t.Errorf("attachments %+v: want host-b's alone (this host's reservation deleted)", as)
			}
			if n := f.count("cinder", "POST", "/attachments/[^/]+/action"); n != 0 || len(w.calls) != 0 {
				t.Errorf("%d completes, watchers asked %v", n, w.calls)
			}
		},
	}, {
		name: "multiattach volume reserved meanwhile by another host: named by its attachment",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			f.edit(func() { v.Multiattach = true })
			var once sync.Once
			f.scriptFunc("cinder", "GET", "/attachments/detail", func(http.ResponseWriter, fakeCall) bool {
				once.Do(func() { f.reserve(v, "host-b", mountB) })
				return false
			})
		},
		req:  driver.AttachRequest{MountID: mountA},
		err:  driver.ErrBusyElsewhere,
		says: []string{"volume db (a multiattach volume) is attached to another host (attachment ", "for instance " + InstanceUUID(mountB) + ", attaching)"},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, _ driver.Attachment, _ *scriptedFencer, _ *scriptedWatchers) {
			if as := f.attachmentsOf(v.ID); len(as) != 1 || as[0].Instance != InstanceUUID(mountB) {
				t.Errorf("attachments %+v: want host-b's alone", as)
			}
		},
	}, {
		name:  "multiattach volume whose attachments cannot be listed: the reservation deleted",
		setup: func(f *fakeOpenStack, v *fakeVolume) { f.edit(func() { v.Multiattach = true }) },
		req:   driver.AttachRequest{MountID: mountA},
		err:   driver.ErrPermission,
		says:  []string{"cinder list attachments of db"},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, _ driver.Attachment, _ *scriptedFencer, _ *scriptedWatchers) {
			checkUndone(t, f, v)
		},
	}, {
		name: "Cinder refuses the attachment (attached meanwhile elsewhere)",
		req:  driver.AttachRequest{MountID: mountA},
		err:  driver.ErrBusyElsewhere,
		says: []string{"Cinder refused to attach volume db", "status must be available"},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, _ driver.Attachment, _ *scriptedFencer, _ *scriptedWatchers) {
			if w := f.writes(); len(w) != 1 {
				t.Errorf("writes %v: want only the refused create", w)
			}
		},
	}, {
		name: "Cinder hangs on the attachment create: the deadline, as ErrTimeout",
		req:  driver.AttachRequest{MountID: mountA},
		err:  driver.ErrTimeout,
		says: []string{"cinder attach db"},
	}, {
		name: "Cinder fails to complete the attachment: the reserved attachment deleted",
		req:  driver.AttachRequest{MountID: mountA},
		says: []string{"cinder complete attachment db", "Cinder unreachable or failing"},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, _ driver.Attachment, _ *scriptedFencer, _ *scriptedWatchers) {
			checkUndone(t, f, v)
		},
	}, {
		name: "Cinder's connection dropped mid-call: unreachable",
		req:  driver.AttachRequest{MountID: mountA},
		says: []string{"cinder attach db", "Cinder unreachable or failing"},
	}, {
		name: "connection info without an RBD image: the attachment deleted",
		req:  driver.AttachRequest{MountID: mountA},
		says: []string{"cinder attach db", "connection info without an rbd pool/image"},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, _ driver.Attachment, _ *scriptedFencer, _ *scriptedWatchers) {
			checkUndone(t, f, v)
		},
	}, {
		name: "a volume on another backend: refused, the attachment deleted",
		req:  driver.AttachRequest{MountID: mountA},
		says: []string{"cinder attach db", `the volume is on a "iscsi" backend`},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, _ driver.Attachment, _ *scriptedFencer, _ *scriptedWatchers) {
			checkUndone(t, f, v)
		},
	}, {
		name:  "this mount's pending attachment cannot be deleted",
		setup: func(f *fakeOpenStack, v *fakeVolume) { f.reserve(v, "host-a", mountA) },
		req:   driver.AttachRequest{MountID: mountA},
		says:  []string{"cinder delete attachment", "of db", "Cinder unreachable or failing"},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, _ driver.Attachment, _ *scriptedFencer, _ *scriptedWatchers) {
			if n := f.count("cinder", "POST", "/attachments"); n != 0 {
				t.Errorf("%d attachment creates", n)
			}
		},
	}, {
		name:   "takeover: the holder fenced, but its attachment cannot be deleted: the fenced clients are reported",
		setup:  func(f *fakeOpenStack, v *fakeVolume) { f.attach(v, "host-b", mountB) },
		req:    driver.AttachRequest{MountID: mountA, TakeOver: true},
		fencer: &scriptedFencer{fenced: []string{fencedClient}},
		err:    driver.ErrPermission,
		says:   []string{"take volume db over from host host-b", "cinder delete attachment"},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, att driver.Attachment, _ *scriptedFencer, _ *scriptedWatchers) {
			if !reflect.DeepEqual(att.Fenced, []string{fencedClient}) {
				t.Errorf("Fenced %v, want the clients fenced before the failure", att.Fenced)
			}
			if n := f.count("cinder", "POST", "/attachments"); n != 0 {
				t.Errorf("%d attachment creates", n)
			}
		},
	}, {
		name: "takeover: the volume goes to an error status once the holder's attachment is deleted",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			f.attach(v, "host-b", mountB)
			f.setStatus(v, "in-use", "error_detaching")
		},
		req:    driver.AttachRequest{MountID: mountA, TakeOver: true},
		fencer: &scriptedFencer{fenced: []string{fencedClient}},
		says:   []string{"take volume db over from host host-b", "after deleting the attachment of host host-b", `went to status "error_detaching"`},
		check: func(t *testing.T, f *fakeOpenStack, v *fakeVolume, att driver.Attachment, _ *scriptedFencer, _ *scriptedWatchers) {
			if !reflect.DeepEqual(att.Fenced, []string{fencedClient}) {
				t.Errorf("Fenced %v", att.Fenced)
			}
		},
	}, {
		name:  "this host's attachment cannot be read",
		setup: func(f *fakeOpenStack, v *fakeVolume) { f.attach(v, "host-a", mountA) },
		req:   driver.AttachRequest{MountID: mountA},
		err:   driver.ErrNotFound,
		says:  []string{"cinder get attachment db"},
	}, {
		name:  "this host's attachment names no RBD image",
		setup: func(f *fakeOpenStack, v *fakeVolume) { f.attach(v, "host-a", mountA) },
		req:   driver.AttachRequest{MountID: mountA},
		says:  []string{"cinder attach db", "connection info without an rbd pool/image"},
	}}
	// Scripted failures, by case name.
	scripts := map[string]func(f *fakeOpenStack, v *fakeVolume){
		"takeover when Cinder cannot read the holder's attachment": func(f *fakeOpenStack, v *fakeVolume) {
			f.script("cinder", "GET", "/attachments/"+uuidPat, 1, fakeReply{Status: 500, Body: apiErr("computeFault", 500, "boom")})
		},
		"pending attachments cannot be listed": func(f *fakeOpenStack, v *fakeVolume) {
			f.script("cinder", "GET", "/attachments/detail", 1, fakeReply{Status: 503, Body: apiErr("computeFault", 503, "down")})
		},
		"Cinder refuses the attachment (attached meanwhile elsewhere)": func(f *fakeOpenStack, v *fakeVolume) {
			b := fixture("cinder_attachment_create_in_use.json")
			f.script("cinder", "POST", "/attachments", 1, fakeReply{Status: 400, Body: strings.ReplaceAll(mustJSON(b), recordedVolume, v.ID)})
		},
		"Cinder hangs on the attachment create: the deadline, as ErrTimeout": func(f *fakeOpenStack, v *fakeVolume) {
			f.script("cinder", "POST", "/attachments", 1, fakeReply{Hang: true})
		},
		"Cinder fails to complete the attachment: the reserved attachment deleted": func(f *fakeOpenStack, v *fakeVolume) {
			f.script("cinder", "POST", "/attachments/[^/]+/action", 1, fakeReply{Status: 500, Body: apiErr("computeFault", 500, "boom")})
		},
		"Cinder's connection dropped mid-call: unreachable": func(f *fakeOpenStack, v *fakeVolume) {
			f.scriptFunc("cinder", "POST", "/attachments", func(w http.ResponseWriter, _ fakeCall) bool {
				conn, _, err := w.(http.Hijacker).Hijack()
				if err == nil {
					_ = conn.Close()
				}
				return true
			})
		},
		"connection info without an RBD image: the attachment deleted": func(f *fakeOpenStack, v *fakeVolume) {
			setConnInfoOnCreate(f, map[string]any{"driver_volume_type": "rbd", "hosts": []any{"127.0.0.1"}})
		},
		"a volume on another backend: refused, the attachment deleted": func(f *fakeOpenStack, v *fakeVolume) {
			setConnInfoOnCreate(f, map[string]any{"driver_volume_type": "iscsi", "data": map[string]any{"target_iqn": "iqn.x"}})
		},
		"multiattach volume whose attachments cannot be listed: the reservation deleted": func(f *fakeOpenStack, v *fakeVolume) {
			f.script("cinder", "GET", "/attachments/detail", 1, fakeReply{Status: 403, Body: apiErr("forbidden", 403, "no")})
		},
		"this mount's pending attachment cannot be deleted": func(f *fakeOpenStack, v *fakeVolume) {
			f.script("cinder", "DELETE", "/attachments/[^/]+", 1, fakeReply{Status: 500, Body: apiErr("computeFault", 500, "boom")})
		},
		"takeover: the holder fenced, but its attachment cannot be deleted: the fenced clients are reported": func(f *fakeOpenStack, v *fakeVolume) {
			f.script("cinder", "DELETE", "/attachments/[^/]+", 1, fakeReply{Status: 403, Body: apiErr("forbidden", 403, "Policy doesn't allow volume:attachment_delete")})
		},
		"this host's attachment cannot be read": func(f *fakeOpenStack, v *fakeVolume) {
			f.script("cinder", "GET", "/attachments/"+uuidPat, 1, fakeReply{Status: 404, Body: mustJSON(fixture("cinder_attachment_notfound.json"))})
		},
		"this host's attachment names no RBD image": func(f *fakeOpenStack, v *fakeVolume) {
			f.mu.Lock()
			for _, a := range f.attachments {
				a.ConnInfo = map[string]any{"driver_volume_type": "rbd"}
			}
			f.mu.Unlock()
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			v := f.addVolume(projDemo, "db")
			f.addVolume(projDemo, "other")
			if tc.setup != nil {
				tc.setup(f, v)
			}
			if s := scripts[tc.name]; s != nil {
				s(f, v)
			}
			cfg := f.config("host-a")
			if tc.fencer != nil {
				tc.fencer.os = f
				cfg.Fencer = tc.fencer
			}
			if tc.watchers != nil {
				cfg.Watchers = tc.watchers
			}
			p := New(cfg)
			if _, err := p.Get(withTimeout(t, 5*time.Second), "db"); err != nil { // authenticated, nothing written
				t.Fatal(err)
			}
			f.resetCalls()
			if tc.between > 0 {
				f.expireBetweenPolls(p, tc.between)
			}
			att, err := p.Attach(f.ctx(t), "db", tc.req)
			var says []string
			for _, s := range tc.says {
				says = append(says, strings.ReplaceAll(s, "%ID", v.ID))
			}
			if tc.err == nil && len(tc.says) > 0 {
				if err == nil {
					t.Fatalf("no error, want one saying %q", says)
				}
				wantErr(t, err, err, says...)
			} else {
				wantErr(t, err, tc.err, says...)
			}
			if tc.check != nil {
				tc.check(t, f, v, att, tc.fencer, tc.watchers)
			}
		})
	}
}

// checkUndone checks that Attach deleted the attachment it created and completed none.
func checkUndone(t *testing.T, f *fakeOpenStack, v *fakeVolume) {
	t.Helper()
	creates := f.find("cinder", "POST", "/attachments")
	deletes := f.find("cinder", "DELETE", "/attachments/[^/]+")
	if len(creates) != 1 || len(deletes) != 1 {
		t.Fatalf("writes %v: want one attachment created, then deleted", f.writes())
	}
	if n := f.count("cinder", "POST", "/attachments/[^/]+/action"); n > 1 {
		t.Errorf("%d completes", n)
	}
	if as := f.attachmentsOf(v.ID); len(as) != 0 {
		t.Errorf("attachments left: %+v", as)
	}
	if st, _ := f.volume(v.ID); st.Status != "available" {
		t.Errorf("volume status %q, want available", st.Status)
	}
}

// setConnInfoOnCreate makes the next attachment created carry connection info ci.
func setConnInfoOnCreate(f *fakeOpenStack, ci map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextConnInfo = ci
}

func TestAttachUnknownVolume(t *testing.T) {
	f := newFake(t)
	p := f.prov("host-a")
	_, err := p.Attach(withTimeout(t, 5*time.Second), "nope", driver.AttachRequest{MountID: mountA})
	wantErr(t, err, driver.ErrNotFound, `no volume named "nope"`)
	if w := f.writes(); len(w) != 0 {
		t.Errorf("writes %v", w)
	}
}

// TestAttachTwoMountsOneHost: a second container on the same host shares the attachment.
func TestAttachTwoMountsOneHost(t *testing.T) {
	f := newFake(t)
	v := f.addVolume(projDemo, "db")
	p := f.prov("host-a")
	a1, err := p.Attach(withTimeout(t, 5*time.Second), "db", driver.AttachRequest{MountID: mountA})
	wantErr(t, err, nil)
	a2, err := p.Attach(withTimeout(t, 5*time.Second), "db", driver.AttachRequest{MountID: mountB})
	wantErr(t, err, nil)
	if a1.ID == "" || a1.ID != a2.ID || f.count("cinder", "POST", "/attachments") != 1 {
		t.Fatalf("attachments %q and %q, %d created", a1.ID, a2.ID, f.count("cinder", "POST", "/attachments"))
	}
	// Another host is refused, naming this one.
	_, err = f.prov("host-b").Attach(withTimeout(t, 5*time.Second), "db", driver.AttachRequest{MountID: mountB})
	wantErr(t, err, driver.ErrBusyElsewhere, "attached to host host-a")
	if got, _ := f.prov("host-c").Get(withTimeout(t, 5*time.Second), "db"); got.Holder != "host host-a (container "+InstanceUUID(mountA)+")" {
		t.Errorf("holder %q", got.Holder)
	}
	if as := f.attachmentsOf(v.ID); len(as) != 1 || as[0].Mountpoint != "docker:host-a/"+mountA {
		t.Errorf("attachments %+v: want the first mount's only", as)
	}
}

// TestAttachTakeOverTwoHolders: a multiattach volume held by two dead hosts. Both are fenced and
// their attachments deleted before the wait for status available (the first deletion leaves the
// volume in-use while the second attachment stays). (The plugin itself attaches a multiattach
// volume to one host at a time: two holders come from attachments made outside it.)
func TestAttachTakeOverTwoHolders(t *testing.T) {
	f := newFake(t)
	v := f.addVolume(projDemo, "db")
	f.edit(func() { v.Multiattach = true })
	f.attach(v, "host-b", mountB)
	f.attach(v, "host-c", mountA)
	cfg := f.config("host-a")
	cfg.Fencer = &scriptedFencer{fenced: []string{"127.0.0.1:0/1"}}
	p := New(cfg)
	f.expireBetweenPolls(p, 50) // the deadline, rather than 5 s of polls
	att, err := p.Attach(f.ctx(t), "db", driver.AttachRequest{MountID: mountA, TakeOver: true})
	wantErr(t, err, nil)
	as := f.attachmentsOf(v.ID)
	if len(as) != 1 || as[0].ID != att.ID || as[0].Mountpoint != "docker:host-a/"+mountA {
		t.Errorf("attachments after the takeover: %+v", as)
	}
	if !reflect.DeepEqual(att.Fenced, []string{"127.0.0.1:0/1", "127.0.0.1:0/1"}) {
		t.Errorf("Fenced %v", att.Fenced)
	}
}
