package etcdarbiter

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
)

// Local is the proxy's own topology: the decider describes it to etcd,
// the other proxies make it follow what etcd says. *topology.Manager fits.
type Local interface {
	Snapshot() *topology.Snapshot
	Changed() <-chan struct{}
	HoldWrites(reason string) error
	ReleaseWrites() error
	InstallLeader(p topology.Promotion) error
	SetQuarantine(id, reason string) error
}

// Options configure an Arbiter.
type Options struct {
	// Endpoints are the etcd client endpoints (host:port). Required.
	Endpoints []string
	// Username and Password authenticate to etcd when Username is set.
	// The password is never logged.
	Username, Password string
	// TLS, when set, is used towards etcd.
	TLS *tls.Config
	// Prefix is the key prefix of this set of proxies, without a
	// trailing slash. Required.
	Prefix string
	// LeaseTTL is the TTL of this proxy's lease, whole seconds, at least
	// 2s (default 5s).
	LeaseTTL time.Duration
	// ProxyID names this proxy among the others. Required.
	ProxyID string
	// Address is this proxy's admin address, where the others forward
	// switchover and failover requests while it decides.
	Address string
	// Local is this proxy's topology. Required.
	Local Local
	// DialTimeout bounds the first connection to etcd (default LeaseTTL).
	DialTimeout time.Duration
	// TickInterval is how often the lease's validity is re-judged and the
	// decider compares its topology with the document (default 100ms).
	TickInterval time.Duration
	// Takeover, when set, is called once this proxy has been elected and
	// has installed the document's leader, before it starts deciding,
	// with the record of the last change (nil when none): a change that
	// has no result was cut short by a decider that died, and the new
	// one finishes or rolls it back. Writes stay held meanwhile when the
	// change held them. Without Takeover the hold is released and the
	// arbiter's own leader-loss detection settles the topology. It must
	// not block: work that talks to clusters runs in a goroutine of the
	// caller's, and waits for Deciding.
	Takeover func(change *topology.Change)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now defaults to time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() (Options, error) {
	var errs []string
	if len(o.Endpoints) == 0 {
		errs = append(errs, "no etcd endpoints")
	}
	if o.Prefix == "" || !strings.HasPrefix(o.Prefix, "/") {
		errs = append(errs, fmt.Sprintf("prefix %q is not an absolute key prefix", o.Prefix))
	}
	o.Prefix = strings.TrimSuffix(o.Prefix, "/")
	if o.ProxyID == "" {
		errs = append(errs, "no proxy id")
	}
	if o.Local == nil {
		errs = append(errs, "no local topology")
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = 5 * time.Second
	}
	if o.LeaseTTL < 2*time.Second || o.LeaseTTL%time.Second != 0 {
		errs = append(errs, fmt.Sprintf("lease TTL %s is not whole seconds of at least 2s", o.LeaseTTL))
	}
	if len(errs) > 0 {
		return o, errors.New("etcdarbiter: " + strings.Join(errs, "; "))
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = o.LeaseTTL
	}
	if o.TickInterval <= 0 {
		o.TickInterval = 100 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o, nil
}
