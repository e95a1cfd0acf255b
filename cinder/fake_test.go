package cinder

// An httptest fake of the parts of Keystone v3 and Cinder v3 the backend uses, for unit tests
// that need no service. Its answers are the lab's real ones (testdata/*.json, recorded by
// testdata/record.sh) with the fields of the fake's own volumes and attachments filled in; it
// keeps state (volumes, attachments, statuses that settle over successive GETs), records every
// request, and lets a test script replies (an error, a hang, anything) for a route.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/driver/undo"
)

// The projects of the recordings (demo, demo2) and a third one.
const (
	projDemo  = "17cd71bc07aa4d3fa650a4d8cd6df1a7"
	projDemo2 = "42dd67fe31ef4d649679d005918a981e"
	projDemo3 = "7c0d2b6e9f1a4e3b8d5c6a7b8c9d0e1f"

	fakeUser     = "demo"
	fakePassword = "fake-password"
	// recordedVolume is the volume of the recordings, replaced by the fake's own ids.
	recordedVolume = "b8e3ee18-f537-40a2-898d-a6905fa7c138"
)

// fakeCall is one request the fake received.
type fakeCall struct {
	Service string // "keystone" or "cinder"
	Method  string
	Path    string // Cinder: below /v3/<project>, e.g. "/attachments/<id>/action"
	Query   url.Values
	Project string // Cinder: the project in the URL
	Body    map[string]any
	Header  http.Header
}

func (c fakeCall) String() string { return c.Service + " " + c.Method + " " + c.Path }

// fakeReply is a scripted answer.
type fakeReply struct {
	Status int
	Body   string // JSON
	Hang   bool   // never answer: block until the client gives up (the call's deadline expires: see ctx)
}

type fakeScript struct {
	service, method string
	path            *regexp.Regexp
	left            int // answers left; < 0: every time
	reply           fakeReply
	fn              func(w http.ResponseWriter, c fakeCall) bool // instead of reply; false: not handled
}

type fakeProject struct {
	ID, Name string
	Enabled  bool
	Listed   bool // in /v3/auth/projects
	Role     bool // a token scoped to it is issued
}

type fakeVolume struct {
	ID, Project, Name, Description, Status  string
	VolumeType, AZ, SnapshotID, SourceVolID string
	Size                                    int
	Metadata                                map[string]string
	Multiattach                             bool
	Created                                 time.Time
	// Settle are the statuses the volume takes, one per GET of it ("gone": deleted).
	Settle []string
}

type fakeAttachment struct {
	ID, VolumeID, Instance, Status, Mode string
	HostName                             string // host_name as Cinder shows it (the lab's is null)
	Mountpoint                           string // the connector's, shown as the volume attachment's device
	ConnInfo                             map[string]any
	At                                   time.Time
}

type fakeOpenStack struct {
	t      *testing.T
	ks, cs *httptest.Server
	stop   chan struct{}

	mu          sync.Mutex
	password    string
	appCreds    map[string]string // id -> secret; scoped to projDemo
	projects    []fakeProject
	tokens      map[string]string // token -> project id
	noCinder    bool              // the catalog has no block-storage endpoint
	noIdentity  bool              // the catalog has no identity endpoint
	volumes     map[string]*fakeVolume
	attachments map[string]*fakeAttachment
	snapshots   map[string]int // id -> size
	quota       int            // volumes per project; 0: none
	// nextConnInfo, when set, is the connection info of the next attachment created.
	nextConnInfo map[string]any
	pageSize     int // Cinder's osapi_max_limit
	seq          int
	scripts      []*fakeScript
	calls        []fakeCall
	unexpected   []string
	// deadline expires the context of the test's call (see ctx): a hanging reply calls it once
	// it hangs, and deadlineAt at the request it names.
	deadline func()
	// CreateSettle and DeleteSettle are the statuses a new volume and a deleted one take, one
	// per GET.
	createSettle, deleteSettle []string
}

// newFake starts the fake with the recorded projects: demo (the configured one), demo2 (listed,
// with a role), demo3 (not listed).
func newFake(t *testing.T) *fakeOpenStack { t.Helper(); return newFakeOn(t, false) }

