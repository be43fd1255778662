package proxy

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// clientStream is an engine's side of a proxied streaming call: how
// messages come from the client and how the backend's answer goes back.
// proxyStream does the rest, the same for both engines.
type clientStream interface {
	// recv returns the client's next message and the flow-control credit
	// to hand back once it is sent on (0 where the engine does that
	// itself); io.EOF when the client half-closed.
	recv(ctx context.Context) (m *frame, credit int, err error)
	// sent hands back the credit of a message sent on to the backend.
	sent(credit int)
	// sendHeader sends the backend's header, plus HeaderCluster.
	sendHeader(hdr metadata.MD, cluster string) error
	// send sends one backend message; on failure the engine has ended
	// the client's stream itself.
	send(m *frame) error
	// finish ends the client's stream with the backend's outcome (nil:
	// OK) and trailer, plus HeaderCluster.
	finish(outcome error, trailer metadata.MD, cluster string)
}

// proxyStream proxies a streaming method (CreateReplicateStream,
// DumpMessages) to the leader over the cluster's grpc-go connection:
// messages from the client go to the backend as they arrive, the
// backend's header, messages and trailer come back. out carries the
// client's metadata to forward. It returns the call's outcome; started
// reports whether the client's stream was begun (header sent), after
// which the outcome has been delivered through cs already. Rare admin
// calls, so clarity over speed.
func (s *Server) proxyStream(c *call, out context.Context, cs clientStream) (started bool, err error) {
	if s.draining.Load() {
		return false, errDraining
	}
	cl, err := s.topo.WaitLeader(c.ctx)
	if err != nil {
		return false, err
	}
	if cl.Conn == nil {
		return false, status.Errorf(codes.Unavailable, "milvus-ha-proxy: no connection to cluster %s", cl.ID)
	}
	done, err := s.topo.Allow(cl.ID)
	if err != nil {
		return false, refusedBy(cl.ID, err).status()
	}
	c.served = cl
	countStart(cl)
	defer countEnd(cl)
	ctx, cancel := context.WithCancel(out)
	defer cancel()
	m := c.m
	desc := &grpc.StreamDesc{StreamName: m.name, ServerStreams: m.serverStreams, ClientStreams: m.clientStreams}
	up, err := cl.Conn.NewStream(ctx, desc, m.full, s.grpcCallOpts()...)
	if err != nil {
		done(!transportFailure(c.ctx, err))
		return false, err
	}
	// Client to backend. The goroutine ends when the client half closes
	// or fails, when the backend ends the stream, or when this function
	// returns (ctx is cancelled and recv fails).
	go pumpToBackend(ctx, cancel, cs, up)

	hdr, err := up.Header()
	if err != nil {
		done(!transportFailure(c.ctx, err))
		return false, err
	}
	if err := cs.sendHeader(hdr, cl.ID); err != nil {
		done(true)
		return false, err
	}
	for {
		f := &frame{}
		err := up.RecvMsg(f)
		if err != nil {
			var outcome error
			if errors.Is(err, io.EOF) {
				done(true)
			} else {
				done(!transportFailure(c.ctx, err))
				outcome = err
			}
			cs.finish(outcome, up.Trailer(), cl.ID)
			return true, outcome
		}
		err = cs.send(f)
		f.Free()
		if err != nil {
			done(true)
			return true, err
		}
	}
}

// pumpToBackend sends the client's messages on until the client half
// closes (then CloseSend) or something fails (then cancel, which ends the
// backend stream).
func pumpToBackend(ctx context.Context, cancel context.CancelFunc, cs clientStream, up grpc.ClientStream) {
	for {
		f, credit, err := cs.recv(ctx)
		if err != nil {
			if errors.Is(err, io.EOF) {
				_ = up.CloseSend()
			} else {
				cancel()
			}
			return
		}
		err = up.SendMsg(f)
		f.Free()
		if err != nil {
			// io.EOF: the backend ended the stream; its status comes
			// from RecvMsg.
			return
		}
		cs.sent(credit)
	}
}
