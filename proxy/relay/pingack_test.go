package relay

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// sinkRecorder is a frameSink that keeps what each Flush sent.
type sinkRecorder struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	flushes [][]byte
}

func (s *sinkRecorder) Write(p []byte) (int, error) { return s.buf.Write(p) }
func (s *sinkRecorder) Buffered() int               { return s.buf.Len() }
func (s *sinkRecorder) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushes = append(s.flushes, bytes.Clone(s.buf.Bytes()))
	s.buf.Reset()
	return nil
}

// frames parses what flush i sent.
func (s *sinkRecorder) frames(t *testing.T, i int) []http2.Frame {
	t.Helper()
	s.mu.Lock()
	b := s.flushes[i]
	s.mu.Unlock()
	fr := http2.NewFramer(nil, bytes.NewReader(b))
	var fs []http2.Frame
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return fs
		}
		fs = append(fs, f)
	}
}

func (s *sinkRecorder) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.flushes)
}

func newRecordedWriter(acks *ackFlusher) (*h2writer, *sinkRecorder) {
	sink := &sinkRecorder{}
	w := &h2writer{}
	w.init(sink, http2.NewFramer(sink, nil))
	w.acks = acks
	return w, sink
}

// TestPingAckLazy: a PING's acknowledgement waits for the next write to
// the peer and leaves with it; with nothing else to send, the flusher
// sends it on its own; a writer that was left a flush by the one before
// it (queued behind it) flushes even to acknowledge a PING; without a
// flusher the acknowledgement goes at once.
func TestPingAckLazy(t *testing.T) {
	var acks ackFlusher
	w, sink := newRecordedWriter(&acks)
	ping := [8]byte{2, 4, 16, 16, 9, 14, 7, 7} // grpc-go's BDP ping

	w.writePingAckLazy(ping)
	if n := sink.count(); n != 0 {
		t.Fatalf("the acknowledgement was flushed on its own at once (%d flushes)", n)
	}
	w.writeRSTStream(1, http2.ErrCodeCancel) // flushes
	if n := sink.count(); n != 1 {
		t.Fatalf("%d flushes after a flushing write, want 1", n)
	}
	fs := sink.frames(t, 0)
	if len(fs) != 2 {
		t.Fatalf("the flush carried %d frames, want the acknowledgement and RST_STREAM", len(fs))
	}
	if p, ok := fs[0].(*http2.PingFrame); !ok || !p.IsAck() || p.Data != ping {
		t.Fatalf("first frame %v, want the PING acknowledgement", fs[0])
	}

	// Nothing else to send: the flusher sends it, within pingAckDelay
	// to twice that (waited for here up to 10 s, not timed).
	w.writePingAckLazy(ping)
	deadline := time.Now().Add(10 * time.Second)
	for sink.count() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the flusher never sent the acknowledgement")
		}
		time.Sleep(time.Millisecond)
	}
	if fs := sink.frames(t, 1); len(fs) != 1 {
		t.Fatalf("the flusher's flush carried %d frames, want 1", len(fs))
	}
	acks.mu.Lock()
	for acks.running {
		acks.mu.Unlock()
		time.Sleep(time.Millisecond) // the flusher stops once idle
		acks.mu.Lock()
	}
	acks.mu.Unlock()

	// A writer leaves its flush to the one queued behind it, which
	// acknowledges a PING: it must flush both.
	w.lock()
	w.err = w.fr.WriteRSTStream(3, http2.ErrCodeCancel)
	w.waiting.Add(1) // as lock does for a writer that waits
	w.unlock()
	w.waiting.Add(-1)
	w.writePingAckLazy(ping)
	if n := sink.count(); n != 3 {
		t.Fatalf("%d flushes, want 3: the writer behind did not flush what it was left", n)
	}
	if fs := sink.frames(t, 2); len(fs) != 2 {
		t.Fatalf("the flush carried %d frames, want RST_STREAM and the acknowledgement", len(fs))
	}

	// No flusher (writers made by tests and tools): at once.
	w2, sink2 := newRecordedWriter(nil)
	w2.writePingAckLazy(ping)
	if n := sink2.count(); n != 1 {
		t.Fatalf("without a flusher: %d flushes, want 1", n)
	}
}
