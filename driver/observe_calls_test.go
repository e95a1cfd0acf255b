package driver

import (
	"fmt"
	"testing"
)

// Every backend call the driver makes through its Observer is reported, answered or not:
// Create (and the comparison of an idempotent Create), List, Remove.
func TestObserverSeesEveryBackendCall(t *testing.T) {
	obs := &recordingObserver{}
	e := newTestDriver(t, func(c *Config) { c.Observer = obs })
	step := func(what string, err error, wantUp bool) {
		t.Helper()
		up, n := obs.lastBackend()
		if n == 0 || up != wantUp {
			t.Errorf("%s (err %v): backend reported answered=%v (%d reports), want %v", what, err, up, n, wantUp)
		}
		obs.mu.Lock()
		obs.backend = nil
		obs.mu.Unlock()
	}
	err := e.d.Create(bg, "v", map[string]string{"size": "1G", "pool": "volumes"})
	if err != nil {
		t.Fatal(err)
	}
	step("Create", err, true)
	err = e.d.Create(bg, "v", map[string]string{"size": "1G", "pool": "volumes"}) // compatible: accepted
	if err != nil {
		t.Fatal(err)
	}
	step("Create again", err, true)
	_, err = e.d.Volumes(bg)
	step("List", err, true)
	if got := e.d.RoundSize(1000); got != 1000 {
		t.Errorf("RoundSize through the observer: %d", got)
	}
	e.prov.failNext("Remove", fmt.Errorf("%w: Ceph did not answer", ErrTimeout))
	err = e.d.Remove(bg, "v")
	assertErr(t, err, ErrTimeout, "remove volume v")
	step("Remove unanswered", err, false)
	err = e.d.Remove(bg, "v")
	if err != nil {
		t.Fatal(err)
	}
	step("Remove", err, true)
}
