package testutil

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a testing.TB whose Fatalf records the message and stops the
// calling goroutine, as testing.T does.
type recorder struct {
	testing.TB
	mu  sync.Mutex
	msg string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.msg = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}

func run(f func(tb testing.TB)) string {
	r := &recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.msg
}

func TestEventually(t *testing.T) {
	tests := []struct {
		name    string
		call    func(tb testing.TB)
		wantMsg string // "" means no failure
	}{
		{
			name: "holds at once",
			call: func(tb testing.TB) { Eventually(tb, time.Second, "x", func() bool { return true }) },
		},
		{
			name: "holds after a few polls",
			call: func(tb testing.TB) {
				n := 0
				Eventually(tb, 10*time.Second, "x", func() bool { n++; return n > 3 })
			},
		},
		{
			name:    "never holds",
			call:    func(tb testing.TB) { Eventually(tb, 30*time.Millisecond, "the thing", func() bool { return false }) },
			wantMsg: "timed out after 30ms waiting for the thing",
		},
		{
			name: "never holds, with state",
			call: func(tb testing.TB) {
				EventuallyOr(tb, 30*time.Millisecond, "the thing", func() bool { return false }, func() string { return "state: 7" })
			},
			wantMsg: "timed out after 30ms waiting for the thing:\nstate: 7",
		},
		{
			name: "never holds, explained",
			call: func(tb testing.TB) {
				n := 0
				EventuallyWhy(tb, 30*time.Millisecond, "the thing", func() (bool, string) { n++; return false, fmt.Sprint("try ", n) })
			},
			wantMsg: "timed out after 30ms waiting for the thing:\nlast: try ",
		},
		{
			name: "explained, holds after a few polls",
			call: func(tb testing.TB) {
				n := 0
				EventuallyWhy(tb, 10*time.Second, "x", func() (bool, string) { n++; return n > 3, "" })
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := run(tc.call)
			if strings.HasSuffix(tc.wantMsg, "try ") && strings.HasPrefix(got, tc.wantMsg) {
				got = tc.wantMsg // the count of tries depends on the machine's speed
			}
			if got != tc.wantMsg {
				t.Fatalf("failure message %q, want %q", got, tc.wantMsg)
			}
		})
	}
}

func TestEventuallyReportsElapsed(t *testing.T) {
	start := time.Now()
	took := Eventually(t, 10*time.Second, "50ms passed", func() bool { return time.Since(start) >= 50*time.Millisecond })
	if took < 50*time.Millisecond {
		t.Fatalf("took %s, want at least 50ms", took)
	}
}

// counter publishes ints: each publish closes the previous Changed channel.
type counter struct {
	mu sync.Mutex
	n  int
	ch chan struct{}
}

func newCounter() *counter { return &counter{ch: make(chan struct{})} }

func (c *counter) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ch
}

func (c *counter) Snapshot() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func (c *counter) publish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	close(c.ch)
	c.ch = make(chan struct{})
}

func TestWaitPublished(t *testing.T) {
	t.Run("woken by publications", func(t *testing.T) {
		c := newCounter()
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
					c.publish()
				}
			}
		}()
		if got := WaitPublished[int](t, c, 10*time.Second, "5", func(n int) bool { return n >= 5 }, nil); got < 5 {
			t.Fatalf("returned snapshot %d, want one that satisfied the condition", got)
		}
	})
	t.Run("never holds, with state", func(t *testing.T) {
		c := newCounter()
		got := run(func(tb testing.TB) {
			WaitPublished[int](tb, c, 30*time.Millisecond, "the thing", func(n int) bool { return n > 0 }, func(n int) string { return fmt.Sprint("n=", n) })
		})
		if want := "timed out after 30ms waiting for the thing:\nn=0"; got != want {
			t.Fatalf("failure message %q, want %q", got, want)
		}
	})
}
