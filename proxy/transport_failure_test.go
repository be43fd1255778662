package proxy

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestTransportFailure: only the cluster's failures count (lost or
// refused connections, the proxy's own deadline, a bare socket error);
// a backend's answer of any code and a cancelled client do not.
func TestTransportFailure(t *testing.T) {
	live := context.Background()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		err  error
		want bool
	}{
		{"nil", live, nil, false},
		{"unavailable", live, status.Error(codes.Unavailable, "connection to cluster a lost"), true},
		{"deadline", live, status.Error(codes.DeadlineExceeded, "deadline"), true},
		{"bare socket error", live, errors.New("write tcp 127.0.0.1:1->127.0.0.1:2: write: broken pipe"), true},
		{"backend internal", live, status.Error(codes.Internal, "cannot parse"), false},
		{"backend unknown", live, status.Error(codes.Unknown, "panic"), false},
		{"backend canceled", live, status.Error(codes.Canceled, "canceled"), false},
		{"client cancelled", cancelled, status.Error(codes.Unavailable, "lost"), false},
		{"client cancelled, bare error", cancelled, errors.New("stream reset"), false},
	} {
		if got := transportFailure(tc.ctx, tc.err); got != tc.want {
			t.Errorf("%s: transportFailure(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}
