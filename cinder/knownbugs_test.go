package cinder

import (
	"os"
	"reflect"
	"slices"
	"testing"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// Tests of behaviour that cinder.go does not have yet: each fails today, and is skipped unless
// CINDER_KNOWN_BUGS=1, so that whoever fixes it has the test ready (remove the skip then).

func knownBug(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("CINDER_KNOWN_BUGS") == "" {
		t.Skip("known bug, not fixed yet (CINDER_KNOWN_BUGS=1 runs it): " + what)
	}
}

// TestAttachTakeOverTwoHolders: a multiattach volume held by two dead hosts. takeOver waits for
// the volume to become "available" after deleting the first holder's attachment, but the second
// keeps it "in-use": the takeover runs into the deadline with one holder fenced and its
// attachment deleted, the other left, and nothing attached. (The plugin itself attaches a
// multiattach volume to one host at a time: two holders come from attachments made outside it.)
func TestAttachTakeOverTwoHolders(t *testing.T) {
	knownBug(t, "a takeover from two holders waits for status available after the first")
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

// TestCreateUndoAtTheDeadline: Create's deadline expires while Cinder still creates the volume.
// The undo's delete is refused (Cinder deletes a volume that is creating only before it is
// scheduled: recorded in testdata/cinder_volume_delete_creating.json) and its error dropped:
// the volume stays, becomes available, and holds the name although Create failed.
func TestCreateUndoAtTheDeadline(t *testing.T) {
	knownBug(t, "Create's undo at the deadline leaves a volume that is still creating")
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
