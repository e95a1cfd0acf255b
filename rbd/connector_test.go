package rbd

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// scriptedDial fails until up is set, counting attempts.
type scriptedDial struct {
	mu       sync.Mutex
	up       bool
	attempts int
	block    chan struct{} // if set, an attempt waits for it (or for its deadline)
	last     time.Time     // the deadline of the last attempt
}

func (s *scriptedDial) dial(ctx context.Context, cfg Config) (*Cluster, error) {
	s.mu.Lock()
	s.attempts++
	s.last, _ = ctx.Deadline()
	block, up := s.block, s.up
	s.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, &OpError{Op: "connect", What: "client.x", Kind: driver.ErrTimeout, Err: ctx.Err()}
		}
	}
	if !up {
		return nil, errors.New("no monitor answered")
	}
	return newCluster(cfg.withDefaults(), nil), nil
}

func (s *scriptedDial) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts
}

func newTestConnector(s *scriptedDial) (*Connector, *logtest.Hook) {
	log, hook := logtest.NewNullLogger()
	k := NewConnector(Config{User: "docker"}, log)
	k.dial = s.dial
	k.Wait = time.Second
	return k, hook
}

// While Ceph does not answer, calls fail fast saying why, the connector keeps trying in the
// background, and connects once Ceph answers.
func TestConnectorRetriesUntilCephAnswers(t *testing.T) {
	s := &scriptedDial{}
	k, hook := newTestConnector(s)
	defer k.Close()
	k.Start()
	start := time.Now()
	_, err := k.Cluster(context.Background())
	if !errors.Is(err, driver.ErrTimeout) || !strings.Contains(err.Error(), "not reachable yet") ||
		!strings.Contains(err.Error(), "no monitor answered") || !strings.Contains(err.Error(), "client.docker") {
		t.Fatalf("err = %v", err)
	}
	if took := time.Since(start); took > k.Wait+500*time.Millisecond {
		t.Errorf("the call waited %v, more than Wait", took)
	}
	s.mu.Lock()
	s.up = true
	s.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := k.Cluster(context.Background())
		if err == nil && c != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not connected after Ceph came up: %v (%d attempts)", err, s.count())
		}
		time.Sleep(100 * time.Millisecond)
	}
	var warned, connected bool
	for _, e := range hook.AllEntries() {
		warned = warned || (e.Level == logrus.WarnLevel && strings.Contains(e.Message, "not reachable"))
		connected = connected || e.Message == "connected to Ceph"
	}
	if !warned || !connected {
		t.Errorf("logs: warned %v, connected %v", warned, connected)
	}
	n := s.count()
	if _, err := k.Cluster(context.Background()); err != nil || s.count() != n {
		t.Errorf("a connected connector connected again: %v", err)
	}
}

// The first use connects, with the call's deadline; callers at once share one attempt; a call
// waits for it at most Wait.
func TestConnectorConnectsOnFirstUseWithTheCallsDeadline(t *testing.T) {
	s := &scriptedDial{up: true, block: make(chan struct{})}
	k, _ := newTestConnector(s)
	defer k.Close()
	k.Wait = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	want, _ := ctx.Deadline()
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := k.Cluster(ctx); !errors.Is(err, driver.ErrTimeout) || !strings.Contains(err.Error(), "still connecting") {
				t.Errorf("err = %v", err)
			}
		}()
	}
	wg.Wait()
	if n := s.count(); n != 1 {
		t.Errorf("%d attempts for three callers", n)
	}
	if s.last != want {
		t.Errorf("attempt deadline %v, want the call's %v", s.last, want)
	}
	close(s.block)
	if c, err := k.Cluster(ctx); err != nil || c == nil {
		t.Fatalf("after the attempt: %v", err)
	}
}

func TestConnectorClosed(t *testing.T) {
	s := &scriptedDial{up: true, block: make(chan struct{})}
	k, _ := newTestConnector(s)
	k.Start()
	done := make(chan struct{})
	go func() { k.Close(); close(done) }() // ends the attempt in flight
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for a connect that does not end")
	}
	if _, err := k.Cluster(context.Background()); err == nil || !strings.Contains(err.Error(), "stopping") {
		t.Errorf("after Close: %v", err)
	}
	k.Start() // does nothing
	if s.count() != 1 {
		t.Errorf("attempts after Close: %d", s.count())
	}
}

// Lazy forwards every call to the provisioner once connected, and says why when it cannot.
func TestLazyForwards(t *testing.T) {
	f := newFake()
	f.add(Spec{Pool: "volumes", Image: "v"}, 1)
	down := errors.New("Ceph is not reachable yet")
	var up bool
	l := &Lazy{cfg: ProvisionerConfig{Pool: "volumes", Host: "node-1", HostID: idA}, cluster: func(context.Context) (ceph, error) {
		if !up {
			return nil, down
		}
		return f, nil
	}}
	calls := func() []error {
		_, gerr := l.Get(bg, "v")
		_, lerr := l.List(bg)
		_, aerr := l.Attach(bg, "v", driver.AttachRequest{Host: "node-1"})
		_, derr := l.Differences(bg, driver.Volume{}, driver.Options{})
		return []error{
			l.Create(bg, "w", driver.Options{Size: 1}), gerr, lerr, aerr, derr,
			l.RecordClients(bg, "v", driver.Attachment{}, driver.Mapping{ImageSpec: Spec{Pool: "volumes", Image: "v"}}),
			l.Detach(bg, "v", driver.Attachment{}), l.Remove(bg, "w", driver.RemoveDelete),
		}
	}
	for i, err := range calls() {
		if !errors.Is(err, down) {
			t.Errorf("call %d before connecting: %v", i, err)
		}
	}
	if len(l.BackendOptions()) != len(BackendOptions()) || l.RoundSize(3) != 3 {
		t.Error("BackendOptions or RoundSize need a connection")
	}
	up = true
	for i, err := range calls() {
		if err != nil {
			t.Errorf("call %d: %v", i, err)
		}
	}
	if len(f.called("LockHost")) != 1 || len(f.called("Remove")) != 1 {
		t.Errorf("calls %v", f.calls)
	}
}
