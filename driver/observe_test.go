package driver

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
)

// recordingObserver records what the driver and its adapter report.
type recordingObserver struct {
	mu      sync.Mutex
	calls   []string // "op outcome"
	backend []bool
	fenced  map[string]int
}

func (o *recordingObserver) Call(op string, err error, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	outcome := "ok"
	if err != nil {
		outcome = "failed"
	}
	o.calls = append(o.calls, op+" "+outcome)
}

func (o *recordingObserver) Backend(answered bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.backend = append(o.backend, answered)
}

func (o *recordingObserver) Fenced(volume string, clients int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.fenced == nil {
		o.fenced = map[string]int{}
	}
	o.fenced[volume] += clients
}

func (o *recordingObserver) lastBackend() (bool, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.backend) == 0 {
		return false, 0
	}
	return o.backend[len(o.backend)-1], len(o.backend)
}

// The driver tells its Observer whether the backend answers (a refusal is an answer, a timeout is
// not) and of every takeover's fencing.
func TestObserverSeesBackendAnswersAndFencing(t *testing.T) {
	obs := &recordingObserver{}
	e := newTestDriver(t, func(c *Config) { c.Observer = obs; c.LockBreak = true })
	e.prov.add("v", 1<<30, "ext4")

	if _, err := e.d.Get(bg, "v"); err != nil {
		t.Fatal(err)
	}
	if up, n := obs.lastBackend(); !up || n != 1 {
		t.Fatalf("after a Get the backend answered: reported %v (%d reports)", up, n)
	}
	e.prov.failNext("Get", fmt.Errorf("%w: Ceph did not answer", ErrTimeout))
	_, _ = e.d.Get(bg, "v") // answered from memory, but the backend did not answer
	if up, _ := obs.lastBackend(); up {
		t.Fatal("a Get the backend did not answer was reported as answered")
	}
	if _, err := e.d.Get(bg, "missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a missing volume: %v", err)
	}
	if up, _ := obs.lastBackend(); !up {
		t.Fatal("a definite not-found was reported as no answer")
	}

	e.prov.setHolder("v", "host-dead")
	e.mustMount("v", "c1")
	if obs.fenced["v"] != 1 {
		t.Fatalf("fencing reported %v, want one client of v", obs.fenced)
	}
	e.mustUnmount("v", "c1")
}

// The adapter reports every call with its outcome.
func TestPluginReportsEveryCall(t *testing.T) {
	obs := &recordingObserver{}
	e := newTestDriver(t)
	p := &Plugin{D: e.d, Timeout: time.Second, Log: e.cfg.Log, Observer: obs}
	e.prov.add("v", 1<<30, "ext4")
	if _, err := p.Get(&volume.GetRequest{Name: "v"}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Get(&volume.GetRequest{Name: "../x"}); err == nil {
		t.Fatal("a bad name was accepted")
	}
	if _, err := p.List(); err != nil {
		t.Fatal(err)
	}
	want := []string{"get ok", "get failed", "list ok"}
	if fmt.Sprint(obs.calls) != fmt.Sprint(want) {
		t.Fatalf("calls reported %q, want %q", obs.calls, want)
	}
}
