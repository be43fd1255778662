package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes buffer safe for one writer and one reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

var demoAdminRE = regexp.MustCompile(`admin on http://(\S+)`)

// TestDemoBecomesReady: demo with 0 and 2 alternatives comes up with a
// leader (/readyz 200) and exits 0 when interrupted.
func TestDemoBecomesReady(t *testing.T) {
	for _, alts := range []int{0, 2} {
		t.Run(fmt.Sprintf("alternatives=%d", alts), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var stdout syncBuffer
			done := make(chan int, 1)
			go func() {
				done <- runDemo(ctx, []string{"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
					"--alternatives", fmt.Sprint(alts), "--log-level", "error"}, &stdout, io.Discard)
			}()
			deadline := time.Now().Add(20 * time.Second)
			ready := false
			for time.Now().Before(deadline) && !ready {
				if m := demoAdminRE.FindStringSubmatch(stdout.String()); m != nil {
					if resp, err := http.Get("http://" + m[1] + "/readyz"); err == nil {
						ready = resp.StatusCode == http.StatusOK
						resp.Body.Close()
					}
				}
				time.Sleep(50 * time.Millisecond)
			}
			if !ready {
				t.Fatalf("demo never became ready; stdout:\n%s", stdout.String())
			}
			// The hints name the addresses the proxy got, not port 0.
			out := stdout.String()
			admin := demoAdminRE.FindStringSubmatch(out)[1]
			if !strings.Contains(out, "status page: http://"+admin+"/ui") || strings.Contains(out, ":0") {
				t.Errorf("demo's hints do not name the address it got (%s):\n%s", admin, out)
			}
			cancel()
			select {
			case code := <-done:
				if code != 0 {
					t.Fatalf("demo exited %d after interrupt, want 0", code)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("demo did not stop after interrupt")
			}
		})
	}
}
