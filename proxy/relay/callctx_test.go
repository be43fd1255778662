package relay

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestCallCtx: the lazily made call context behaves as context.WithTimeout
// (or WithCancel) of its parent would, whether or not anything waited on
// Done before it ended.
func TestCallCtx(t *testing.T) {
	type key struct{}
	closed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		case <-time.After(5 * time.Second):
			return false
		}
	}
	cases := []struct {
		name    string
		timeout time.Duration // 0: none
		early   bool          // call Done before the end
		end     func(c *callCtx, parentCancel context.CancelFunc)
		want    error
	}{
		{"cancel", 0, false, func(c *callCtx, _ context.CancelFunc) { c.cancel() }, context.Canceled},
		{"cancel after Done", 0, true, func(c *callCtx, _ context.CancelFunc) { c.cancel() }, context.Canceled},
		{"parent canceled", 0, false, func(_ *callCtx, p context.CancelFunc) { p() }, context.Canceled},
		{"parent canceled after Done", 0, true, func(_ *callCtx, p context.CancelFunc) { p() }, context.Canceled},
		{"deadline", time.Millisecond, false, func(*callCtx, context.CancelFunc) { time.Sleep(5 * time.Millisecond) }, context.DeadlineExceeded},
		{"deadline after Done", time.Millisecond, true, func(c *callCtx, _ context.CancelFunc) { <-c.Done() }, context.DeadlineExceeded},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			parent, pcancel := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
			defer pcancel()
			var c callCtx
			c.init(parent, tc.timeout, tc.timeout > 0)
			defer c.cancel()
			if dl, ok := c.Deadline(); ok != (tc.timeout > 0) || (ok && time.Until(dl) > tc.timeout) {
				t.Errorf("Deadline() = %v, %v", dl, ok)
			}
			if c.Value(key{}) != "v" {
				t.Errorf("Value lost the parent's value")
			}
			if tc.timeout == 0 && c.Err() != nil {
				t.Fatalf("Err() = %v before the end", c.Err())
			}
			var done <-chan struct{}
			var child context.Context
			if tc.early {
				done = c.Done()
				var cancel context.CancelFunc
				child, cancel = context.WithCancel(&c)
				defer cancel()
			}
			tc.end(&c, pcancel)
			if err := c.Err(); !errors.Is(err, tc.want) {
				t.Errorf("Err() = %v, want %v", err, tc.want)
			}
			if done == nil {
				done = c.Done()
			}
			if !closed(done) {
				t.Fatalf("Done not closed after the end")
			}
			if child != nil && !closed(child.Done()) {
				t.Fatalf("a context derived before the end did not end with it")
			}
			if err := c.Err(); !errors.Is(err, tc.want) {
				t.Errorf("Err() after Done = %v, want %v", err, tc.want)
			}
		})
	}
}

// BenchmarkCallCtx: a call's context made and ended without anyone
// waiting on it (the fast path), against context.WithTimeout.
func BenchmarkCallCtx(b *testing.B) {
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.Run("callCtx", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			var c callCtx
			c.init(parent, 10*time.Second, true)
			_, _ = c.Deadline()
			_ = c.Err()
			c.cancel()
		}
	})
	b.Run("WithTimeout", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			ctx, cancel := context.WithTimeout(parent, 10*time.Second)
			_, _ = ctx.Deadline()
			_ = ctx.Err()
			cancel()
		}
	})
}
