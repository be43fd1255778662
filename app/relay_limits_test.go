package app

import (
	"testing"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/config"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/proxy"
)

// TestRelayLimitsDefaultsAgree: the config's relay defaults are the relay
// engine's own, so a config that leaves them out runs the same proxy as
// one built with proxy.New alone.
func TestRelayLimitsDefaultsAgree(t *testing.T) {
	got := relayLimits(&config.Default().Relay)
	want := proxy.DefaultRelayLimits
	if got.PingWithoutCalls == nil || !*got.PingWithoutCalls {
		t.Errorf("keepalive_permit_without_calls defaults to false; the relay's default permits pings without calls")
	}
	got.PingWithoutCalls, want.PingWithoutCalls = nil, nil
	if got != want {
		t.Errorf("config.Default().Relay gives\n  %+v\nproxy.DefaultRelayLimits is\n  %+v", got, want)
	}
	if string(config.Default().Engine) != string(proxy.DefaultEngine) {
		t.Errorf("config's default engine is %q, proxy.New's is %q", config.Default().Engine, proxy.DefaultEngine)
	}
}
