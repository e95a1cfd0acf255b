package rbd

import (
	"context"
	"reflect"
	"strings"
	"testing"
)

const (
	idA = "0123456789abcdef0123456789abcdef"
	idB = "fedcba9876543210fedcba9876543210"
	idC = "00112233445566778899aabbccddeeff"
)

func TestCookieRoundTrip(t *testing.T) {
	for _, c := range []struct{ name, id string }{
		{"node-1", idA},
		{"rack/node-1", idA}, // a name with a slash
		{"node-1", ""},       // before host identities
		{"rack/node-1", ""},
	} {
		name, id, ok := ParseCookie(HostCookie(c.name, c.id))
		if !ok || name != c.name || id != c.id {
			t.Errorf("ParseCookie(HostCookie(%q, %q)) = %q, %q, %v", c.name, c.id, name, id, ok)
		}
	}
	if HostCookie("node-1", "") != "ceph-docker-plugin/node-1" {
		t.Errorf("the cookie without identity is not the old format: %q", HostCookie("node-1", ""))
	}
	// A name whose last element looks like an identity cannot be told apart; one that does not
	// look like one (upper case, wrong length) stays part of the name.
	if name, id, _ := ParseCookie("ceph-docker-plugin/node/ABCDEF"); name != "node/ABCDEF" || id != "" {
		t.Errorf("ParseCookie of a name with a slash = %q, %q", name, id)
	}
	if _, _, ok := ParseCookie("auto 1234"); ok {
		t.Error("a cookie the plugin did not make was read as a host's")
	}
}

// owns decides whose a host lock is: the identity decides; a name alone (an old lock) only
// with this host's own state naming that lock.
func TestOwns(t *testing.T) {
	p := &Provisioner{cfg: ProvisionerConfig{Host: "node-1", HostID: idA}}
	legacy := HostCookie("node-1", "")
	for _, c := range []struct {
		what, cookie, claimed string
		want                  bool
	}{
		{"this identity", HostCookie("node-1", idA), "", true},
		{"this identity, renamed host", HostCookie("node-old", idA), "", true},
		{"same name, other identity (a clone, or this host before it lost STATE_DIR)", HostCookie("node-1", idB), "", false},
		{"same name, other identity, even if claimed", HostCookie("node-1", idB), HostCookie("node-1", idB), false},
		{"other host", HostCookie("node-2", idB), "", false},
		{"old lock under this name, named by this host's state", legacy, legacy, true},
		{"old lock under this name, not named by this host's state", legacy, "", false},
		{"old lock under this name, state names another", legacy, HostCookie("node-1", idA), false},
		{"old lock under another name", HostCookie("node-2", ""), HostCookie("node-2", ""), false},
		{"not a plugin lock", "auto 1234", "auto 1234", false},
	} {
		if got := p.owns(Locker{Cookie: c.cookie}, c.claimed); got != c.want {
			t.Errorf("%s: owns(%q, claimed %q) = %v", c.what, c.cookie, c.claimed, got)
		}
	}
	// Without an identity configured (tests), the name decides.
	old := &Provisioner{cfg: ProvisionerConfig{Host: "node-1"}}
	if !old.owns(Locker{Cookie: legacy}, "") || old.owns(Locker{Cookie: HostCookie("node-2", "")}, "") {
		t.Error("without an identity, the name does not decide")
	}
}

