//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Outages of Keystone and Cinder, on the real services: the plugin reaches them through a
// line the test can cut (a reverse proxy on 127.0.0.1 for each; Keystone's catalog is rewritten
// so that Cinder is reached through its line too). A cut line is a network partition: the
// services keep running, and what was sent before the cut is done by them.

type lineMode int

const (
	linePass    lineMode = iota
	lineHang             // requests are accepted and never answered
	lineCut              // connections are closed at once
	lineLoseAck          // pass until a request matches: it is carried out, its answer lost; then hang
)

// line is a reverse proxy to one service whose behaviour the test switches.
type line struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	mode   lineMode
	match  func(*http.Request) bool // lineLoseAck: which requests are carried out
	lost   []string                 // requests carried out whose answers were lost
	target *url.URL
	// slow, when set, holds back each request it gives a duration for before passing it on.
	slow func(*http.Request) time.Duration
}

func newLine(t *testing.T, target string, rewrite func([]byte) []byte) *line {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	l := &line{t: t, target: u}
	rp := httputil.NewSingleHostReverseProxy(u)
	director := rp.Director
	rp.Director = func(r *http.Request) { director(r); r.Header.Del("Accept-Encoding") }
	if rewrite != nil {
		rp.ModifyResponse = func(resp *http.Response) error {
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			b = rewrite(b)
			resp.Body = io.NopCloser(bytes.NewReader(b))
			resp.ContentLength = int64(len(b))
			resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
			return nil
		}
	}
	l.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		mode, match, slow := l.mode, l.match, l.slow
		l.mu.Unlock()
		if slow != nil {
			time.Sleep(slow(r))
		}
		switch {
		case mode == lineHang:
			// Read the body first: the server notices the client leaving only after that.
			_, _ = io.Copy(io.Discard, r.Body)
			<-r.Context().Done()
		case mode == lineCut:
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
				}
			}
		case mode == lineLoseAck && match(r):
			// Carry the request out whatever the client does meanwhile; its answer is lost,
			// and the line hangs from now on.
			l.set(lineHang, nil)
			done := httptest.NewRecorder()
			rp.ServeHTTP(done, r.Clone(context.Background()))
			l.mu.Lock()
			l.lost = append(l.lost, fmt.Sprintf("%s %s -> %d", r.Method, r.URL.Path, done.Code))
			l.mu.Unlock()
			<-r.Context().Done()
		default:
			rp.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(func() { l.set(linePass, nil); l.srv.CloseClientConnections(); l.srv.Close() })
	return l
}

func (l *line) set(m lineMode, match func(*http.Request) bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mode, l.match = m, match
}

// setSlow makes the line hold requests back (see line.slow); nil passes them at once again.
func (l *line) setSlow(slow func(*http.Request) time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.slow = slow
}

func (l *line) lostAnswers() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lost...)
}

// outageLab puts a line in front of Keystone and one in front of Cinder, and returns them with
// the plugin settings that use them.
func outageLab(t *testing.T) (keystone, cinderLine *line, env []string) {
	authURL, err := url.Parse(os.Getenv("OS_AUTH_URL"))
	if err != nil || authURL.Host == "" {
		t.Fatalf("OS_AUTH_URL %q: %v", os.Getenv("OS_AUTH_URL"), err)
	}
	const cinderHost = "127.0.0.1:8776" // scripts/openstack-up.sh's catalog entry
	cinderLine = newLine(t, "http://"+cinderHost, nil)
	cinderVia := strings.TrimPrefix(cinderLine.srv.URL, "http://")
	keystone = newLine(t, authURL.Scheme+"://"+authURL.Host, func(b []byte) []byte {
		return bytes.ReplaceAll(b, []byte(cinderHost), []byte(cinderVia))
	})
	env = cinderEnv(t)
	env = append(env, "OS_AUTH_URL="+keystone.srv.URL+authURL.Path)
	return keystone, cinderLine, env
}

// cinderShow is the volume as Cinder's own CLI sees it (directly, not through the lines).
type cinderShow struct {
	Status      string
	Attachments []map[string]any
}

func showVolume(t *testing.T, name string) cinderShow {
	var s cinderShow
	openstackCLI(t, &s, "volume", "show", name)
	return s
}