// newFakeOn is newFake, serving HTTPS when tls (httptest's certificate: see caFile).
func newFakeOn(t *testing.T, tls bool) *fakeOpenStack {
	t.Helper()
	f := &fakeOpenStack{
		t: t, stop: make(chan struct{}), password: fakePassword, appCreds: map[string]string{},
		projects: []fakeProject{
			{ID: projDemo, Name: "demo", Enabled: true, Listed: true, Role: true},
			{ID: projDemo2, Name: "demo2", Enabled: true, Listed: true, Role: true},
			{ID: projDemo3, Name: "demo3", Enabled: true, Role: true},
		},
		tokens: map[string]string{}, volumes: map[string]*fakeVolume{}, attachments: map[string]*fakeAttachment{},
		snapshots: map[string]int{}, pageSize: 1000,
		createSettle: []string{"creating", "available"}, deleteSettle: []string{"deleting", "gone"},
	}
	start := func(h http.Handler) *httptest.Server {
		srv := httptest.NewUnstartedServer(h)
		srv.Config.ErrorLog = log.New(io.Discard, "", 0) // a client refusing the certificate is a test case
		if tls {
			srv.StartTLS()
		} else {
			srv.Start()
		}
		return srv
	}
	f.ks = start(http.HandlerFunc(f.keystone))
	f.cs = start(http.HandlerFunc(f.cinder))
	t.Cleanup(func() {
		close(f.stop)
		f.ks.Close()
		f.cs.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		if len(f.unexpected) > 0 {
			t.Errorf("the fake received requests it does not know: %v", f.unexpected)
		}
	})
	return f
}

// config is a Config for user demo in project demo against the fake, polling every millisecond.
func (f *fakeOpenStack) config(host string) Config {
	return Config{
		Auth: gophercloud.AuthOptions{
			IdentityEndpoint: f.ks.URL + "/v3", Username: fakeUser, Password: fakePassword, DomainName: "Default",
			Scope: &gophercloud.AuthScope{ProjectName: "demo", DomainName: "Default"},
		},
		Region: "RegionOne", Host: host, CephUser: "docker", Poll: time.Millisecond,
	}
}

func (f *fakeOpenStack) prov(host string) *Provisioner { return New(f.config(host)) }

// script makes the next times requests (times < 0: all) matching service, method and the path
// pattern (anchored) answer reply.
func (f *fakeOpenStack) script(service, method, path string, times int, reply fakeReply) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.scripts = append(f.scripts, &fakeScript{service: service, method: method, path: regexp.MustCompile("^" + path + "$"), left: times, reply: reply})
}

// scriptFunc is script with a function that answers (true) or lets the fake answer (false).
func (f *fakeOpenStack) scriptFunc(service, method, path string, fn func(w http.ResponseWriter, c fakeCall) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.scripts = append(f.scripts, &fakeScript{service: service, method: method, path: regexp.MustCompile("^" + path + "$"), left: -1, fn: fn})
}

// count is the number of requests matching service, method and the path pattern.
func (f *fakeOpenStack) count(service, method, path string) int {
	return len(f.find(service, method, path))
}

// find returns the requests matching service, method and the path pattern, in order.
func (f *fakeOpenStack) find(service, method, path string) []fakeCall {
	re := regexp.MustCompile("^" + path + "$")
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fakeCall
	for _, c := range f.calls {
		if c.Service == service && c.Method == method && re.MatchString(c.Path) {
			out = append(out, c)
		}
	}
	return out
}

// writes are the requests that changed something (not GETs), as "service METHOD path".
func (f *fakeOpenStack) writes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if c.Method != http.MethodGet && c.Service == "cinder" {
			out = append(out, c.String())
		}
	}
	return out
}

func (f *fakeOpenStack) resetCalls() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = nil
}

// fakeCleanup bounds the undo of a call under test (undo.WithCleanup), shorter than the plugin's.
const fakeCleanup = time.Second

// ctx is the context of the call under test: 5 s, or until the fake makes it expire (a reply
// that hangs, deadlineAt), so that deadlines fall at a known point whatever the machine's load.
func (f *fakeOpenStack) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	f.edit(func() { f.deadline = cancel })
	return undo.WithCleanup(ctx, fakeCleanup)
}

// deadlineAt makes the call's deadline expire when the fake receives the n-th request matching
// service, method and the path pattern (before it answers it).
func (f *fakeOpenStack) deadlineAt(service, method, path string, n int) {
	seen := 0
	f.scriptFunc(service, method, path, func(http.ResponseWriter, fakeCall) bool {
		f.mu.Lock()
		seen++
		expire := f.deadline
		f.mu.Unlock()
		if seen == n && expire != nil {
			expire()
		}
		return false
	})
}

// expireBetweenPolls makes the call's deadline expire during p's n-th wait between two status
// polls (not while a request is in flight, which deadlineAt does). Later waits (an undo's, on a
// context of its own) pass as usual.
func (f *fakeOpenStack) expireBetweenPolls(p *Provisioner, n int) {
	waits := 0
	p.after = func(d time.Duration) <-chan time.Time {
		if waits++; waits != n {
			return time.After(d)
		}
		f.mu.Lock()
		expire := f.deadline
		f.mu.Unlock()
		expire()
		return nil // never: the deadline comes first
	}
}

// edit runs fn with the fake's state locked: for changes to it once it serves.
func (f *fakeOpenStack) edit(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

// expireTokens makes every token issued so far invalid, as at their expiry.
func (f *fakeOpenStack) expireTokens() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens = map[string]string{}
}

