package proxy

import (
	"context"
	"errors"
	"io"

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
		if !forwardable(k) || k == "user-agent" {
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
	defer req.free()
	c := s.newGRPCCall(ctx, m)
	resp, err := s.handle(&c, req)
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
	resp := &frame{give: true}
	opts := g.callOpts
	var p *peer.Peer
	if wantSent {
		// gRPC records the peer only once a transport stream exists: no
		// peer means the request never left the proxy.
		p = &peer.Peer{}
		opts = append(opts[:len(opts):len(opts)], grpc.Peer(p))
	}
	err := cl.Conn.Invoke(out, c.m.full, req, resp, opts...)
	if err != nil {
		resp.free()
		return nil, p == nil || p.Addr != nil, err
	}
	return resp, true, nil
}

// streamHandler proxies a streaming method (CreateReplicateStream,
// DumpMessages) to the leader, frame by frame in both directions. The
// backend's header and trailer go back to the client with HeaderCluster
// added to both.
func (s *Server) streamHandler(m *method) grpc.StreamHandler {
	desc := &grpc.StreamDesc{StreamName: m.name, ServerStreams: m.serverStreams, ClientStreams: m.clientStreams}
	return func(_ any, ss grpc.ServerStream) error {
		if s.draining.Load() {
			return errDraining
		}
		c := s.newGRPCCall(ss.Context(), m)
		c.ev.Reason = ReasonLeaderOnly
		cl, err := s.topo.WaitLeader(c.ctx)
		if err != nil {
			return err
		}
		if cl.Conn == nil {
			return status.Errorf(codes.Unavailable, "milvus-ha-proxy: no connection to cluster %s", cl.ID)
		}
		done, err := s.topo.Allow(cl.ID)
		if err != nil {
			return refusedBy(cl.ID, err).status()
		}
		if cl.Outstanding != nil {
			cl.Outstanding.Add(1)
			defer cl.Outstanding.Add(-1)
		}
		if cl.Served != nil {
			cl.Served.Add(1)
		}
		ctx, cancel := context.WithCancel(c.out)
		defer cancel()
		cs, err := cl.Conn.NewStream(ctx, desc, m.full, s.grpcCallOpts()...)
		if err != nil {
			done(!transportFailure(c.ctx, err))
			return err
		}
		clusterMD := s.clusterHeader(cl.ID)

		// Client to backend. The goroutine ends when the client half
		// closes or fails, or when this handler returns (gRPC then fails
		// the pending RecvMsg).
		go func() {
			for {
				f := &frame{}
				if err := ss.RecvMsg(f); err != nil {
					if errors.Is(err, io.EOF) {
						_ = cs.CloseSend()
						return
					}
					cancel()
					return
				}
				err := cs.SendMsg(f)
				f.free()
				if err != nil {
					// io.EOF: the backend ended the stream; its status
					// comes from RecvMsg below.
					return
				}
			}
		}()

		hdr, err := cs.Header()
		if err != nil {
			done(!transportFailure(c.ctx, err))
			return err
		}
		if err := ss.SendHeader(metadata.Join(filterMD(hdr), clusterMD)); err != nil {
			done(true)
			return err
		}
		for {
			f := &frame{}
			err := cs.RecvMsg(f)
			if err != nil {
				ss.SetTrailer(metadata.Join(filterMD(cs.Trailer()), clusterMD))
				if errors.Is(err, io.EOF) {
					done(true)
					return nil
				}
				done(!transportFailure(c.ctx, err))
				return err
			}
			err = ss.SendMsg(f)
			f.free()
			if err != nil {
				done(true)
				return err
			}
		}
	}
}

// filterMD drops the keys gRPC owns from backend metadata.
func filterMD(md metadata.MD) metadata.MD {
	for k := range md {
		if !forwardable(k) {
			delete(md, k)
		}
	}
	return md
}
