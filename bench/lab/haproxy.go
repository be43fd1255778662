package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// HAProxy is an haproxy process relaying TCP (mode tcp: gRPC passes
// through untouched) to one backend: the overhead scenario's reference
// point for what a plain L4 proxy costs.
type HAProxy struct {
	Addr string
	cmd  *exec.Cmd
	done chan struct{}
	dir  string
}

// ErrNoHAProxy is returned when no haproxy binary is on PATH.
var ErrNoHAProxy = errors.New("haproxy not found on PATH")

// StartHAProxy runs haproxy in the foreground in front of backend.
func StartHAProxy(ctx context.Context, backend string) (*HAProxy, error) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		return nil, ErrNoHAProxy
	}
	// Reserve a port, then hand it to haproxy (it must bind it itself).
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := lis.Addr().String()
	lis.Close()
	dir, err := os.MkdirTemp("", "bench-haproxy-")
	if err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`global
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 5m
    timeout server 5m
frontend bench
    bind %s
    default_backend milvus
backend milvus
    server m %s
`, addr, backend)
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	cmd := exec.Command(bin, "-db", "-f", path) // -db: foreground, no daemon
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting haproxy: %w", err)
	}
	h := &HAProxy{Addr: addr, cmd: cmd, done: make(chan struct{}), dir: dir}
	go func() { _ = cmd.Wait(); close(h.done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return h, nil
		}
		select {
		case <-h.done:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("haproxy exited at start (see its output above)")
		case <-ctx.Done():
			h.Stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			h.Stop()
			return nil, fmt.Errorf("haproxy did not listen on %s", addr)
		}
	}
}

// Stop kills haproxy (the one process this package started) and waits.
func (h *HAProxy) Stop() {
	_ = h.cmd.Process.Kill()
	<-h.done
	os.RemoveAll(h.dir)
}
