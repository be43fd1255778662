package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// keyError is a problem with one key of a TLS block, named relative to it.
type keyError struct {
	key string
	err error
}

func (e *keyError) Error() string { return e.key + ": " + e.err.Error() }

// Enabled reports whether the proxy talks TLS to this cluster: the uri is
// https:// or a TLS key is set.
func (c *Cluster) Enabled() bool {
	if _, useTLS, err := parseURI(c.URI); err == nil && useTLS {
		return true
	}
	t := c.TLS
	return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify
}

// Address returns the cluster's host:port, without any scheme, for
// grpc.NewClient. It is "" for an invalid uri (Validate reports those).
func (c *Cluster) Address() string {
	addr, _, err := parseURI(c.URI)
	if err != nil {
		return ""
	}
	return addr
}

// TLSConfig returns the client TLS configuration towards this cluster, or
// nil (and no error) when TLS is off. The files are read on each call, so a
// caller that reconnects picks up rotated certificates.
func (c *Cluster) TLSConfig() (*tls.Config, error) {
	if !c.Enabled() {
		return nil, nil
	}
	cfg, kerr := clientTLS(c.TLS)
	if kerr != nil {
		return nil, fmt.Errorf("cluster %s: tls.%w", c.ID, kerr)
	}
	return cfg, nil
}

func clientTLS(t ClusterTLS) (*tls.Config, *keyError) {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName, // empty: grpc uses the address's host
		InsecureSkipVerify: t.InsecureSkipVerify,
	}
	if t.CAFile != "" {
		pool, err := loadPool(t.CAFile)
		if err != nil {
			return nil, &keyError{"ca_file", err}
		}
		cfg.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		if t.CertFile == "" {
			return nil, &keyError{"cert_file", fmt.Errorf("required with key_file")}
		}
		if t.KeyFile == "" {
			return nil, &keyError{"key_file", fmt.Errorf("required with cert_file")}
		}
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, &keyError{"cert_file", err}
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Enabled reports whether clients must connect to the proxy with TLS.
func (t ServerTLS) Enabled() bool { return t.CertFile != "" }

// Config returns the server TLS configuration for the gRPC port, or nil (and
// no error) when TLS is off. With client_ca_file set, clients must present a
// certificate signed by it.
func (t ServerTLS) Config() (*tls.Config, error) {
	cfg, kerr := serverTLS(t)
	if kerr != nil {
		return nil, fmt.Errorf("tls.%w", kerr)
	}
	return cfg, nil
}

func serverTLS(t ServerTLS) (*tls.Config, *keyError) {
	if t.CertFile == "" {
		switch {
		case t.KeyFile != "":
			return nil, &keyError{"cert_file", fmt.Errorf("required with key_file")}
		case t.ClientCAFile != "":
			return nil, &keyError{"cert_file", fmt.Errorf("required with client_ca_file (mutual TLS needs the server side of TLS too)")}
		}
		return nil, nil
	}
	if t.KeyFile == "" {
		return nil, &keyError{"key_file", fmt.Errorf("required with cert_file")}
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, &keyError{"cert_file", err}
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
	}
	if t.ClientCAFile != "" {
		pool, err := loadPool(t.ClientCAFile)
		if err != nil {
			return nil, &keyError{"client_ca_file", err}
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}
