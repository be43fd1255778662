package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/admin"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/config"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/etcdarbiter"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
)

// newEtcdArbiter builds the etcd arbiter when the config has one (nil
// otherwise: this proxy decides alone).
func newEtcdArbiter(cfg *config.Config, topo *topology.Manager, logger *slog.Logger) (*etcdarbiter.Arbiter, error) {
	if !cfg.Arbiter.Enabled() {
		return nil, nil
	}
	eps, _, err := cfg.EtcdEndpoints()
	if err != nil {
		return nil, fmt.Errorf("app: arbiter.etcd.endpoints: %w", err)
	}
	tc, err := cfg.EtcdTLSConfig()
	if err != nil {
		return nil, fmt.Errorf("app: %w", err)
	}
	e := cfg.Arbiter.Etcd
	return etcdarbiter.New(etcdarbiter.Options{
		Endpoints: eps,
		Username:  e.Username,
		Password:  e.Password.Reveal(),
		TLS:       tc,
		Prefix:    cfg.EtcdPrefix(),
		LeaseTTL:  e.LeaseTTL.Std(),
		ProxyID:   cfg.ProxyID(),
		Address:   cfg.AdvertiseAddress(),
		Local:     topo,
		Logger:    logger,
	})
}

// forward sends an operator's leader change to the proxy that decides,
// when this one does not. ok is false when this proxy decides (or there
// is no etcd arbiter): the caller runs the change itself.
func (c *controller) forward(ctx context.Context, kind, to string) (r admin.Result, ok bool, err error) {
	e := c.app.etcd
	if e == nil || e.Deciding() {
		return r, false, nil
	}
	id, addr := e.DeciderAddress()
	if addr == "" {
		return r, true, fmt.Errorf("%w: no proxy decides leader changes now (the etcd arbiter elects one within its lease TTL; see `milvus-ha-proxy status`)", admin.ErrRefused)
	}
	cl, err := admin.NewClient(addr, nil)
	if err != nil {
		return r, true, fmt.Errorf("forwarding the %s to proxy %s: %w", kind, id, err)
	}
	c.app.logger.Info("forwarding to the deciding proxy", "action", kind, "to", to, "decider", id, "address", addr)
	switch kind {
	case topology.KindSwitchover:
		r, err = cl.Switchover(ctx, to)
	case topology.KindAttach:
		r, err = cl.Attach(ctx, to)
	default:
		r, err = cl.Failover(ctx, to)
	}
	// The decider's refusal keeps its meaning (HTTP 404/409) here.
	var ae *admin.APIError
	if errors.As(err, &ae) {
		switch ae.StatusCode {
		case 404:
			err = fmt.Errorf("%w: proxy %s: %s", admin.ErrUnknownCluster, id, ae.Message)
		case 409:
			err = fmt.Errorf("%w: proxy %s: %s", admin.ErrRefused, id, ae.Message)
		default:
			err = fmt.Errorf("proxy %s answered: %w", id, err)
		}
	} else if err != nil {
		err = fmt.Errorf("forwarding the %s to proxy %s at %s: %w", kind, id, addr, err)
	}
	if err == nil {
		r.Message = fmt.Sprintf("run by proxy %s (it decides); %s", id, r.Message)
	}
	return r, true, err
}

// arbiterView renders the etcd arbiter for the topology view.
func arbiterView(e *etcdarbiter.Arbiter) *admin.ArbiterView {
	if e == nil {
		return nil
	}
	st := e.Status()
	v := &admin.ArbiterView{
		Endpoints: st.Endpoints, Prefix: st.Prefix, ProxyID: st.ProxyID,
		Deciding: st.Deciding, Decider: st.Decider, Connected: st.Connected,
		LeaseValidSeconds: st.LeaseValidFor.Seconds(),
		Epoch:             st.Epoch, Leader: st.Leader,
		Fenced: st.Fenced, FenceReason: st.FenceReason, LastError: st.LastError,
		ChangeRunning: st.Change != nil && st.Change.Result == "",
		Proxies:       []admin.ProxyEntry{},
	}
	if st.Fenced {
		t := st.FencedSince
		v.FencedSince = &t
	}
	for _, p := range st.Proxies {
		v.Proxies = append(v.Proxies, admin.ProxyEntry{ID: p.ID, Address: p.Address, Epoch: p.Epoch,
			Leader: p.Leader, Deciding: p.Deciding, LastHeartbeat: p.Heartbeat})
	}
	return v
}
