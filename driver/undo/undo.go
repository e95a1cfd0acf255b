// Package undo is the one way a multi-step operation in this plugin takes back what it did when a
// later step fails: the driver's mount transaction, an rbd create or clone, a fuse map, a Cinder
// attachment.
//
// Each step that changed something pushes a named undo function. On failure the caller runs
// Rollback, which undoes the steps in reverse, on a context of its own: the caller's deadline has
// often passed by then (that is why the call failed), yet the undo must still be bounded. The
// bound is the cleanup deadline carried by the context (WithCleanup, set once from the plugin's
// settings), or DefaultCleanup.
//
// Rollback stops at the first undo that fails: the steps pushed before it stay, because an
// earlier step is what makes a later one safe (the host's claim on a volume must outlive its
// mapping). The error names the step; callers log or return it, never drop it.
package undo

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// DefaultCleanup bounds a rollback when the context carries no cleanup deadline.
const DefaultCleanup = 30 * time.Second

type cleanupKey struct{}

// WithCleanup returns ctx carrying d as the bound of every rollback (and other cleanup) started
// from it or from a context derived from it.
func WithCleanup(ctx context.Context, d time.Duration) context.Context {
	if d <= 0 {
		return ctx
	}
	return context.WithValue(ctx, cleanupKey{}, d)
}

// Cleanup is the cleanup bound ctx carries, or DefaultCleanup.
func Cleanup(ctx context.Context) time.Duration {
	if d, ok := ctx.Value(cleanupKey{}).(time.Duration); ok && d > 0 {
		return d
	}
	return DefaultCleanup
}

// Context returns a context for cleanup work after ctx may have ended: it keeps ctx's values
// (logging fields, the cleanup bound) but not its cancellation, and ends after Cleanup(ctx).
func Context(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), Cleanup(ctx))
}

// Step is one named undo function.
type Step struct {
	Name string
	Fn   func(context.Context) error
}

// Stack collects undo steps. Its zero value is ready to use; it is not safe for concurrent use.
type Stack struct {
	steps []Step
}

// Push records the undo of a step that has just succeeded.
func (s *Stack) Push(name string, fn func(context.Context) error) {
	s.steps = append(s.steps, Step{Name: name, Fn: fn})
}

// Len is the number of steps pending.
func (s *Stack) Len() int { return len(s.steps) }

// Names lists the pending steps, oldest first.
func (s *Stack) Names() []string {
	out := make([]string, len(s.steps))
	for i, st := range s.steps {
		out[i] = st.Name
	}
	return out
}

// Release forgets every step: the operation succeeded and keeps what it did.
func (s *Stack) Release() { s.steps = nil }

// Error is a failed undo: the step that failed and the steps left in place because of it.
type Error struct {
	Step string   // the undo that failed
	Left []string // steps not undone (Step and those pushed before it), oldest first
	Err  error
}

func (e *Error) Error() string {
	return fmt.Sprintf("undo %s: %v", e.Step, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Rollback undoes the pending steps in reverse on a context from Context(ctx) and stops at the
// first that fails, returning an *Error. Steps undone are removed; the ones left stay in the
// stack, so a caller may retry Rollback later.
func (s *Stack) Rollback(ctx context.Context) error {
	if len(s.steps) == 0 {
		return nil
	}
	cctx, cancel := Context(ctx)
	defer cancel()
	return s.rollback(cctx)
}

// RollbackWithin is Rollback on a context the caller already bounded (no new deadline is set).
func (s *Stack) RollbackWithin(ctx context.Context) error {
	return s.rollback(ctx)
}

func (s *Stack) rollback(ctx context.Context) error {
	for i := len(s.steps) - 1; i >= 0; i-- {
		st := s.steps[i]
		if err := st.Fn(ctx); err != nil {
			if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
				err = fmt.Errorf("%w (cleanup deadline: %v)", err, ctx.Err())
			}
			s.steps = s.steps[:i+1]
			return &Error{Step: st.Name, Left: s.Names(), Err: err}
		}
	}
	s.steps = nil
	return nil
}

// OnError runs Rollback when *errp is non-nil, for use in a defer:
//
//	var tx undo.Stack
//	defer tx.OnError(ctx, &err, log)
//
// A failed undo is joined to *errp, so the caller's error says both what failed and what was
// left behind; report, if not nil, is called with it first (to log it).
func (s *Stack) OnError(ctx context.Context, errp *error, report func(error)) {
	if *errp == nil {
		s.Release()
		return
	}
	if uerr := s.Rollback(ctx); uerr != nil {
		if report != nil {
			report(uerr)
		}
		*errp = fmt.Errorf("%w; undoing it also failed: %v", *errp, uerr)
	}
}
