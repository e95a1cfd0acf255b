package undo

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRollbackReverseOrder(t *testing.T) {
	var got []string
	var s Stack
	for _, n := range []string{"a", "b", "c"} {
		s.Push(n, func(context.Context) error { got = append(got, n); return nil })
	}
	if err := s.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	if want := []string{"c", "b", "a"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("undo order %v, want %v", got, want)
	}
	if s.Len() != 0 {
		t.Fatalf("%d steps left after a full rollback", s.Len())
	}
}

func TestRollbackStopsAtFirstFailureAndKeepsEarlierSteps(t *testing.T) {
	var got []string
	var s Stack
	s.Push("claim", func(context.Context) error { got = append(got, "claim"); return nil })
	s.Push("map", func(context.Context) error { got = append(got, "map"); return errors.New("busy") })
	s.Push("mount", func(context.Context) error { got = append(got, "mount"); return nil })
	err := s.Rollback(context.Background())
	var ue *Error
	if !errors.As(err, &ue) {
		t.Fatalf("Rollback = %v, want *Error", err)
	}
	if ue.Step != "map" || !reflect.DeepEqual(ue.Left, []string{"claim", "map"}) {
		t.Fatalf("failed step %q left %v, want map and [claim map]", ue.Step, ue.Left)
	}
	if !reflect.DeepEqual(got, []string{"mount", "map"}) {
		t.Fatalf("ran %v: the claim must stay while the map is not undone", got)
	}
	// A retry resumes where it stopped.
	s.steps[1].Fn = func(context.Context) error { got = append(got, "map"); return nil }
	if err := s.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []string{"mount", "map", "map", "claim"}) {
		t.Fatalf("retry ran %v", got)
	}
}

func TestRollbackOutlivesTheCallersDeadlineButIsBounded(t *testing.T) {
	ctx, cancel := context.WithCancel(WithCleanup(context.Background(), 50*time.Millisecond))
	cancel() // the call's own deadline has passed
	var s Stack
	var sawLive bool
	s.Push("slow", func(c context.Context) error {
		sawLive = c.Err() == nil
		<-c.Done()
		return c.Err()
	})
	start := time.Now()
	err := s.Rollback(ctx)
	if !sawLive {
		t.Fatal("the undo ran on the caller's ended context")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Rollback = %v, want the cleanup deadline", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("rollback took %v with a 50ms cleanup bound", d)
	}
}

func TestCleanupDefault(t *testing.T) {
	if Cleanup(context.Background()) != DefaultCleanup {
		t.Fatal("no bound in ctx must give DefaultCleanup")
	}
	if Cleanup(WithCleanup(context.Background(), -1)) != DefaultCleanup {
		t.Fatal("a non-positive bound must be ignored")
	}
	if Cleanup(WithCleanup(context.Background(), time.Second)) != time.Second {
		t.Fatal("the bound set is not the one read")
	}
}

func TestOnError(t *testing.T) {
	var s Stack
	ran := false
	s.Push("x", func(context.Context) error { ran = true; return nil })
	var err error
	s.OnError(context.Background(), &err, nil)
	if ran || s.Len() != 0 {
		t.Fatal("success must release the steps without running them")
	}

	s.Push("detach", func(context.Context) error { return errors.New("cinder down") })
	err = errors.New("map failed")
	var reported error
	s.OnError(context.Background(), &err, func(e error) { reported = e })
	if reported == nil || !strings.Contains(err.Error(), "map failed") || !strings.Contains(err.Error(), "undo detach: cinder down") {
		t.Fatalf("err = %v, reported = %v", err, reported)
	}
}