// pendingAttachments counts the attachments Cinder has for the volume that are not completed:
// Cinder's volume view does not list them.
func pendingAttachments(t *testing.T, id string) int {
	cmd := exec.Command("/usr/bin/openstack", "volume", "attachment", "list", "--volume-id", id, "-f", "json")
	cmd.Env = append(os.Environ(), "OS_VOLUME_API_VERSION=3.54")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openstack volume attachment list: %v", err)
	}
	var as []map[string]any
	if err := json.Unmarshal(out, &as); err != nil {
		t.Fatal(err)
	}
	return len(as)
}

// waitReleased waits until Cinder shows the volume available with no attachment at all.
func waitReleased(t *testing.T, name, id string, within time.Duration) time.Duration {
	start := time.Now()
	for {
		s := showVolume(t, name)
		if s.Status == "available" && len(s.Attachments) == 0 && pendingAttachments(t, id) == 0 {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("volume %s still %s with %d attachments (%d pending) %v after the service came back: half-attached",
				name, s.Status, len(s.Attachments), pendingAttachments(t, id), within)
		}
		time.Sleep(time.Second)
	}
}

// failsWithin calls path, which must fail within limit, and returns its message.
func failsWithin(t *testing.T, p *plugin, limit time.Duration, path string, req any) string {
	t.Helper()
	start := time.Now()
	msg := p.fail(path, req)
	if took := time.Since(start); took > limit {
		t.Errorf("%s failed after %v, beyond %v", path, took.Round(time.Millisecond), limit)
	}
	t.Logf("%s: %q (%v)", path, msg, time.Since(start).Round(time.Millisecond))
	return msg
}

// The outage tests are not parallel: their CALL_TIMEOUTs of 5-6 s also bound the set-up calls to
// the real Cinder, which the parallel tests would load (serial tests run before the parallel ones).

// Keystone unreachable (partitioned, or hanging) for a plugin that has no token yet: calls fail
// within CALL_TIMEOUT naming Keystone; once it is back, they work.
func TestKeystoneOutage(t *testing.T) {
	l := labEnv(t)
	keystone, _, env := outageLab(t)
	p := newPlugin(t, l, "host-a", append(env, "CALL_TIMEOUT=5s")...)
	for _, c := range []struct {
		mode lineMode
		name string
	}{{lineCut, "cut"}, {lineHang, "hanging"}} {
		keystone.set(c.mode, nil)
		p.start() // answers (with an error) once reconciled
		msg := failsWithin(t, p, 7*time.Second, "/VolumeDriver.Get", map[string]string{"Name": "ks-outage"})
		if !strings.Contains(msg, "Keystone") || !strings.Contains(msg, "ks-outage") {
			t.Errorf("Keystone %s: %q does not name Keystone and the volume", c.name, msg)
		}
		msg = failsWithin(t, p, 7*time.Second, "/VolumeDriver.Create", map[string]any{"Name": "ks-outage", "Opts": map[string]string{}})
		if !strings.Contains(msg, "Keystone") {
			t.Errorf("Keystone %s: create: %q does not name Keystone", c.name, msg)
		}
		keystone.set(linePass, nil)
		msg = p.fail("/VolumeDriver.Get", map[string]string{"Name": "ks-outage"})
		if !strings.Contains(msg, "not found") {
			t.Errorf("Keystone back: get of a missing volume: %q", msg)
		}
		p.stop()
	}
}

