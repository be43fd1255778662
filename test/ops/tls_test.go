package ops

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus/client/v2/entity"
	"github.com/milvus-io/milvus/client/v2/milvusclient"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/app"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/config"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/testenv"
)

// pki is a CA and the certificates the TLS tests use, written as PEM files.
type pki struct {
	ca                    *x509.Certificate
	caKey                 *ecdsa.PrivateKey
	caFile                string
	serverCert, serverKey string // 127.0.0.1 and localhost
	clusterCert           string // only the name milvus-a.internal (no IP)
	clusterKey            string
	clientCert, clientKey string // client auth, CN ops-client
	otherCAFile           string // a CA that signed none of these
	otherClientCert       string // client cert signed by the other CA
	otherClientKey        string
}

func newPKI(t *testing.T, dir string) *pki {
	t.Helper()
	p := &pki{}
	p.ca, p.caKey, p.caFile = makeCA(t, dir, "ops-ca")
	p.serverCert, p.serverKey = issue(t, dir, "server", p.ca, p.caKey, func(c *x509.Certificate) {
		c.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		c.DNSNames = []string{"localhost"}
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	})
	p.clusterCert, p.clusterKey = issue(t, dir, "cluster", p.ca, p.caKey, func(c *x509.Certificate) {
		c.DNSNames = []string{"milvus-a.internal"}
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	})
	p.clientCert, p.clientKey = issue(t, dir, "client", p.ca, p.caKey, func(c *x509.Certificate) {
		c.Subject.CommonName = "ops-client"
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	})
	other, otherKey, otherFile := makeCA(t, dir, "other-ca")
	p.otherCAFile = otherFile
	p.otherClientCert, p.otherClientKey = issue(t, dir, "other-client", other, otherKey, func(c *x509.Certificate) {
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	})
	return p
}

func nextSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(err)
	}
	return n
}

func makeCA(t *testing.T, dir, name string) (*x509.Certificate, *ecdsa.PrivateKey, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, name+".pem")
	writePEM(t, file, "CERTIFICATE", der)
	return cert, key, file
}

func issue(t *testing.T, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, tune func(*x509.Certificate)) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	tune(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile
}

func writePEM(t *testing.T, file, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func pool(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		t.Fatalf("%s: no certificate", file)
	}
	return p
}

