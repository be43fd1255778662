package proxy

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

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
		c := s.newCall(ss.Context(), m)
		c.ev.Reason = ReasonLeaderOnly
		cl, err := s.topo.WaitLeader(c.ctx)
		if err != nil {
			return err
		}
		done, err := s.topo.Allow(cl.ID)
		if err != nil {
			return (&errBreaker{cluster: cl.ID, err: err}).status()
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
		cs, err := cl.Conn.NewStream(ctx, desc, m.full, s.callOpts...)
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
