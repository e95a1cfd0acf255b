package driver

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
)

// recordingProv is the fake backend that keeps its records: it logs each record in the call log
// and keeps the attachment and mapping it was given.
type recordingProv struct {
	*fakeProvisioner
	mu       sync.Mutex
	records  []Mapping
	attIDs   []string
	claimed  []string // AttachRequest.Claimed of each Attach
	failNext error
}

func (p *recordingProv) Attach(ctx context.Context, name string, req AttachRequest) (Attachment, error) {
	p.mu.Lock()
	p.claimed = append(p.claimed, req.Claimed)
	p.mu.Unlock()
	return p.fakeProvisioner.Attach(ctx, name, req)
}

func (p *recordingProv) RecordClients(_ context.Context, name string, att Attachment, m Mapping) error {
	p.rec.begin("prov.RecordClients " + name)
	defer p.rec.end()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.failNext; err != nil {
		p.failNext = nil
		return err
	}
	p.records = append(p.records, m)
	p.attIDs = append(p.attIDs, att.ID)
	return nil
}

func withRecorder(e *testEnv) *recordingProv {
	rp := &recordingProv{fakeProvisioner: e.prov}
	e.d = New(e.cfg, rp, e.mapper, e.mounter, e.store)
	if err := e.d.Reconcile(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	return rp
}

// The first Mount records the mapping's clients right after mapping it, before anything is
// written to it: a host that takes the volume over must be able to fence the mapping.
func TestMountRecordsTheMappingsClientsAfterMapping(t *testing.T) {
	e := newTestDriver(t)
	rp := withRecorder(e)
	e.prov.add("v", 1<<30, "ext4")
	mark := e.rec.mark()
	e.mustMount("v", "id1")
	log := e.rec.since(mark)
	iMap := slices.IndexFunc(log, func(s string) bool { return strings.HasPrefix(s, "map.Map ") })
	iRec := slices.IndexFunc(log, func(s string) bool { return strings.HasPrefix(s, "prov.RecordClients ") })
	iFmt := slices.IndexFunc(log, func(s string) bool { return strings.HasPrefix(s, "mnt.FormatIfBlank ") })
	if iMap < 0 || iRec < iMap || iFmt < iRec {
		t.Fatalf("calls %v: want Map, then RecordClients, then the format", log)
	}
	if len(rp.records) != 1 || rp.records[0].Device == "" || rp.attIDs[0] != "cookie" {
		t.Fatalf("records %+v with attachments %v", rp.records, rp.attIDs)
	}
	// Another reference does not record again: nothing changed.
	e.mustMount("v", "id2")
	if len(rp.records) != 1 {
		t.Fatalf("%d records after a second reference", len(rp.records))
	}
}

// A mapping whose clients could not be recorded is not used: the Mount fails naming the volume
// and is undone.
func TestMountFailsWhenTheClientsCannotBeRecorded(t *testing.T) {
	e := newTestDriver(t)
	rp := withRecorder(e)
	e.prov.add("v", 1<<30, "ext4")
	rp.failNext = errors.New("osd down")
	_, err := e.d.Mount(bg, "v", "id1")
	if err == nil || !strings.Contains(err.Error(), "volume v") || !strings.Contains(err.Error(), "osd down") {
		t.Fatalf("Mount = %v", err)
	}
	e.assertGone("v")
}

// After a restart the reconcile attaches again naming the claim the state recorded (a claim
// made under the name alone, before host identities, is recognised only so), and records the
// restarted plugin's clients with the mapping that survived.
func TestReconcileAttachesWithTheRecordedClaimAndRecordsAgain(t *testing.T) {
	e := newTestDriver(t)
	e.prov.add("v", 1<<30, "ext4")
	e.mustMount("v", "id1")
	e.restart()
	rp := &recordingProv{fakeProvisioner: e.prov}
	e.d = New(e.cfg, rp, e.mapper, e.mounter, e.store)
	if err := e.d.Reconcile(bg); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rp.claimed, []string{"cookie"}) {
		t.Fatalf("reconcile attached with claims %q, want the recorded %q", rp.claimed, "cookie")
	}
	if len(rp.records) != 1 || rp.records[0].Device == "" {
		t.Fatalf("records after the restart: %+v", rp.records)
	}
	e.assertUp("v", "id1")
}
