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