func keyPair(t *testing.T, cert, key string) tls.Certificate {
	t.Helper()
	kp, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// tlsCall dials addr with tc (nil: plaintext) and makes one Connect and
// one ShowCollections, both forwarded to the leader.
func tlsCall(addr string, tc *tls.Config) error {
	creds := insecure.NewCredentials()
	if tc != nil {
		creds = credentials.NewTLS(tc)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := milvuspb.NewMilvusServiceClient(conn)
	if _, err := c.Connect(ctx, &milvuspb.ConnectRequest{}); err != nil {
		return err
	}
	resp, err := c.ShowCollections(ctx, &milvuspb.ShowCollectionsRequest{})
	if err != nil {
		return err
	}
	if resp.GetStatus().GetCode() != 0 {
		return errors.New(resp.GetStatus().GetReason())
	}
	return nil
}

// TestTLSClientToProxy: the proxy serves gRPC with tls.cert_file/key_file;
// a client trusting the CA gets through, one trusting another CA fails the
// handshake with a certificate error, a plaintext client fails. With
// client_ca_file (mutual TLS) a client must present a certificate the CA
// signed.
func TestTLSClientToProxy(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	sims := testenv.StartSims(t, testenv.Options{Clusters: 1})
	cfgFor := func(mutual bool) *config.Config {
		cfg := config.Default()
		cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
		cfg.Discovery = config.DiscoveryStatic
		cfg.Clusters = []config.Cluster{{ID: "a", URI: sims[0].Addr(), Role: config.RoleLeader}}
		cfg.TLS = config.ServerTLS{CertFile: p.serverCert, KeyFile: p.serverKey}
		if mutual {
			cfg.TLS.ClientCAFile = p.caFile
		}
		return cfg
	}

	t.Run("server TLS", func(t *testing.T) {
		a := testenv.StartApp(t, cfgFor(false), app.Options{})
		testenv.WaitReady(t, a.AdminAddr(), 0)
		if err := tlsCall(a.Addr(), &tls.Config{RootCAs: pool(t, p.caFile)}); err != nil {
			t.Fatalf("client trusting the CA: %v", err)
		}
		// The Go SDK, as users connect it.
		c := testenv.Connect(t, a.Addr(), &milvusclient.ClientConfig{DialOptions: []grpc.DialOption{
			grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool(t, p.caFile)})),
		}})
		if _, err := c.ListCollections(context.Background(), milvusclient.NewListCollectionOption()); err != nil {
			t.Fatalf("Go SDK over TLS: %v", err)
		}
		err := tlsCall(a.Addr(), &tls.Config{RootCAs: pool(t, p.otherCAFile)})
		if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
			t.Fatalf("client trusting another CA: %v, want a handshake error naming the unknown authority", err)
		}
		if err := tlsCall(a.Addr(), nil); err == nil {
			t.Fatalf("a plaintext client got through a TLS listener")
		}
	})

	t.Run("mutual TLS", func(t *testing.T) {
		a := testenv.StartApp(t, cfgFor(true), app.Options{})
		testenv.WaitReady(t, a.AdminAddr(), 0)
		good := &tls.Config{RootCAs: pool(t, p.caFile), Certificates: []tls.Certificate{keyPair(t, p.clientCert, p.clientKey)}}
		if err := tlsCall(a.Addr(), good); err != nil {
			t.Fatalf("client with a certificate from the CA: %v", err)
		}
		// Under TLS 1.3 the server refuses a missing certificate after the
		// client's side of the handshake is done: the client reads either
		// the alert ("certificate required") or a closed connection.
		if err := tlsCall(a.Addr(), &tls.Config{RootCAs: pool(t, p.caFile)}); err == nil {
			t.Fatalf("client without a certificate got through mutual TLS")
		}
		// Present the foreign certificate even though the proxy asks for
		// ones from its CA (a client picking from Certificates would send
		// none, which the case above covers).
		otherKP := keyPair(t, p.otherClientCert, p.otherClientKey)
		foreign := &tls.Config{RootCAs: pool(t, p.caFile), GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &otherKP, nil
		}}
		if err := tlsCall(a.Addr(), foreign); err == nil {
			t.Fatalf("client with a certificate from another CA got through mutual TLS")
		}
	})
}

// tlsRelay terminates TLS in front of a plaintext backend (the simulator
// has no TLS of its own) and remembers the client certificates it saw.
type tlsRelay struct {
	addr string
	mu   sync.Mutex
	cns  []string // common names of the client certificates presented
}

func startTLSRelay(t *testing.T, backend string, cfg *tls.Config) *tlsRelay {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := &tlsRelay{addr: lis.Addr().String()}
	var wg sync.WaitGroup
	var conns sync.Map
	t.Cleanup(func() {
		lis.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			conns.Store(c, true)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				defer conns.Delete(c)
				tc := c.(*tls.Conn)
				if err := tc.Handshake(); err != nil {
					return
				}
				if pcs := tc.ConnectionState().PeerCertificates; len(pcs) > 0 {
					r.mu.Lock()
					r.cns = append(r.cns, pcs[0].Subject.CommonName)
					r.mu.Unlock()
				}
				b, err := net.Dial("tcp", backend)
				if err != nil {
					return
				}
				conns.Store(b, true)
				defer conns.Delete(b)
				defer b.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(b, tc); done <- struct{}{} }()
				go func() { _, _ = io.Copy(tc, b); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	return r
}

func (r *tlsRelay) clientCNs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.cns...)
}