// Cinder partitioned in the middle of a Mount: the attachment is made but its answer is lost.
// The Mount fails within CALL_TIMEOUT naming Cinder; once Cinder is reachable again the plugin
// deletes the attachment on its own (no further call about the volume), and the next Mount works.
// Then Cinder is cut during an Unmount: the volume is unmounted and unmapped here, the detach
// is finished in the background once Cinder is back.
func TestCinderOutageMidOperation(t *testing.T) {
	l := labEnv(t)
	_, cinderLine, env := outageLab(t)
	p := newPlugin(t, l, "host-a", append(env, "CALL_TIMEOUT=6s")...)
	p.start()
	name := uniq("outage")
	p.create(name, map[string]string{"size": "1G"})
	t.Cleanup(func() { // a failed test may leave the line cut: reconnect before removing
		cinderLine.set(linePass, nil)
		for _, id := range []string{"c2", "c3"} {
			_ = p.try("/VolumeDriver.Unmount", map[string]string{"Name": name, "ID": id}, nil)
		}
		_ = p.try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil)
	})
	id, _ := p.get(name).Volume.Status["cinder-id"].(string)

	// The attachment create is carried out; its answer, and everything after, is lost.
	cinderLine.set(lineLoseAck, func(r *http.Request) bool {
		return r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/attachments")
	})
	// The Mount's deadline, then its undo's (as long again), which cannot reach Cinder either.
	msg := failsWithin(t, p, 15*time.Second, "/VolumeDriver.Mount", map[string]string{"Name": name, "ID": "c1"})
	if !strings.Contains(msg, "Cinder") || !strings.Contains(msg, name) {
		t.Errorf("mount with the answer lost: %q does not name Cinder and the volume", msg)
	}
	if lost := cinderLine.lostAnswers(); len(lost) != 1 || !strings.Contains(lost[0], "-> 200") {
		t.Fatalf("the attachment create was not carried out: %v", lost)
	}
	if s := showVolume(t, name); s.Status == "available" {
		t.Fatalf("Cinder shows %+v: the lost attachment was not made, the test proves nothing", s)
	}
	p.assertClean()
	cinderLine.set(linePass, nil)
	took := waitReleased(t, name, id, 60*time.Second)
	t.Logf("Cinder back: the lost attachment was deleted in the background after %v", took.Round(time.Second))
	if !strings.Contains(p.logs(), "finished an interrupted operation in the background") {
		t.Errorf("the plugin did not log the background repair")
	}

	path := p.mount(name, "c2")
	writeFile(t, path+"/f", []byte("after the outage"))

	cinderLine.set(lineCut, nil)
	msg = failsWithin(t, p, 9*time.Second, "/VolumeDriver.Unmount", map[string]string{"Name": name, "ID": "c2"})
	if !strings.Contains(msg, "Cinder") {
		t.Errorf("unmount with Cinder cut: %q does not name Cinder", msg)
	}
	if isMounted(t, path) {
		t.Error("still mounted after the Unmount that failed to detach")
	}
	if s := showVolume(t, name); s.Status != "in-use" {
		t.Fatalf("Cinder shows %+v while cut off: the test proves nothing", s)
	}
	cinderLine.set(linePass, nil)
	took = waitReleased(t, name, id, 60*time.Second)
	t.Logf("Cinder back: the detach was finished in the background after %v", took.Round(time.Second))
	p.assertClean()
	// The rest at the usual deadline (6 s is short for a fuse map on a loaded machine).
	p.stop()
	p.start("CALL_TIMEOUT=40s")
	path = p.mount(name, "c3")
	if b, err := os.ReadFile(path + "/f"); err != nil || string(b) != "after the outage" {
		t.Fatalf("data: %q, %v", b, err)
	}
	p.unmount(name, "c3")
	p.remove(name)
	p.assertClean()
}

// A plugin restarted while Keystone and Cinder are unreachable still answers Get for the volumes
// it had seen (Docker, when Get fails, silently creates a local volume of the same name and would
// run the container on the wrong disk), and Mount fails naming the service.
func TestKnownVolumesAnsweredAcrossRestartDuringOutage(t *testing.T) {
	l := labEnv(t)
	keystone, cinderLine, env := outageLab(t)
	p := newPlugin(t, l, "host-a", append(env, "CALL_TIMEOUT=5s")...)
	p.start()
	name := uniq("known")
	p.create(name, map[string]string{"size": "1G"})
	t.Cleanup(func() { // a failed test may leave the lines cut: reconnect before removing
		keystone.set(linePass, nil)
		cinderLine.set(linePass, nil)
		_ = p.try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil)
	})
	p.stop()
	keystone.set(lineCut, nil)
	cinderLine.set(lineCut, nil)
	p.start()
	g := p.get(name)
	if g.Volume.Name != name || !strings.Contains(fmt.Sprint(g.Volume.Status["backend-error"]), "Keystone") {
		t.Fatalf("get after a restart with Keystone down: %+v", g.Volume)
	}
	msg := failsWithin(t, p, 7*time.Second, "/VolumeDriver.Mount", map[string]string{"Name": name, "ID": "c1"})
	if !strings.Contains(msg, "Keystone") {
		t.Errorf("mount with Keystone down: %q", msg)
	}
	if msg := p.fail("/VolumeDriver.Get", map[string]string{"Name": name + "-never-seen"}); !strings.Contains(msg, "Keystone") {
		t.Errorf("get of a volume never seen: %q", msg)
	}
	keystone.set(linePass, nil)
	cinderLine.set(linePass, nil)
	p.remove(name)
}
