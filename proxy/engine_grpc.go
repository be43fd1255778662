package proxy

import (
	"context"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/proxy/relay"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// The grpc engine: a grpc-go server with a raw-bytes codec in front, grpc-go
// client connections (topology.Cluster.Conn) behind. Robust and simple;
// the relay engine costs about half the CPU per request.

func (s *Server) newGRPCCall(ctx context.Context, m *method) call {
	c := call{m: m, ctx: ctx}
	md, _ := metadata.FromIncomingContext(ctx) // a copy: ours to edit
	for k, v := range md {
		if !relay.Forwardable(k) || k == "user-agent" {
			// grpc-go sets its own user-agent on the next hop.
			delete(md, k)
			continue
		}
		switch k {
		case "dbname":
			if len(v) > 0 {
				c.mdDB = v[0]
			}
		case "identifier":
			if len(v) > 0 {
				c.ident = v[0]
			}
		}
	}
	c.out = metadata.NewOutgoingContext(ctx, md)
	return c
}

func (s *Server) unaryHandler(m *method) grpc.MethodHandler {
	return func(_ any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		req := &frame{}
		if err := dec(req); err != nil {
			return nil, err
		}
		if interceptor == nil {
			return s.grpcUnary(ctx, m, req)
		}
		info := &grpc.UnaryServerInfo{Server: s, FullMethod: m.full}
		return interceptor(ctx, req, info, func(ctx context.Context, r any) (any, error) {
			return s.grpcUnary(ctx, m, r.(*frame))
		})
	}
}

// grpcUnary handles one unary call. The returned frame's bytes go to gRPC,
// which frees them once written.
func (s *Server) grpcUnary(ctx context.Context, m *method, req *frame) (any, error) {
	defer req.Free()
	c := s.newGRPCCall(ctx, m)
	c.acct = grpcCallAcct(ctx)
	resp, err := s.handle(&c, req)
	if c.acct != nil {
		c.acct.finish(resp)
	}
	if id := c.headerCluster(); id != "" {
		_ = grpc.SetHeader(ctx, s.clusterHeader(id))
	}
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// grpcUpstream sends calls over the topology's grpc-go connections.
type grpcUpstream struct {
	callOpts []grpc.CallOption
}

func (g *grpcUpstream) roundTrip(c *call, cl *topology.Cluster, req *frame, wantSent bool) (*frame, bool, error) {
	if cl.Conn == nil {
		return nil, false, status.Errorf(codes.Unavailable, "milvus-ha-proxy: no connection to cluster %s", cl.ID)
	}
	out := c.out
	if out == nil {
		out = c.ctx
	}
	resp := &frame{Give: true}
	opts := g.callOpts
	var p *peer.Peer
	if wantSent {
		// gRPC records the peer only once a transport stream exists: no
		// peer means the request never left the proxy.
		p = &peer.Peer{}
		opts = append(opts[:len(opts):len(opts)], grpc.Peer(p))
	}
	var err error
	if c.acct == nil {
		err = cl.Conn.Invoke(out, c.m.full, req, resp, opts...)
	} else {
		b := c.acct.b
		var early bool
		if early, err = b.start(c.ctx); err != nil {
			// The client left while the call was held: never sent.
			resp.Free()
			return nil, false, status.FromContextError(err).Err()
		}
		admitted := false
		if early {
			err = cl.Conn.Invoke(out, c.m.full, req, resp, opts...)
		} else {
			admitted, err = g.budgeted(out, c, cl, req, resp, opts)
		}
		b.done(c.acct, answerLen(resp, err), early, admitted)
	}
	if err != nil {
		resp.Free()
		return nil, p == nil || p.Addr != nil, err
	}
	return resp, true, nil
}

// unaryDesc describes a unary call as a stream (what Invoke does inside).
var unaryDesc = grpc.StreamDesc{}

// budgeted is Invoke with the client connection's response budget
// (grpc_budget.go) between the answer's headers and its message: the
// cluster computes the answer and may send one stream window of it
// meanwhile, the rest waits in the cluster until the budget admits it.
func (g *grpcUpstream) budgeted(ctx context.Context, c *call, cl *topology.Cluster, req, resp *frame, opts []grpc.CallOption) (admitted bool, _ error) {
	cs, err := cl.Conn.NewStream(ctx, &unaryDesc, c.m.full, opts...)
	if err != nil {
		return false, err
	}
	if err := cs.SendMsg(req); err != nil {
		return false, err
	}
	if _, err := cs.Header(); err == nil {
		// (Else the call failed: RecvMsg returns its status.)
		if c.acct.b.admit(c.ctx) != nil {
			// The client left. RecvMsg ends the stream at once (its
			// context is done) and returns the status.
			return false, cs.RecvMsg(resp)
		}
		admitted = true
	}
	return admitted, cs.RecvMsg(resp)
}

// answerLen is what a received answer is charged.
func answerLen(resp *frame, err error) int64 {
	if err != nil {
		return 0
	}
	return int64(resp.Len())
}

// streamHandler proxies a streaming method (CreateReplicateStream,
// DumpMessages) to the leader (Server.proxyStream). The backend's header
// and trailer go back to the client with HeaderCluster added to both.
func (s *Server) streamHandler(m *method) grpc.StreamHandler {
	return func(_ any, ss grpc.ServerStream) error {
		c := s.newGRPCCall(ss.Context(), m)
		c.ev.Reason = ReasonLeaderOnly
		_, err := s.proxyStream(&c, c.out, grpcClientStream{s: s, ss: ss})
		return err
	}
}

// grpcClientStream is the grpc engine's side of a proxied stream.
type grpcClientStream struct {
	s  *Server
	ss grpc.ServerStream
}

func (g grpcClientStream) recv(context.Context) (*frame, int, error) {
	f := &frame{}
	if err := g.ss.RecvMsg(f); err != nil {
		return nil, 0, err
	}
	return f, 0, nil
}

func (g grpcClientStream) sent(int) {}

func (g grpcClientStream) sendHeader(hdr metadata.MD, cluster string) error {
	return g.ss.SendHeader(metadata.Join(filterMD(hdr), g.s.clusterHeader(cluster)))
}

func (g grpcClientStream) send(m *frame) error { return g.ss.SendMsg(m) }

func (g grpcClientStream) finish(_ error, trailer metadata.MD, cluster string) {
	// The handler returns the outcome; gRPC sends it after this trailer.
	g.ss.SetTrailer(metadata.Join(filterMD(trailer), g.s.clusterHeader(cluster)))
}

// filterMD drops the keys gRPC owns from backend metadata.
func filterMD(md metadata.MD) metadata.MD {
	for k := range md {
		if !relay.Forwardable(k) {
			delete(md, k)
		}
	}
	return md
}