func TestHolderOfNamesTheOtherHostByNameAndIdentity(t *testing.T) {
	p := &Provisioner{cfg: ProvisionerConfig{Host: "node-1", HostID: idA}}
	owns := func(l Locker) bool { return p.owns(l, "") }
	twin := Locker{Client: "client.42", Cookie: HostCookie("node-1", idB), Addr: "10.0.0.2:0/7"}
	d := Description{Lockers: []Locker{twin}, Watchers: []Watcher{{Addr: "10.0.0.2:0/8"}}}
	h := holderOf(d, owns)
	if !strings.Contains(h, "node-1") || !strings.Contains(h, idB[:12]) || !strings.Contains(h, "10.0.0.2:0/7") {
		t.Fatalf("holder = %q", h)
	}
	pol := attachPolicy{Host: "node-1", HostID: idA}
	if s := pol.sameName(twin); !strings.Contains(s, "NODE_NAME") || !strings.Contains(s, idA[:12]) {
		t.Fatalf("sameName = %q", s)
	}
	if s := pol.sameName(Locker{Cookie: HostCookie("node-2", idB)}); s != "" {
		t.Fatalf("sameName of another name = %q", s)
	}
	ours := Description{Lockers: []Locker{{Cookie: HostCookie("node-1", idA)}}, Watchers: []Watcher{{Addr: "10.0.0.1:0/9"}}}
	if h := holderOf(ours, owns); h != "" {
		t.Fatalf("holder of this host's volume = %q", h)
	}
	if h := holderOf(ours, nil); !strings.Contains(h, idA[:12]) {
		t.Fatalf("holder for Get (nobody's own) = %q", h)
	}
}

func TestForeignWatchers(t *testing.T) {
	ws := []Watcher{{Addr: "10.0.0.1:0/100"}, {Addr: "10.0.0.1:0/200"}, {Addr: "10.0.0.2:0/300"}}
	addrs := func(ws []Watcher) []string {
		var out []string
		for _, w := range ws {
			out = append(out, w.Addr)
		}
		return out
	}
	// krbd: exactly the kernel clients of this host's mappings are its own.
	got := addrs(foreignWatchers(ws, []string{"10.0.0.1:0/100"}, true, "10.0.0.1"))
	if want := []string{"10.0.0.1:0/200", "10.0.0.2:0/300"}; !reflect.DeepEqual(got, want) {
		t.Errorf("exact: %v, want %v", got, want)
	}
	// rbd-fuse: every client at this host's IP is its own.
	got = addrs(foreignWatchers(ws, nil, false, "10.0.0.1"))
	if want := []string{"10.0.0.2:0/300"}; !reflect.DeepEqual(got, want) {
		t.Errorf("by IP: %v, want %v", got, want)
	}
	if got := foreignWatchers(ws, []string{"10.0.0.1:0/100", "10.0.0.1:0/200", "v1:10.0.0.2:0/300"}, true, ""); len(got) != 0 {
		t.Errorf("every watcher local: %v", got)
	}
	if addrIP("[v2:10.0.0.5:6800/1,v1:10.0.0.5:6789/1]") != "10.0.0.5" || addrIP("[::1]:0/5") != "::1" || addrIP("junk") != "" {
		t.Error("addrIP")
	}
	local := LocalClients(func(context.Context) ([]string, bool) { return []string{"v1:10.0.0.1:0/100", ""}, true })
	if a, exact := localAddrs(context.Background(), local); !exact || !reflect.DeepEqual(a, []string{"10.0.0.1:0/100"}) {
		t.Errorf("localAddrs = %v, %v", a, exact)
	}
}

// Only the clients the holder being fenced recorded are fenced: a record of another identity
// (a host that let go and left its record) names clients that may be alive elsewhere.
func TestRecordedClients(t *testing.T) {
	rec := HolderRecord{Host: "node-1", ID: idA, Clients: []string{"10.0.0.1:0/1", "10.0.0.1:0/2"}}
	if got := recordedClients(rec, true, idA); !reflect.DeepEqual(got, rec.Clients) {
		t.Errorf("the holder's own record: %v", got)
	}
	for _, c := range []struct {
		ok     bool
		holder string
	}{{true, idB}, {true, ""}, {false, idA}} {
		if got := recordedClients(rec, c.ok, c.holder); got != nil {
			t.Errorf("record present %v, holder %q: fences %v", c.ok, c.holder, got)
		}
	}
}
