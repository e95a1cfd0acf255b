package cinder

import (
	"testing"
	"time"
)

func TestBackoffPollsOftenForASecondThenGrowsToPoll(t *testing.T) {
	p := New(Config{})
	next := p.backoff()
	var want []time.Duration
	for i := 0; i < 20; i++ { // the first second
		want = append(want, 50)
	}
	want = append(want, 100, 200, 400, 500, 500)
	for i, w := range want {
		if got := next(); got != w*time.Millisecond {
			t.Fatalf("wait %d: got %v, want %v", i, got, w*time.Millisecond)
		}
	}
	p = New(Config{Poll: 10 * time.Millisecond})
	next = p.backoff()
	for i := 0; i < 3; i++ {
		if got := next(); got != 10*time.Millisecond {
			t.Fatalf("with Poll 10ms, wait %d: got %v", i, got)
		}
	}
}