func (f *fakeOpenStack) newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// addVolume puts an available volume of the plugin's into project (ext4, 1 GiB, type rbd).
func (f *fakeOpenStack) addVolume(project, name string) *fakeVolume {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	v := &fakeVolume{
		ID: f.newID(), Project: project, Name: name, Status: "available", Size: 1, VolumeType: "rbd", AZ: "nova",
		Description: "Docker volume " + name + " (ceph-docker-plugin)",
		Metadata:    map[string]string{metaManaged: managedBy, metaFSType: "ext4"},
		Created:     time.Date(2026, 11, 29, 15, 8, 9, 0, time.UTC).Add(time.Duration(f.seq) * time.Second),
	}
	f.volumes[v.ID] = v
	return v
}

// attach gives the volume a completed attachment of host's mount mountID (another plugin's).
func (f *fakeOpenStack) attach(v *fakeVolume, host, mountID string) *fakeAttachment {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := &fakeAttachment{ID: f.newID(), VolumeID: v.ID, Instance: InstanceUUID(mountID), Status: "attached", Mode: "rw",
		Mountpoint: "docker:" + host + "/" + mountID, ConnInfo: connInfo(v.ID), At: time.Now().UTC()}
	f.attachments[a.ID] = a
	v.Status = "in-use"
	return a
}

// attachRO is attach with mode "ro": another host's shared read-only claim.
func (f *fakeOpenStack) attachRO(v *fakeVolume, host, mountID string) *fakeAttachment {
	a := f.attach(v, host, mountID)
	f.edit(func() { a.Mode = "ro" })
	return a
}

// setMeta sets (or with "" removes) one of the volume's metadata keys, as `openstack volume set
// --property` does.
func (f *fakeOpenStack) setMeta(v *fakeVolume, key, value string) {
	f.edit(func() {
		if value == "" {
			delete(v.Metadata, key)
		} else {
			v.Metadata[key] = value
		}
	})
}

// reserve gives the volume an attachment that was created but never completed, for mountID.
func (f *fakeOpenStack) reserve(v *fakeVolume, host, mountID string) *fakeAttachment {
	a := f.attach(v, host, mountID)
	f.mu.Lock()
	defer f.mu.Unlock()
	a.Status, v.Status = "attaching", "attaching"
	return a
}

func (f *fakeOpenStack) volume(id string) (fakeVolume, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.volumes[id]
	if !ok {
		return fakeVolume{}, false
	}
	return *v, true
}

func (f *fakeOpenStack) setStatus(v *fakeVolume, status string, settle ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v.Status, v.Settle = status, settle
}

