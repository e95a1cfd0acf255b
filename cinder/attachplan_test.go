package cinder

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/attachments"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// TestPlanAttach: what Attach decides from what Cinder reports of volume db (its completed
// attachments, their hosts and mount IDs, its status, the attachments not completed), this
// host's identity and LOCK_BREAK, read from the recorded-fixture fake. Deciding writes nothing.
func TestPlanAttach(t *testing.T) {
	ids := map[string]string{} // seeded attachment IDs by label, for "%<label>" in want
	cases := []struct {
		name     string
		hostID   string // this host's identity ("": name only)
		setup    func(f *fakeOpenStack, v *fakeVolume)
		req      driver.AttachRequest
		refusal  []string // parts of the refusal (ErrBusyElsewhere); nil: none
		clear    []string // holders cleared, in order: "mine %<label>" or "take %<label> from <from> | <host> | <identity>"
		reuse    string   // "%<label>" or ""
		pending  bool     // the attachments not completed were listed
		readOnly bool     // the claim made (or served again) is read-only
		claimed  string   // req.Claimed: "%<label>"
	}{{
		name: "no attachment: a new one",
		req:  driver.AttachRequest{MountID: mountA},
	}, {
		name:  "this host's attachment (by name, older format): it serves again",
		setup: func(f *fakeOpenStack, v *fakeVolume) { ids["a"] = f.attach(v, "host-a", mountB).ID },
		req:   driver.AttachRequest{MountID: mountA},
		reuse: "%a",
	}, {
		name:   "this host's attachment under its identity: it serves again",
		hostID: myHostID,
		setup:  func(f *fakeOpenStack, v *fakeVolume) { ids["a"] = f.attachAs(v, "host-a", myHostID, mountB).ID },
		req:    driver.AttachRequest{MountID: mountA},
		reuse:  "%a",
	}, {
		name:    "a machine with this host's name but another identity: refused",
		hostID:  myHostID,
		setup:   func(f *fakeOpenStack, v *fakeVolume) { f.attachAs(v, "host-a", otherHostID, mountB) },
		req:     driver.AttachRequest{MountID: mountA},
		refusal: []string{"volume db is attached to host host-a (host ID " + driver.ShortHostID(otherHostID) + ")", "it has this host's NODE_NAME", "LOCK_BREAK=on"},
	}, {
		name:    "another host's attachment: refused without LOCK_BREAK",
		setup:   func(f *fakeOpenStack, v *fakeVolume) { f.attach(v, "host-b", mountB) },
		req:     driver.AttachRequest{MountID: mountA},
		refusal: []string{"volume db is attached to host host-b (container " + InstanceUUID(mountB) + ")", "set LOCK_BREAK=on"},
	}, {
		name:  "another host's attachment with LOCK_BREAK: taken over",
		setup: func(f *fakeOpenStack, v *fakeVolume) { ids["b"] = f.attachAs(v, "host-b", otherHostID, mountB).ID },
		req:   driver.AttachRequest{MountID: mountA, TakeOver: true},
		clear: []string{"take %b from host host-b (host ID " + driver.ShortHostID(otherHostID) + ") | host host-b (host ID " + driver.ShortHostID(otherHostID) + ") | " + otherHostID},
	}, {
		name: "this host's and another's with LOCK_BREAK: the other taken over, none of this host's kept",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			f.edit(func() { v.Multiattach = true })
			f.attach(v, "host-a", mountA)
			ids["b"] = f.attach(v, "host-b", mountB).ID
		},
		req:   driver.AttachRequest{MountID: mountA, TakeOver: true},
		clear: []string{"take %b from host host-b | host host-b | "},
	}, {
		name:    "this mount's own attempt not completed: deleted",
		setup:   func(f *fakeOpenStack, v *fakeVolume) { ids["p"] = f.reserve(v, "host-a", mountA).ID },
		req:     driver.AttachRequest{MountID: mountA},
		pending: true,
		clear:   []string{"mine %p"},
	}, {
		name:    "another mount's attempt not completed: refused without LOCK_BREAK",
		setup:   func(f *fakeOpenStack, v *fakeVolume) { f.reserve(v, "host-b", mountB) },
		req:     driver.AttachRequest{MountID: mountA},
		pending: true,
		refusal: []string{"volume db is being attached elsewhere (Cinder status attaching", "for instance " + InstanceUUID(mountB), "not completed"},
	}, {
		name:    "another mount's attempt not completed, with LOCK_BREAK: taken over",
		setup:   func(f *fakeOpenStack, v *fakeVolume) { ids["p"] = f.reserve(v, "host-b", mountB).ID },
		req:     driver.AttachRequest{MountID: mountA, TakeOver: true},
		pending: true,
		clear:   []string{"take %p from instance " + InstanceUUID(mountB) + " | the host of instance " + InstanceUUID(mountB) + " | "},
	}, {
		name:     "a read-only claim: a new read-only attachment",
		req:      driver.AttachRequest{MountID: mountA, ReadOnly: true},
		readOnly: true,
	}, {
		name:     "a volume whose access is readonly: the claim is read-only",
		setup:    func(f *fakeOpenStack, v *fakeVolume) { f.setMeta(v, driver.MetaAccess, driver.AccessReadOnly) },
		req:      driver.AttachRequest{MountID: mountA},
		readOnly: true,
	}, {
		name: "readers on a multiattach volume: a read-only claim shares it",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			f.edit(func() { v.Multiattach = true })
			f.setMeta(v, driver.MetaAccess, driver.AccessReadOnly)
			f.attachRO(v, "host-b", mountB)
			f.attachRO(v, "host-c", mountC)
		},
		req:      driver.AttachRequest{MountID: mountA},
		readOnly: true,
	}, {
		name: "readers: a read-write claim is refused naming every reader, LOCK_BREAK or not",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			f.edit(func() { v.Multiattach = true })
			f.attachRO(v, "host-b", mountB)
			f.attachRO(v, "host-c", mountC)
		},
		req: driver.AttachRequest{MountID: mountA, TakeOver: true},
		refusal: []string{"volume db is in use read-only by host host-", "host host-b (container " + InstanceUUID(mountB) + ")",
			"host host-c (container " + InstanceUUID(mountC) + ")", "LOCK_BREAK never takes a volume from readers",
			"set the volume's access to readonly"},
	}, {
		name: "a writer: a read-only claim is refused naming it",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			f.edit(func() { v.Multiattach = true })
			f.attach(v, "host-b", mountB)
		},
		req:      driver.AttachRequest{MountID: mountA, ReadOnly: true},
		readOnly: true,
		refusal:  []string{"volume db is in use read-write by host host-b (container " + InstanceUUID(mountB) + ")", "a read-only use waits", "LOCK_BREAK=on"},
	}, {
		name: "a dead writer and LOCK_BREAK: a read-only claim takes it over",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			f.setMeta(v, driver.MetaAccess, driver.AccessReadOnly)
			ids["b"] = f.attach(v, "host-b", mountB).ID
		},
		req:      driver.AttachRequest{MountID: mountA, TakeOver: true},
		readOnly: true,
		clear:    []string{"take %b from host host-b | host host-b | "},
	}, {
		name: "a reader of a volume that is not multiattach: a second reader is told to use a multiattach type",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			f.setMeta(v, driver.MetaAccess, driver.AccessReadOnly)
			f.attachRO(v, "host-b", mountB)
		},
		req:      driver.AttachRequest{MountID: mountA, TakeOver: true},
		readOnly: true,
		refusal: []string{"volume db is read-only and in use by host host-b (container " + InstanceUUID(mountB) + ")",
			`volume of type "rbd" to one host at a time`, "create it with a multiattach volume type (-o volume-type="},
	}, {
		name: "this host's read-only attachment: it serves a read-only claim again",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			f.edit(func() { v.Multiattach = true })
			f.attachRO(v, "host-b", mountB)
			ids["a"] = f.attachRO(v, "host-a", mountA).ID
		},
		req:      driver.AttachRequest{MountID: mountA, ReadOnly: true},
		reuse:    "%a",
		readOnly: true,
	}, {
		name: "this host's read-only attachment its state recorded (a restart): served as it is, beside the other readers",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			f.edit(func() { v.Multiattach = true })
			f.attachRO(v, "host-b", mountB)
			ids["a"] = f.attachRO(v, "host-a", mountA).ID
		},
		req:      driver.AttachRequest{MountID: mountA}, // as reconcile asks: Claimed, no mode
		claimed:  "%a",
		reuse:    "%a",
		readOnly: true,
	}, {
		name: "this host's read-only attachment not in its state, for a read-write claim: deleted, a new one follows",
		setup: func(f *fakeOpenStack, v *fakeVolume) {
			f.edit(func() { v.Multiattach = true })
			ids["a"] = f.attachRO(v, "host-a", mountA).ID
		},
		req:   driver.AttachRequest{MountID: mountA},
		clear: []string{"mine %a"},
	}, {
		name:    "reserved with no attachment left: nothing to clear, the wait for available follows",
		setup:   func(f *fakeOpenStack, v *fakeVolume) { f.setStatus(v, "reserved") },
		req:     driver.AttachRequest{MountID: mountA},
		pending: true,
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clear(ids)
			f := newFake(t)
			v := f.addVolume(projDemo, "db")
			if tc.setup != nil {
				tc.setup(f, v)
			}
			cfg := f.config("host-a")
			cfg.HostID = tc.hostID
			p := New(cfg)
			ctx := withTimeout(t, 5*time.Second)
			fd, err := p.locate(ctx, "db")
			wantErr(t, err, nil)
			for label, id := range ids {
				tc.req.Claimed = strings.ReplaceAll(tc.claimed, "%"+label, id)
				if tc.req.Claimed != tc.claimed {
					break
				}
			}
			var listed []attachments.Attachment
			if len(fd.v.Attachments) > 0 {
				listed, err = p.listAttachments(ctx, fd.c, fd.v.ID)
				wantErr(t, err, nil)
			}
			plan := p.planAttach("db", fd.v, listed, tc.req)
			if plan.readOnly != tc.readOnly {
				t.Errorf("readOnly %v, want %v", plan.readOnly, tc.readOnly)
			}
			if plan.pending != tc.pending {
				t.Fatalf("pending %v, want %v", plan.pending, tc.pending)
			}
			if plan.pending && plan.refusal == nil {
				pending, err := p.pendingAttachments(ctx, fd.c, fd.v.ID)
				wantErr(t, err, nil)
				pplan := planPending("db", fd.v.Status, pending, tc.req)
				plan.clear, plan.refusal = append(plan.clear, pplan.clear...), pplan.refusal
			}
			expand := func(s string) string {
				for label, id := range ids {
					s = strings.ReplaceAll(s, "%"+label, id)
				}
				return s
			}
			if tc.refusal == nil {
				wantErr(t, plan.refusal, nil)
			} else {
				wantErr(t, plan.refusal, driver.ErrBusyElsewhere, tc.refusal...)
			}
			var got, want []string
			for _, h := range plan.clear {
				if h.mine {
					got = append(got, "mine "+h.attachmentID)
				} else {
					got = append(got, fmt.Sprintf("take %s from %s | %s | %s", h.attachmentID, h.from, h.host, h.identity))
				}
			}
			for _, w := range tc.clear {
				want = append(want, expand(w))
			}
			if !slices.Equal(got, want) {
				t.Errorf("cleared\n%q, want\n%q", got, want)
			}
			if plan.reuse != expand(tc.reuse) {
				t.Errorf("reuse %q, want %q", plan.reuse, expand(tc.reuse))
			}
			if w := f.writes(); len(w) != 0 {
				t.Errorf("deciding wrote %v", w)
			}
		})
	}
}
