// Package etcdtest runs a real etcd server inside a test process (the
// embedded server of go.etcd.io/etcd/server/v3/embed) on ports chosen at
// run time, and a TCP relay in front of it that a test can cut to take
// one client off etcd while the others keep it.
package etcdtest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is a single-member etcd: embedded, or a process of an etcd
// binary (StartBinary).
type Server struct {
	// Endpoint is the client address, host:port.
	Endpoint string
	e        *embed.Etcd
	cmd      *exec.Cmd
	stopOnce sync.Once
}

// StartBinary runs the etcd binary at path (Debian's etcd-server is etcd
// 3.4, the oldest the arbiter supports) with its data in a temporary
// directory, waits until it answers and stops it when the test ends.
func StartBinary(t testing.TB, path string) *Server {
	t.Helper()
	dir := t.TempDir()
	var last error
	for range 5 {
		client, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		peer, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(path, "--name", "etcdtest", "--data-dir", filepath.Join(dir, client),
			"--listen-client-urls", "http://"+client, "--advertise-client-urls", "http://"+client,
			"--listen-peer-urls", "http://"+peer, "--initial-advertise-peer-urls", "http://"+peer,
			"--initial-cluster", "etcdtest=http://"+peer, "--log-level", "error")
		if err := cmd.Start(); err != nil {
			t.Fatalf("etcdtest: starting %s: %v", path, err)
		}
		s := &Server{Endpoint: client, cmd: cmd}
		if last = waitServing(client, 30*time.Second); last == nil {
			t.Cleanup(s.Stop)
			return s
		}
		s.Stop()
	}
	t.Fatalf("etcdtest: %s did not serve: %v", path, last)
	return nil
}

// waitServing waits until an etcd at addr answers its /health endpoint.
func waitServing(addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	hc := &http.Client{Timeout: time.Second}
	for {
		resp, err := hc.Get("http://" + addr + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/health answered %s", resp.Status)
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Start starts an etcd member with its data in a temporary directory and
// stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := StartIn(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// StartIn starts an etcd member with its data in dir. Stop it with Stop.
func StartIn(dir string) (*Server, error) {
	var last error
	// The ports are picked free and then bound by etcd: another process
	// may take one in between, so a few attempts.
	for range 5 {
		client, err := freePort()
		if err != nil {
			return nil, err
		}
		peer, err := freePort()
		if err != nil {
			return nil, err
		}
		cfg := embed.NewConfig()
		cfg.Name = "etcdtest"
		cfg.Dir = dir
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		cu := url.URL{Scheme: "http", Host: client}
		pu := url.URL{Scheme: "http", Host: peer}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
		cfg.InitialCluster = cfg.Name + "=" + pu.String()
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			last = err
			continue
		}
		select {
		case <-e.Server.ReadyNotify():
			return &Server{Endpoint: client, e: e}, nil
		case <-time.After(30 * time.Second):
			e.Close()
			return nil, errors.New("etcdtest: etcd did not become ready within 30s")
		}
	}
	return nil, fmt.Errorf("etcdtest: starting etcd: %w", last)
}

// Stop stops the member.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		if s.e != nil {
			s.e.Close()
		}
		if s.cmd != nil {
			_ = s.cmd.Process.Kill()
			_ = s.cmd.Wait()
		}
	})
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Relay forwards TCP connections to a target. Cut closes every connection
// and refuses new ones (accepted and closed at once) until Restore.
type Relay struct {
	target string
	ln     net.Listener

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// NewRelay listens on a free loopback port and forwards to target. It
// stops when the test ends.
func NewRelay(t testing.TB, target string) *Relay {
	t.Helper()
	r, err := StartRelay(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// StartRelay is NewRelay outside a test. Stop it with Close.
func StartRelay(target string) (*Relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Relay{target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	r.wg.Go(r.accept)
	return r, nil
}

// Addr is the relay's address.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Cut closes every relayed connection and refuses new ones.
func (r *Relay) Cut() {
	r.mu.Lock()
	r.cut = true
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
}

// Restore relays new connections again.
func (r *Relay) Restore() {
	r.mu.Lock()
	r.cut = false
	r.mu.Unlock()
}

// Close stops the relay.
func (r *Relay) Close() {
	r.ln.Close()
	r.Cut()
	r.wg.Wait()
}

func (r *Relay) accept() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		if r.cut {
			r.mu.Unlock()
			c.Close()
			continue
		}
		r.mu.Unlock()
		r.wg.Go(func() { r.pipe(c) })
	}
}

func (r *Relay) pipe(c net.Conn) {
	up, err := net.DialTimeout("tcp", r.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	r.mu.Lock()
	if r.cut {
		r.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	r.conns[c], r.conns[up] = struct{}{}, struct{}{}
	r.mu.Unlock()
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go cp(up, c)
	go cp(c, up)
	<-done
	c.Close()
	up.Close()
	<-done
	r.mu.Lock()
	delete(r.conns, c)
	delete(r.conns, up)
	r.mu.Unlock()
}