// attachmentsOf lists the volume's attachments, sorted by id.
func (f *fakeOpenStack) attachmentsOf(volumeID string) []fakeAttachment {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fakeAttachment
	for _, a := range f.attachments {
		if a.VolumeID == volumeID {
			out = append(out, *a)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// connInfo is the recorded connection info of an RBD volume (Cinder's pool is "cinder").
func connInfo(volumeID string) map[string]any {
	ci := fixture("cinder_attachment.json")["attachment"].(map[string]any)["connection_info"].(map[string]any)
	ci["name"] = "cinder/volume-" + volumeID
	ci["volume_id"] = volumeID
	return ci
}

var (
	fixturesMu sync.Mutex
	fixtures   = map[string][]byte{}
)

// fixture reads testdata/name, a fresh copy each time.
func fixture(name string) map[string]any {
	fixturesMu.Lock()
	b, ok := fixtures[name]
	if !ok {
		var err error
		if b, err = os.ReadFile(filepath.Join("testdata", name)); err != nil {
			panic(err)
		}
		fixtures[name] = b
	}
	fixturesMu.Unlock()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		panic(name + ": " + err.Error())
	}
	return m
}

// apiErr is Cinder's error body (as recorded: badRequest, itemNotFound, overLimit ...).
func apiErr(kind string, code int, msg string) string {
	b, _ := json.Marshal(map[string]any{kind: map[string]any{"code": code, "message": msg}})
	return string(b)
}

func (f *fakeOpenStack) reply(w http.ResponseWriter, status int, body any) {
	var b []byte
	switch v := body.(type) {
	case nil:
	case string:
		b = []byte(v)
	default:
		b, _ = json.Marshal(v)
	}
	s := strings.ReplaceAll(string(b), "{{CINDER}}", f.cs.URL)
	s = strings.ReplaceAll(s, "{{KEYSTONE}}", f.ks.URL)
	if len(s) > 0 {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, s)
}

// record logs the request and answers it from a script if one matches: true when it did.
func (f *fakeOpenStack) record(w http.ResponseWriter, r *http.Request, c fakeCall) bool {
	b, _ := io.ReadAll(r.Body)
	if len(b) > 0 {
		_ = json.Unmarshal(b, &c.Body)
	}
	f.mu.Lock()
	f.calls = append(f.calls, c)
	var s *fakeScript
	for _, cand := range f.scripts {
		if cand.service == c.Service && cand.method == c.Method && cand.path.MatchString(c.Path) && cand.left != 0 {
			s = cand
			break
		}
	}
	if s != nil && s.left > 0 {
		s.left--
	}
	f.mu.Unlock()
	if s == nil {
		return false
	}
	if s.fn != nil {
		return s.fn(w, c)
	}
	if s.reply.Hang {
		f.mu.Lock()
		expire := f.deadline
		f.mu.Unlock()
		if expire != nil {
			expire()
		}
		select {
		case <-r.Context().Done():
		case <-f.stop:
		}
		return true
	}
	f.reply(w, s.reply.Status, s.reply.Body)
	return true
}

func (f *fakeOpenStack) unknown(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.unexpected = append(f.unexpected, r.Method+" "+r.URL.String())
	f.mu.Unlock()
	f.reply(w, http.StatusNotFound, apiErr("itemNotFound", 404, "the fake does not know "+r.URL.Path))
}

// keystone serves POST /v3/auth/tokens and GET /v3/auth/projects.
func (f *fakeOpenStack) keystone(w http.ResponseWriter, r *http.Request) {
	c := fakeCall{Service: "keystone", Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Header: r.Header.Clone()}
	if f.record(w, r, c) {
		return
	}
	f.mu.Lock()
	c = f.calls[len(f.calls)-1]
	f.mu.Unlock()
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v3/auth/tokens":
		f.issueToken(w, c.Body)
	case r.Method == http.MethodGet && r.URL.Path == "/v3/auth/projects":
		f.mu.Lock()
		_, ok := f.tokens[r.Header.Get("X-Auth-Token")]
		f.mu.Unlock()
		if !ok {
			f.reply(w, http.StatusUnauthorized, fixture("keystone_wrong_password.json"))
			return
		}
		rec := fixture("keystone_auth_projects.json")
		tmpl := rec["projects"].([]any)[0].(map[string]any)
		var ps []any
		f.mu.Lock()
		for _, p := range f.projects {
			if p.Listed {
				e := deepCopy(tmpl)
				e["id"], e["name"], e["enabled"] = p.ID, p.Name, p.Enabled
				e["links"] = map[string]any{"self": "{{KEYSTONE}}/v3/projects/" + p.ID}
				ps = append(ps, e)
			}
		}
		f.mu.Unlock()
		rec["projects"] = ps
		f.reply(w, http.StatusOK, rec)
	default:
		f.unknown(w, r)
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func deepCopy(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out
}

// str walks m along keys and returns the string there ("" if none).
func str(m map[string]any, keys ...string) string {
	var cur any = m
	for _, k := range keys {
		mm, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = mm[k]
	}
	s, _ := cur.(string)
	return s
}

func (f *fakeOpenStack) issueToken(w http.ResponseWriter, body map[string]any) {
	deny := func() { f.reply(w, http.StatusUnauthorized, fixture("keystone_wrong_password.json")) }
	ident, _ := body["auth"].(map[string]any)
	f.mu.Lock()
	defer f.mu.Unlock()
	project := ""
	switch {
	case str(ident, "identity", "password", "user", "name") == fakeUser:
		if str(ident, "identity", "password", "user", "password") != f.password {
			deny()
			return
		}
		if id := str(ident, "scope", "project", "id"); id != "" {
			project = id
		} else {
			for _, p := range f.projects {
				if p.Name == str(ident, "scope", "project", "name") {
					project = p.ID
				}
			}
		}
	case str(ident, "identity", "application_credential", "id") != "":
		secret, ok := f.appCreds[str(ident, "identity", "application_credential", "id")]
		if !ok || secret != str(ident, "identity", "application_credential", "secret") {
			deny()
			return
		}
		project = projDemo
	default:
		deny()
		return
	}
	var proj *fakeProject
	for i := range f.projects {
		if f.projects[i].ID == project {
			proj = &f.projects[i]
		}
	}
	if proj == nil || !proj.Role || !proj.Enabled {
		// Keystone answers 401 to a scope without a role, as to a wrong password (recorded).
		f.reply(w, http.StatusUnauthorized, fixture("keystone_no_role.json"))
		return
	}
	b, _ := json.Marshal(fixture("keystone_token.json"))
	var tok map[string]any
	_ = json.Unmarshal([]byte(strings.ReplaceAll(string(b), projDemo, proj.ID)), &tok)
	t := tok["token"].(map[string]any)
	t["project"].(map[string]any)["name"] = proj.Name
	now := time.Now().UTC()
	t["issued_at"] = now.Format("2006-01-02T15:04:05.000000Z")
	t["expires_at"] = now.Add(time.Hour).Format("2006-01-02T15:04:05.000000Z")
	if f.noCinder || f.noIdentity {
		var cat []any
		for _, e := range t["catalog"].([]any) {
			ty := e.(map[string]any)["type"]
			if !(f.noCinder && (ty == "block-storage" || ty == "volumev3")) && !(f.noIdentity && ty == "identity") {
				cat = append(cat, e)
			}
		}
		t["catalog"] = cat
	}
	id := f.newID()
	f.tokens[id] = proj.ID
	w.Header().Set("X-Subject-Token", id)
	f.reply(w, http.StatusCreated, tok)
}

var cinderPathRE = regexp.MustCompile(`^/v3/([0-9a-f]{32})(/.*)$`)

// cinder serves /v3/<project>/{volumes,attachments,snapshots,types}.
func (f *fakeOpenStack) cinder(w http.ResponseWriter, r *http.Request) {
	m := cinderPathRE.FindStringSubmatch(r.URL.Path)
	if m == nil {
		f.unknown(w, r)
		return
	}
	c := fakeCall{Service: "cinder", Method: r.Method, Path: m[2], Query: r.URL.Query(), Project: m[1], Header: r.Header.Clone()}
	if f.record(w, r, c) {
		return
	}
	f.mu.Lock()
	c = f.calls[len(f.calls)-1]
	tokProject, ok := f.tokens[r.Header.Get("X-Auth-Token")]
	f.mu.Unlock()
	if !ok {
		f.reply(w, http.StatusUnauthorized, fixture("keystone_wrong_password.json")) // keystonemiddleware's answer
		return
	}
	if tokProject != c.Project {
		f.reply(w, http.StatusForbidden, apiErr("forbidden", 403, "Policy doesn't allow this operation in project "+c.Project))
		return
	}
	mv := 0.0
	if v, ok := strings.CutPrefix(r.Header.Get("OpenStack-API-Version"), "volume "); ok {
		mv, _ = strconv.ParseFloat(v, 64)
	}
	parts := strings.Split(strings.Trim(c.Path, "/"), "/")
	switch {
	case parts[0] == "volumes":
		f.volumesAPI(w, r, c, parts[1:])
	case parts[0] == "attachments" && mv < 3.27:
		f.reply(w, http.StatusNotFound, apiErr("itemNotFound", 404, "The resource could not be found."))
	case parts[0] == "attachments":
		f.attachmentsAPI(w, r, c, parts[1:], mv)
	case parts[0] == "snapshots" && len(parts) == 2 && r.Method == http.MethodGet:
		f.mu.Lock()
		size, ok := f.snapshots[parts[1]]
		f.mu.Unlock()
		if !ok {
			f.reply(w, http.StatusNotFound, apiErr("itemNotFound", 404, "Snapshot "+parts[1]+" could not be found."))
			return
		}
		s := fixture("cinder_snapshot.json")
		s["snapshot"].(map[string]any)["id"] = parts[1]
		s["snapshot"].(map[string]any)["size"] = size
		f.reply(w, http.StatusOK, s)
	case parts[0] == "types" && len(parts) == 2 && r.Method == http.MethodGet:
		for _, t := range fixture("cinder_types.json")["volume_types"].([]any) {
			if t.(map[string]any)["id"] == parts[1] {
				f.reply(w, http.StatusOK, map[string]any{"volume_type": t})
				return
			}
		}
		f.reply(w, http.StatusNotFound, apiErr("itemNotFound", 404, "Volume type "+parts[1]+" could not be found."))
	default:
		f.unknown(w, r)
	}
}

// volumeJSON renders v as Cinder does (the recorded volume, with v's fields). f.mu is held.
func (f *fakeOpenStack) volumeJSON(v *fakeVolume) map[string]any {
	out := fixture("cinder_volume_in_use.json")["volume"].(map[string]any)
	tmplAtt := out["attachments"].([]any)[0].(map[string]any)
	out["id"], out["name"], out["status"], out["size"], out["description"] = v.ID, v.Name, v.Status, v.Size, v.Description
	out["volume_type"], out["availability_zone"], out["multiattach"] = v.VolumeType, v.AZ, v.Multiattach
	out["os-vol-tenant-attr:tenant_id"] = v.Project
	out["created_at"] = v.Created.Format("2006-01-02T15:04:05.000000")
	out["snapshot_id"], out["source_volid"] = nilIfEmpty(v.SnapshotID), nilIfEmpty(v.SourceVolID)
	meta := map[string]any{}
	for k, val := range v.Metadata {
		meta[k] = val
	}
	out["metadata"] = meta
	out["links"] = []any{
		map[string]any{"rel": "self", "href": "{{CINDER}}/v3/" + v.Project + "/volumes/" + v.ID},
		map[string]any{"rel": "bookmark", "href": "{{CINDER}}/" + v.Project + "/volumes/" + v.ID},
	}
	atts := []any{}
	var ids []string
	for id, a := range f.attachments {
		if a.VolumeID == v.ID && a.Status == "attached" {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		a := f.attachments[id]
		e := deepCopy(tmplAtt)
		e["id"], e["volume_id"], e["attachment_id"], e["server_id"] = v.ID, v.ID, a.ID, a.Instance
		e["host_name"], e["device"] = nilIfEmpty(a.HostName), a.Mountpoint
		e["attached_at"] = a.At.Format("2006-01-02T15:04:05.000000")
		atts = append(atts, e)
	}
	out["attachments"] = atts
	return out
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// attachmentJSON renders a as Cinder does. f.mu is held.
func attachmentJSON(a *fakeAttachment) map[string]any {
	out := fixture("cinder_attachment.json")["attachment"].(map[string]any)
	out["id"], out["status"], out["instance"], out["volume_id"], out["attach_mode"] = a.ID, a.Status, a.Instance, a.VolumeID, a.Mode
	out["attached_at"] = a.At.Format("2006-01-02T15:04:05.000000")
	if a.ConnInfo == nil {
		out["connection_info"] = nil
	} else {
		ci := deepCopy(a.ConnInfo)
		if _, flat := ci["name"]; flat {
			ci["attachment_id"], ci["access_mode"] = a.ID, a.Mode
		}
		out["connection_info"] = ci
	}
	return out
}

var metaFilterRE = regexp.MustCompile(`'([^']*)':\s*'([^']*)'`)

func (f *fakeOpenStack) volumesAPI(w http.ResponseWriter, r *http.Request, c fakeCall, rest []string) {
	f.mu.Lock()
	locked := true
	unlock := func() {
		if locked {
			locked = false
			f.mu.Unlock()
		}
	}
	defer unlock()
	answer := func(status int, body any) { unlock(); f.reply(w, status, body) }
	notFound := func(id string) {
		answer(http.StatusNotFound, apiErr("itemNotFound", 404, "Volume "+id+" could not be found."))
	}
	switch {
	case len(rest) == 1 && rest[0] == "detail" && r.Method == http.MethodGet:
		q := c.Query
		want := map[string]string{}
		for _, m := range metaFilterRE.FindAllStringSubmatch(q.Get("metadata"), -1) {
			want[m[1]] = m[2]
		}
		var vs []*fakeVolume
		for _, v := range f.volumes {
			if v.Project != c.Project || (q.Has("name") && v.Name != q.Get("name")) {
				continue
			}
			match := true
			for k, val := range want {
				match = match && v.Metadata[k] == val
			}
			if match {
				vs = append(vs, v)
			}
		}
		// Cinder's default order: newest first.
		sort.Slice(vs, func(i, j int) bool {
			if !vs[i].Created.Equal(vs[j].Created) {
				return vs[i].Created.After(vs[j].Created)
			}
			return vs[i].ID > vs[j].ID
		})
		if m := q.Get("marker"); m != "" {
			i := slices.IndexFunc(vs, func(v *fakeVolume) bool { return v.ID == m })
			if i < 0 {
				answer(http.StatusBadRequest, apiErr("badRequest", 400, "marker ["+m+"] not found"))
				return
			}
			vs = vs[i+1:]
		}
		limit := f.pageSize
		if l, err := strconv.Atoi(q.Get("limit")); err == nil && l < limit {
			limit = l
		}
		out := map[string]any{}
		if len(vs) > limit {
			vs = vs[:limit]
			nq := url.Values{}
			for k, v := range q {
				nq[k] = v
			}
			nq.Set("marker", vs[len(vs)-1].ID)
			nq.Set("limit", strconv.Itoa(limit))
			out["volumes_links"] = []any{map[string]any{"rel": "next", "href": "{{CINDER}}/v3/" + c.Project + "/volumes/detail?" + nq.Encode()}}
		}
		list := []any{}
		for _, v := range vs {
			list = append(list, f.volumeJSON(v))
		}
		out["volumes"] = list
		answer(http.StatusOK, out)
	case len(rest) == 0 && r.Method == http.MethodPost:
		body, _ := c.Body["volume"].(map[string]any)
		size, _ := body["size"].(float64)
		if size <= 0 {
			answer(http.StatusBadRequest, apiErr("badRequest", 400, "Invalid input for field/attribute size."))
			return
		}
		n := 0
		for _, v := range f.volumes {
			if v.Project == c.Project {
				n++
			}
		}
		if f.quota > 0 && n >= f.quota {
			answer(http.StatusRequestEntityTooLarge, apiErr("overLimit", 413,
				fmt.Sprintf("VolumeLimitExceeded: Maximum number of volumes allowed (%d) exceeded for quota 'volumes'.", f.quota)))
			return
		}
		vt, _ := body["volume_type"].(string)
		if vt == "" {
			vt = "__DEFAULT__"
		} else {
			found := false
			for _, t := range fixture("cinder_types.json")["volume_types"].([]any) {
				tm := t.(map[string]any)
				if tm["id"] == vt || tm["name"] == vt {
					vt, found = tm["name"].(string), true
				}
			}
			if !found {
				answer(http.StatusNotFound, apiErr("itemNotFound", 404, "Volume type with name "+vt+" could not be found."))
				return
			}
		}
		f.seq++
		v := &fakeVolume{ID: f.newID(), Project: c.Project, Status: "creating", Size: int(size), VolumeType: vt, AZ: "nova",
			Metadata: map[string]string{}, Created: time.Now().UTC().Add(time.Duration(f.seq) * time.Microsecond),
			Settle: slices.Clone(f.createSettle)}
		v.Name, _ = body["name"].(string)
		v.Description, _ = body["description"].(string)
		v.SnapshotID, _ = body["snapshot_id"].(string)
		v.SourceVolID, _ = body["source_volid"].(string)
		if az, _ := body["availability_zone"].(string); az != "" {
			v.AZ = az
		}
		if md, ok := body["metadata"].(map[string]any); ok {
			for k, val := range md {
				v.Metadata[k], _ = val.(string)
			}
		}
		f.volumes[v.ID] = v
		out := f.volumeJSON(v)
		answer(http.StatusAccepted, map[string]any{"volume": out})
	case len(rest) == 1 && r.Method == http.MethodGet:
		v, ok := f.volumes[rest[0]]
		if !ok || v.Project != c.Project {
			notFound(rest[0])
			return
		}
		if len(v.Settle) > 0 {
			v.Status, v.Settle = v.Settle[0], v.Settle[1:]
		}
		if v.Status == "gone" {
			delete(f.volumes, v.ID)
			notFound(rest[0])
			return
		}
		answer(http.StatusOK, map[string]any{"volume": f.volumeJSON(v)})
	case len(rest) == 1 && r.Method == http.MethodPut:
		v, ok := f.volumes[rest[0]]
		if !ok || v.Project != c.Project {
			notFound(rest[0])
			return
		}
		body, _ := c.Body["volume"].(map[string]any)
		if s, ok := body["name"].(string); ok {
			v.Name = s
		}
		if s, ok := body["description"].(string); ok {
			v.Description = s
		}
		answer(http.StatusOK, map[string]any{"volume": f.volumeJSON(v)})
	case len(rest) == 1 && r.Method == http.MethodDelete:
		v, ok := f.volumes[rest[0]]
		if !ok || v.Project != c.Project {
			notFound(rest[0])
			return
		}
		// Cinder deletes a volume available or in an error status; not one attached, being
		// attached, or creating once scheduled to a backend (recorded: a volume not scheduled yet
		// is deleted, 202; the fake's volumes are scheduled at once).
		switch {
		case v.Status == "creating":
			answer(http.StatusBadRequest, fixture("cinder_volume_delete_creating.json"))
			return
		case v.Status != "available" && !strings.HasPrefix(v.Status, "error"):
			answer(http.StatusBadRequest, fixture("cinder_volume_delete_in_use.json"))
			return
		}
		v.Status, v.Settle = "deleting", slices.Clone(f.deleteSettle)
		answer(http.StatusAccepted, nil)
	default:
		unlock()
		f.unknown(w, r)
	}
}

func (f *fakeOpenStack) attachmentsAPI(w http.ResponseWriter, r *http.Request, c fakeCall, rest []string, mv float64) {
	f.mu.Lock()
	locked := true
	unlock := func() {
		if locked {
			locked = false
			f.mu.Unlock()
		}
	}
	defer unlock()
	answer := func(status int, body any) { unlock(); f.reply(w, status, body) }
	notFound := func(id string) {
		answer(http.StatusNotFound, apiErr("itemNotFound", 404, "Volume attachment could not be found with filter: attachment_id = "+id+"."))
	}
	switch {
	case len(rest) == 0 && r.Method == http.MethodPost:
		body, _ := c.Body["attachment"].(map[string]any)
		volID, _ := body["volume_uuid"].(string)
		inst, _ := body["instance_uuid"].(string)
		mode, _ := body["mode"].(string)
		if mode != "" && mv < 3.54 {
			answer(http.StatusBadRequest, apiErr("badRequest", 400, "Additional properties are not allowed ('mode' was unexpected)"))
			return
		}
		if mode == "" {
			mode = "rw"
		}
		if inst != "" && !uuidRE.MatchString(inst) {
			answer(http.StatusBadRequest, apiErr("badRequest", 400, "Invalid input for field/attribute instance_uuid."))
			return
		}
		v, ok := f.volumes[volID]
		if !ok || v.Project != c.Project {
			answer(http.StatusNotFound, apiErr("itemNotFound", 404, "Volume "+volID+" could not be found."))
			return
		}
		if v.Status != "available" && !(v.Multiattach && v.Status == "in-use") {
			answer(http.StatusBadRequest, apiErr("badRequest", 400, fmt.Sprintf(
				"Invalid volume: Volume %s status must be available or downloading to reserve, but the current status is %s.", v.ID, v.Status)))
			return
		}
		a := &fakeAttachment{ID: f.newID(), VolumeID: v.ID, Instance: inst, Status: "reserved", Mode: mode, At: time.Now().UTC()}
		v.Status = "reserved"
		if conn, ok := body["connector"].(map[string]any); ok {
			a.Status, v.Status = "attaching", "attaching"
			a.Mountpoint, _ = conn["mountpoint"].(string)
			a.ConnInfo = connInfo(v.ID)
			if f.nextConnInfo != nil {
				a.ConnInfo, f.nextConnInfo = f.nextConnInfo, nil
			}
		}
		f.attachments[a.ID] = a
		out := attachmentJSON(a)
		out["status"] = "reserved" // as recorded: the answer says reserved, the attachment is attaching
		answer(http.StatusOK, map[string]any{"attachment": out})
	case len(rest) == 1 && rest[0] == "detail" && r.Method == http.MethodGet:
		var ids []string
		for id, a := range f.attachments {
			if v, ok := f.volumes[a.VolumeID]; ok && v.Project == c.Project && (!c.Query.Has("volume_id") || a.VolumeID == c.Query.Get("volume_id")) {
				ids = append(ids, id)
			}
		}
		sort.Strings(ids)
		list := []any{}
		for _, id := range ids {
			list = append(list, attachmentJSON(f.attachments[id]))
		}
		answer(http.StatusOK, map[string]any{"attachments": list})
	case len(rest) == 1 && r.Method == http.MethodGet:
		a, ok := f.attachments[rest[0]]
		if !ok {
			notFound(rest[0])
			return
		}
		answer(http.StatusOK, map[string]any{"attachment": attachmentJSON(a)})
	case len(rest) == 2 && rest[1] == "action" && r.Method == http.MethodPost:
		a, ok := f.attachments[rest[0]]
		if _, complete := c.Body["os-complete"]; !complete || mv < 3.44 {
			answer(http.StatusBadRequest, apiErr("badRequest", 400, "Invalid action"))
			return
		}
		if !ok {
			notFound(rest[0])
			return
		}
		a.Status = "attached"
		if v, ok := f.volumes[a.VolumeID]; ok {
			v.Status = "in-use"
		}
		answer(http.StatusNoContent, nil)
	case len(rest) == 1 && r.Method == http.MethodDelete:
		a, ok := f.attachments[rest[0]]
		if !ok {
			notFound(rest[0])
			return
		}
		delete(f.attachments, a.ID)
		if v, ok := f.volumes[a.VolumeID]; ok {
			v.Status = "available"
			for _, o := range f.attachments {
				if o.VolumeID == v.ID {
					v.Status = "in-use"
				}
			}
		}
		answer(http.StatusOK, fixture("cinder_attachment_delete.json"))
	default:
		unlock()
		f.unknown(w, r)
	}
}

// scriptedFencer is a Fencer that records the images (and holders) it was asked to fence and
// answers as scripted.
type scriptedFencer struct {
	mu      sync.Mutex
	calls   []driver.ImageSpec
	holders []string
	fenced  []string
	err     error
	// writesBefore are the Cinder writes made before each Fence (set when os is).
	os           *fakeOpenStack
	writesBefore [][]string
}

func (f *scriptedFencer) Fence(_ context.Context, spec driver.ImageSpec, holder string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, spec)
	f.holders = append(f.holders, holder)
	if f.os != nil {
		f.writesBefore = append(f.writesBefore, f.os.writes())
	}
	return f.fenced, f.err
}

// scriptedWatchers is a Watchers that records the images asked about and answers as scripted:
// live and err for LiveWatchers, foreign and foreignErr for ForeignWatchers.
type scriptedWatchers struct {
	mu                  sync.Mutex
	calls, foreignCalls []driver.ImageSpec
	live, foreign       []string
	err, foreignErr     error
}

func (f *scriptedWatchers) ForeignWatchers(_ context.Context, spec driver.ImageSpec) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.foreignCalls = append(f.foreignCalls, spec)
	return f.foreign, f.foreignErr
}

func (f *scriptedWatchers) LiveWatchers(_ context.Context, spec driver.ImageSpec) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, spec)
	return f.live, f.err
}
