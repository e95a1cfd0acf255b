package metrics

import (
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

type fakeStates struct {
	states []driver.State
	err    error
}

func (f *fakeStates) All() ([]driver.State, error) { return f.states, f.err }

func TestOutcome(t *testing.T) {
	for err, want := range map[error]string{
		nil: "ok",
		fmt.Errorf("volume v: %w", driver.ErrNotFound):             "not_found",
		fmt.Errorf("create volume v: %w: other", driver.ErrExists): "exists",
		fmt.Errorf("%w: host-b", driver.ErrBusyElsewhere):          "busy_elsewhere",
		fmt.Errorf("x: %w", driver.ErrInUse):                       "in_use",
		fmt.Errorf("x: %w", driver.ErrInvalid):                     "invalid",
		fmt.Errorf("x: %w", driver.ErrPermission):                  "permission",
		fmt.Errorf("x: %w", driver.ErrTimeout):                     "timeout",
		errors.New("mkfs failed"):                                  "error",
	} {
		if got := Outcome(err); got != want {
			t.Errorf("Outcome(%v) = %q, want %q", err, got, want)
		}
	}
}

func TestRecorder(t *testing.T) {
	states := &fakeStates{states: []driver.State{
		{Name: "a", IDs: []string{"c1", "c2"}, Uses: map[string]int{"c1": 3}},
		{Name: "b", IDs: []string{"c3"}},
		{Name: "c", Op: "unmount", OpID: "c4"},
	}}
	r := New(states, "rbd")
	r.Call("get", nil, 3*time.Millisecond)
	r.Call("get", nil, 4*time.Millisecond)
	r.Call("mount", fmt.Errorf("%w: host-b", driver.ErrBusyElsewhere), 2*time.Second)
	r.Fenced("v", 2)

	if got := testutil.ToFloat64(r.calls.WithLabelValues("get", "ok")); got != 2 {
		t.Errorf("get ok = %v, want 2", got)
	}
	if got := testutil.ToFloat64(r.calls.WithLabelValues("mount", "busy_elsewhere")); got != 1 {
		t.Errorf("mount busy_elsewhere = %v, want 1", got)
	}
	if got := testutil.ToFloat64(r.backend); got != -1 {
		t.Errorf("backend before any answer = %v, want -1", got)
	}
	r.Backend(true)
	if got := testutil.ToFloat64(r.backend); got != 1 {
		t.Errorf("backend after an answer = %v", got)
	}
	r.Backend(false)
	if got := testutil.ToFloat64(r.backend); got != 0 {
		t.Errorf("backend after a timeout = %v", got)
	}

	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`cdp_calls_total{backend="rbd",op="get",outcome="ok"} 2`,
		`cdp_call_duration_seconds_bucket{backend="rbd",op="mount",le="2.5"} 1`,
		`cdp_call_duration_seconds_bucket{backend="rbd",op="mount",le="1"} 0`,
		`cdp_volumes_mounted{backend="rbd"} 2`,
		`cdp_volume_uses{backend="rbd"} 5`, // c1 three times, c2 and c3 once
		`cdp_repairs_pending{backend="rbd"} 1`,
		`cdp_state_read_errors{backend="rbd"} 0`,
		`cdp_fenced_clients_total{backend="rbd"} 2`,
		`cdp_takeovers_total{backend="rbd"} 1`,
		`cdp_backend_reachable{backend="rbd"} 0`,
		"process_resident_memory_bytes",
	} {
		if !strings.Contains(string(body), want+"\n") && !strings.Contains(string(body), want) {
			t.Errorf("the scrape lacks %q", want)
		}
	}

	states.err = errors.Join(errors.New("state of x is corrupt"), errors.New("state of y is corrupt"))
	resp, err = srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `cdp_state_read_errors{backend="rbd"} 2`) {
		t.Errorf("two unreadable records are not counted:\n%s", body)
	}
}
