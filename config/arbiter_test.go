package config

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestArbiterEtcd(t *testing.T) {
	dir := t.TempDir()
	pki := newPKI(t, dir)
	tests := []struct {
		name       string
		yaml       string
		enabled    bool
		prefix     string
		endpoints  []string
		tls        bool
		lease      time.Duration
		proxyID    string
		advertised string
	}{
		{name: "off", yaml: "", prefix: "/milvus-ha-proxy/a+b", lease: 5 * time.Second},
		{
			name:      "defaults",
			yaml:      "admin_listen: 10.0.0.7:9091\narbiter: {etcd: {endpoints: ['e1:2379', 'http://e2:2379']}}\n",
			enabled:   true,
			prefix:    "/milvus-ha-proxy/a+b",
			endpoints: []string{"e1:2379", "e2:2379"},
			lease:     5 * time.Second, advertised: "10.0.0.7:9091",
		},
		{
			name: "every key",
			yaml: fmt.Sprintf("arbiter:\n  proxy_id: p1\n  advertise_address: p1.internal:9091\n  etcd:\n    endpoints: ['https://e1:2379']\n"+
				"    prefix: /ha/prod/\n    username: proxy\n    password: s3cret\n    lease_ttl: 3s\n    tls: {ca_file: %s}\n", filepath.Base(pki.caFile)),
			enabled: true, prefix: "/ha/prod", endpoints: []string{"e1:2379"}, tls: true,
			lease: 3 * time.Second, proxyID: "p1", advertised: "p1.internal:9091",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// b before a: the default prefix sorts the ids.
			y := "clusters:\n  - {id: b, uri: 127.0.0.1:19532}\n  - {id: a, uri: 127.0.0.1:19531}\n" + tt.yaml
			c, err := parse([]byte(y), dir)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Arbiter.Enabled(); got != tt.enabled {
				t.Errorf("Enabled = %v, want %v", got, tt.enabled)
			}
			if got := c.EtcdPrefix(); got != tt.prefix {
				t.Errorf("EtcdPrefix = %q, want %q", got, tt.prefix)
			}
			eps, on, err := c.EtcdEndpoints()
			if err != nil || on != tt.tls || strings.Join(eps, ",") != strings.Join(tt.endpoints, ",") {
				t.Errorf("EtcdEndpoints = %v, %v, %v; want %v, %v", eps, on, err, tt.endpoints, tt.tls)
			}
			tc, err := c.EtcdTLSConfig()
			if err != nil || (tc != nil) != tt.tls || (tt.tls && tc.RootCAs == nil) {
				t.Errorf("EtcdTLSConfig = %+v, %v (want TLS %v with the CA file resolved against the config's directory)", tc, err, tt.tls)
			}
			if got := c.Arbiter.Etcd.LeaseTTL.Std(); got != tt.lease {
				t.Errorf("lease_ttl = %s, want %s", got, tt.lease)
			}
			if tt.proxyID != "" && c.ProxyID() != tt.proxyID {
				t.Errorf("ProxyID = %q, want %q", c.ProxyID(), tt.proxyID)
			}
			if tt.advertised != "" && c.AdvertiseAddress() != tt.advertised {
				t.Errorf("AdvertiseAddress = %q, want %q", c.AdvertiseAddress(), tt.advertised)
			}
			if strings.Contains(c.String(), "s3cret") {
				t.Errorf("the etcd password is printed:\n%s", c)
			}
		})
	}
}

func TestArbiterDefaultAddresses(t *testing.T) {
	c := Default()
	c.AdminListen = "0.0.0.0:9191"
	if got := c.AdvertiseAddress(); strings.HasPrefix(got, "0.0.0.0") || !strings.HasSuffix(got, ":9191") {
		t.Errorf("AdvertiseAddress = %q: want the host name in place of the wildcard, port 9191", got)
	}
	if got := c.ProxyID(); !strings.HasSuffix(got, "-9191") || !idPattern.MatchString(got) {
		t.Errorf("ProxyID = %q: want host-9191, a valid id", got)
	}
}
