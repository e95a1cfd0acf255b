package cinder

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

const (
	idA = "0123456789abcdef0123456789abcdef"
	idB = "fedcba9876543210fedcba9876543210"
)

func TestMountpointRoundTrip(t *testing.T) {
	for _, c := range []struct{ host, id string }{{"node-1", idA}, {"node-1", ""}} {
		a := volumes.Attachment{Device: mountpoint(c.host, c.id, "53a902c4")}
		host, id := attacher(a)
		if host != c.host || id != c.id {
			t.Errorf("attacher(%q) = %q, %q", a.Device, host, id)
		}
	}
	// An older plugin reads the host up to the first "/": the name, in either format.
	if h, _, _ := strings.Cut(strings.TrimPrefix(mountpoint("node-1", idA, "m"), "docker:"), "/"); h != "node-1" {
		t.Errorf("an older plugin reads host %q", h)
	}
	if got := attachedHost(volumes.Attachment{Device: mountpoint("node-1", idA, "m")}); got != "host node-1 (host ID "+idA[:12]+")" {
		t.Errorf("attachedHost = %q", got)
	}
	if host, id := attacher(volumes.Attachment{Device: "/dev/vdb"}); host != "(unknown host)" || id != "" {
		t.Errorf("an attachment made by Nova: %q, %q", host, id)
	}
}

// owns decides whose an attachment is: the identity decides; a name alone (an attachment made
// before host identities) only with this host's own state naming that attachment.
func TestOwnsAttachment(t *testing.T) {
	p := &Provisioner{cfg: Config{Host: "node-1", HostID: idA}}
	att := func(host, id, attID string) volumes.Attachment {
		return volumes.Attachment{Device: mountpoint(host, id, "m1"), AttachmentID: attID}
	}
	for _, c := range []struct {
		what    string
		a       volumes.Attachment
		claimed string
		want    bool
	}{
		{"this identity", att("node-1", idA, "x"), "", true},
		{"same name, other identity", att("node-1", idB, "x"), "x", false},
		{"old, this name, named by the state", att("node-1", "", "x"), "x", true},
		{"old, this name, not named by the state", att("node-1", "", "x"), "", false},
		{"old, this name, the state names another", att("node-1", "", "x"), "y", false},
		{"old, other name", att("node-2", "", "x"), "x", false},
	} {
		if got := p.owns(c.a, c.claimed); got != c.want {
			t.Errorf("%s: owns = %v", c.what, got)
		}
	}
	if s := p.sameName(att("node-1", idB, "x")); !strings.Contains(s, "NODE_NAME") {
		t.Errorf("sameName = %q", s)
	}
}

type fakeWatchers struct {
	foreign []string
	calls   int
}

func (f *fakeWatchers) LiveWatchers(context.Context, driver.ImageSpec) ([]string, error) {
	return nil, nil
}

func (f *fakeWatchers) ForeignWatchers(context.Context, driver.ImageSpec) ([]string, error) {
	f.calls++
	return f.foreign, nil
}

// An attachment under this host's identity whose image another machine's client keeps open is
// that machine's: refused, naming the client and what to do.
func TestCheckIdentity(t *testing.T) {
	w := &fakeWatchers{foreign: []string{"10.0.0.2:0/300"}}
	p := &Provisioner{cfg: Config{Host: "node-1", HostID: idA, Watchers: w}}
	spec := driver.ImageSpec{Pool: "cinder", Image: "volume-1"}
	err := p.checkIdentity(context.Background(), "db", spec)
	if !errors.Is(err, driver.ErrBusyElsewhere) || !strings.Contains(err.Error(), "10.0.0.2:0/300") ||
		!strings.Contains(err.Error(), "db") || !strings.Contains(err.Error(), driver.HostIDFile) {
		t.Fatalf("checkIdentity = %v", err)
	}
	w.foreign = nil
	if err := p.checkIdentity(context.Background(), "db", spec); err != nil {
		t.Fatalf("no foreign watcher: %v", err)
	}
}

type fakeRecorder struct {
	host, id string
	clients  []string
}

func (f *fakeRecorder) RecordClients(_ context.Context, _ driver.ImageSpec, host, id string, clients []string) error {
	f.host, f.id, f.clients = host, id, clients
	return nil
}

func (f *fakeRecorder) ClearClients(context.Context, driver.ImageSpec, string) error { return nil }

func TestRecordClientsRecordsTheKernelClient(t *testing.T) {
	r := &fakeRecorder{}
	p := &Provisioner{cfg: Config{Host: "node-1", HostID: idA, Recorder: r}}
	att := driver.Attachment{Map: driver.MapRequest{ImageSpec: driver.ImageSpec{Pool: "cinder", Image: "volume-1"}}}
	if err := p.RecordClients(context.Background(), "db", att, driver.Mapping{Client: "10.0.0.1:0/77"}); err != nil {
		t.Fatal(err)
	}
	if r.host != "node-1" || r.id != idA || len(r.clients) != 1 || r.clients[0] != "10.0.0.1:0/77" {
		t.Fatalf("recorded %+v", r)
	}
}
