// Package testutil holds helpers shared by the project's tests. It is for
// tests only: production code must not import it.
package testutil

import (
	"testing"
	"time"
)

// pollEvery is how often Eventually re-checks its condition: short enough
// not to slow tests down, long enough not to busy-spin on a loaded machine.
const pollEvery = 10 * time.Millisecond

// Eventually polls cond until it holds and returns how long that took, or
// fails the test naming what was awaited once timeout has passed.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	return EventuallyOr(t, timeout, what, cond, nil)
}

// EventuallyOr is Eventually that, when it times out, adds state() to the
// failure message so the log shows what was there instead. A nil state
// adds nothing.
func EventuallyOr(t testing.TB, timeout time.Duration, what string, cond func() bool, state func() string) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			if state != nil {
				t.Fatalf("timed out after %s waiting for %s:\n%s", timeout, what, state())
			}
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(pollEvery)
	}
	return time.Since(start)
}

// EventuallyWhy is Eventually for a condition that explains itself: when
// it times out, the failure message carries cond's last explanation of why
// it did not hold.
func EventuallyWhy(t testing.TB, timeout time.Duration, what string, cond func() (ok bool, why string)) time.Duration {
	t.Helper()
	var last string
	return EventuallyOr(t, timeout, what, func() bool {
		ok, why := cond()
		last = why
		return ok
	}, func() string { return "last: " + last })
}

// Publisher is what publishes immutable snapshots and signals each new one
// by closing the channel Changed returned before it: topology.Manager is
// one. It is an interface (and WaitPublished generic) so that this package
// does not import topology, whose own in-package tests use it too.
type Publisher[S any] interface {
	Changed() <-chan struct{}
	Snapshot() S
}

// WaitPublished waits until cond holds on a snapshot p published and
// returns that snapshot, or fails the test once timeout has passed, with
// state() (when not nil) in the message to show what was there instead.
// It reads Changed before Snapshot, so a snapshot published between the
// two wakes it rather than being missed. The timeout only bounds a broken
// test; it is not a speed assertion.
func WaitPublished[S any](t testing.TB, p Publisher[S], timeout time.Duration, what string, cond func(S) bool, state func(S) string) S {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		ch := p.Changed()
		s := p.Snapshot()
		if cond(s) {
			return s
		}
		select {
		case <-ch:
		case <-deadline.C:
			if state != nil {
				t.Fatalf("timed out after %s waiting for %s:\n%s", timeout, what, state(s))
			}
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
	}
}