// TestTLSProxyToCluster: the proxy reaches a cluster over mutual TLS with
// the cluster's ca_file, its own cert_file/key_file and server_name (the
// cluster's certificate names only milvus-a.internal, not the address
// dialled). Data flows, and the cluster saw the proxy's client
// certificate. With the wrong CA, or the wrong server_name, the cluster is
// reported unhealthy with a reason naming the certificate problem, and
// /readyz says why.
func TestTLSProxyToCluster(t *testing.T) {
	dir := t.TempDir()
	p := newPKI(t, dir)
	s := testenv.StartSims(t, testenv.Options{Clusters: 1})[0]
	relay := startTLSRelay(t, s.Addr(), &tls.Config{
		Certificates: []tls.Certificate{keyPair(t, p.clusterCert, p.clusterKey)},
		ClientCAs:    pool(t, p.caFile),
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2"}, // gRPC clients insist on ALPN h2
	})
	cfgFor := func(ctls config.ClusterTLS) *config.Config {
		cfg := config.Default()
		cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
		cfg.Discovery = config.DiscoveryStatic
		cfg.Health.ProbeInterval = config.Duration(50 * time.Millisecond)
		cfg.Clusters = []config.Cluster{{ID: "a", URI: relay.addr, Role: config.RoleLeader, TLS: ctls}}
		return cfg
	}
	good := config.ClusterTLS{CAFile: p.caFile, CertFile: p.clientCert, KeyFile: p.clientKey, ServerName: "milvus-a.internal"}

	t.Run("mutual TLS to the cluster", func(t *testing.T) {
		a := testenv.StartApp(t, cfgFor(good), app.Options{})
		testenv.WaitReady(t, a.AdminAddr(), 0)
		c := testenv.Connect(t, a.Addr(), nil)
		testenv.MakeCollection(t, c, "tls")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := testenv.Insert(ctx, c, "tls", 1, 2); err != nil {
			t.Fatal(err)
		}
		if err := testenv.Search(ctx, c, "tls", 1, entity.ClStrong); err != nil {
			t.Fatalf("search over cluster TLS: %v", err)
		}
		cns := relay.clientCNs()
		if len(cns) == 0 {
			t.Fatalf("the cluster saw no TLS connection")
		}
		for _, cn := range cns {
			if cn != "ops-client" {
				t.Fatalf("the cluster saw client certificates %v, want only the proxy's ops-client", cns)
			}
		}
	})

	bad := []struct {
		name   string
		tls    config.ClusterTLS
		reason string
	}{
		{"wrong CA", config.ClusterTLS{CAFile: p.otherCAFile, CertFile: p.clientCert, KeyFile: p.clientKey, ServerName: "milvus-a.internal"}, "certificate signed by unknown authority"},
		{"wrong server name", config.ClusterTLS{CAFile: p.caFile, CertFile: p.clientCert, KeyFile: p.clientKey}, "cannot validate certificate for 127.0.0.1"},
		// Under TLS 1.3 the cluster refuses a missing client certificate
		// after the proxy's side of the handshake is done, so the proxy
		// reads either the alert or a broken connection: only "refused".
		{"no client certificate", config.ClusterTLS{CAFile: p.caFile, ServerName: "milvus-a.internal"}, "health probe failed: Unavailable"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			a := testenv.StartApp(t, cfgFor(tc.tls), app.Options{})
			var reason string
			testutil.EventuallyWhy(t, 10*time.Second, "cluster a reported unhealthy", func() (bool, string) {
				v := testenv.Topology(t, a.AdminAddr())
				for _, c := range v.Clusters {
					if c.ID == "a" && !c.Healthy && strings.HasPrefix(c.HealthReason, "health probe") {
						reason = c.HealthReason
						return true, ""
					}
				}
				return false, prettyJSON(v)
			})
			if !strings.Contains(reason, tc.reason) {
				t.Errorf("health reason %q does not name the certificate problem %q", reason, tc.reason)
			}
			code, body := httpGet(t, "http://"+a.AdminAddr()+"/readyz")
			if code != http.StatusServiceUnavailable || !strings.Contains(body, tc.reason) {
				t.Errorf("/readyz: %d %q, want 503 naming %q", code, body, tc.reason)
			}
		})
	}
}
