package sim

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"google.golang.org/protobuf/proto"
)

// Message types, named as Milvus 2.6 names its WAL messages where one exists.
const (
	kindTimeTick           = "TimeTick"
	kindInsert             = "Insert"
	kindDelete             = "Delete"
	kindCreateDatabase     = "CreateDatabase"
	kindDropDatabase       = "DropDatabase"
	kindCreateCollection   = "CreateCollection"
	kindDropCollection     = "DropCollection"
	kindRenameCollection   = "RenameCollection"
	kindAlterCollection    = "AlterCollection"
	kindCreatePartition    = "CreatePartition"
	kindDropPartition      = "DropPartition"
	kindCreateIndex        = "CreateIndex"
	kindDropIndex          = "DropIndex"
	kindLoadCollection     = "LoadCollection"
	kindReleaseCollection  = "ReleaseCollection"
	kindLoadPartitions     = "LoadPartitions"
	kindReleasePartitions  = "ReleasePartitions"
	kindCreateAlias        = "CreateAlias"
	kindDropAlias          = "DropAlias"
	kindAlterAlias         = "AlterAlias"
	kindAlterReplicaConfig = "AlterReplicateConfig"
)

// Property keys of WAL messages.
const (
	propType       = "_t"
	propTimeTick   = "_tt"
	propPChannel   = "_pch"
	propBroadcast  = "_bc"
	propDB         = "_db"
	propColl       = "_coll"
	propCollID     = "_cid"
	propPartID     = "_pid"
	propIndexID    = "_iid"
	propPChIdx     = "_pchidx"
	propFieldIDs   = "_fids"
	propSalvage    = "_salvage."
	propSrcCluster = "_src"
	propSrcID      = "_srcid"
	propSrcPch     = "_srcpch"
	// propGroupNext ("1") marks a message whose effect comes together with
	// the next message of its pchannel: the messages of such a group (an
	// upsert's Delete and Insert) share one timestamp, are written and
	// replicated as a unit, and become visible to readers together.
	propGroupNext = "_grpnext"
)

// entry is one WAL message.
type entry struct {
	id      int64
	ts      uint64
	kind    string
	payload []byte
	extra   map[string]string // type-specific properties, travel with the message

	// Set when the message was received through replication; local only.
	src    string
	srcID  int64
	srcPch string
}

func (e *entry) broadcast() bool { return e.extra[propBroadcast] == "1" }

// groupNext reports whether e takes effect together with the next message
// of its pchannel (see propGroupNext).
func (e *entry) groupNext() bool { return e.extra[propGroupNext] == "1" }

// immutable renders e as it travels in a replicate stream or DumpMessages.
func (e *entry) immutable(pchannel string) *commonpb.ImmutableMessage {
	props := make(map[string]string, len(e.extra)+3)
	for k, v := range e.extra {
		props[k] = v
	}
	props[propType] = e.kind
	props[propTimeTick] = strconv.FormatUint(e.ts, 10)
	props[propPChannel] = pchannel
	return &commonpb.ImmutableMessage{
		Id:         messageID(e.id),
		Payload:    e.payload,
		Properties: props,
	}
}

func messageID(id int64) *commonpb.MessageID {
	return &commonpb.MessageID{Id: strconv.FormatInt(id, 10), WALName: commonpb.WALName_Test}
}

func parseMessageID(m *commonpb.MessageID) (int64, error) {
	if m == nil || m.GetId() == "" {
		return 0, errors.New("empty message id")
	}
	id, err := strconv.ParseInt(m.GetId(), 10, 64)
	if err != nil || id < 1 {
		return 0, fmt.Errorf("malformed message id %q", m.GetId())
	}
	return id, nil
}

// entryFromImmutable decodes a message received from another cluster (or read
// back from disk).
func entryFromImmutable(m *commonpb.ImmutableMessage) (*entry, error) {
	props := m.GetProperties()
	kind := props[propType]
	if kind == "" {
		return nil, errors.New("message has no type property")
	}
	ts, err := strconv.ParseUint(props[propTimeTick], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("message has no valid time tick property: %w", err)
	}
	id, err := parseMessageID(m.GetId())
	if err != nil {
		return nil, err
	}
	e := &entry{id: id, ts: ts, kind: kind, payload: m.GetPayload()}
	for k, v := range props {
		switch k {
		case propType, propTimeTick, propPChannel:
		case propSrcCluster:
			e.src = v
		case propSrcID:
			e.srcID, _ = strconv.ParseInt(v, 10, 64)
		case propSrcPch:
			e.srcPch = v
		default:
			if e.extra == nil {
				e.extra = make(map[string]string)
			}
			e.extra[k] = v
		}
	}
	return e, nil
}

// wal is the write-ahead log of one physical channel.
type wal struct {
	idx  int
	name string

	// mu serialises appends and the application of each appended message to
	// the cluster state, so state changes happen in WAL order per pchannel.
	mu sync.Mutex

	emu     sync.RWMutex
	entries []*entry
	notify  chan struct{}

	// served is the timestamp up to which this pchannel is applied: the
	// largest timestamp of a message appended and applied (time ticks
	// included). It advances only after the message's effects are visible.
	served atomic.Uint64

	file *walFile // nil without DataDir
}

func newWAL(idx int, name string) *wal {
	return &wal{idx: idx, name: name, notify: make(chan struct{})}
}

// appendLocked assigns es the next ids, persists them with one write and
// publishes them. The caller holds w.mu, applies them, then calls
// advance(ts).
func (w *wal) appendLocked(es ...*entry) error {
	w.emu.RLock()
	next := int64(len(w.entries)) + 1
	w.emu.RUnlock()
	for i, e := range es {
		e.id = next + int64(i)
	}
	if w.file != nil {
		if err := w.file.write(es...); err != nil {
			return fmt.Errorf("persist wal %s: %w", w.name, err)
		}
	}
	w.publish(es...)
	return nil
}

// publish makes es visible to WAL readers (also used when loading from
// disk).
func (w *wal) publish(es ...*entry) {
	w.emu.Lock()
	w.entries = append(w.entries, es...)
	close(w.notify)
	w.notify = make(chan struct{})
	w.emu.Unlock()
}

// advance marks the pchannel applied up to ts and wakes readers waiting for
// it.
func (w *wal) advance(ts uint64) {
	for {
		cur := w.served.Load()
		if ts <= cur {
			return
		}
		if w.served.CompareAndSwap(cur, ts) {
			break
		}
	}
	w.emu.Lock()
	close(w.notify)
	w.notify = make(chan struct{})
	w.emu.Unlock()
}

func (w *wal) lastID() int64 {
	w.emu.RLock()
	defer w.emu.RUnlock()
	return int64(len(w.entries))
}

// get returns the entry with id, or nil and a channel closed on the next
// append when it does not exist yet.
func (w *wal) get(id int64) (*entry, <-chan struct{}) {
	w.emu.RLock()
	defer w.emu.RUnlock()
	if id >= 1 && id <= int64(len(w.entries)) {
		return w.entries[id-1], nil
	}
	return nil, w.notify
}

// wait blocks until entry id exists.
func (w *wal) wait(ctx context.Context, id int64) (*entry, error) {
	for {
		e, ch := w.get(id)
		if e != nil {
			return e, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ch:
		}
	}
}

// changed returns a channel closed on the next append.
func (w *wal) changed() <-chan struct{} {
	w.emu.RLock()
	defer w.emu.RUnlock()
	return w.notify
}

// walFile is the on-disk form of a WAL: length-prefixed ImmutableMessage
// records, each append (one message, or one group) written with one
// write(2) so that a process killed with -9 keeps every acknowledged
// message and never half a group.
type walFile struct {
	mu     sync.Mutex
	f      *os.File
	closed bool
}

var errStoreClosed = errors.New("wal store closed")

func (wf *walFile) write(es ...*entry) error {
	var buf []byte
	for _, e := range es {
		m := e.immutable("")
		delete(m.Properties, propPChannel)
		if e.src != "" {
			m.Properties[propSrcCluster] = e.src
			m.Properties[propSrcID] = strconv.FormatInt(e.srcID, 10)
			m.Properties[propSrcPch] = e.srcPch
		}
		body, err := proto.Marshal(m)
		if err != nil {
			return err
		}
		buf = binary.AppendUvarint(buf, uint64(len(body)))
		buf = append(buf, body...)
	}
	wf.mu.Lock()
	defer wf.mu.Unlock()
	if wf.closed {
		return errStoreClosed
	}
	_, err := wf.f.Write(buf)
	return err
}

func (wf *walFile) close() error {
	wf.mu.Lock()
	defer wf.mu.Unlock()
	if wf.closed {
		return nil
	}
	wf.closed = true
	return wf.f.Close()
}

// openWALFile reads every complete record of path and opens it for appending.
// A torn record at the end (the process died mid-write), and an incomplete
// group before it, are cut off.
func openWALFile(path string) (*walFile, []*entry, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, nil, err
	}
	var entries []*entry
	r := bufio.NewReader(f)
	var off, good int64 // good: the end of the last complete group
	complete := 0
	for {
		n, err := binary.ReadUvarint(r)
		if err != nil {
			break
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			break
		}
		var m commonpb.ImmutableMessage
		if err := proto.Unmarshal(body, &m); err != nil {
			break
		}
		e, err := entryFromImmutable(&m)
		if err != nil || e.id != int64(len(entries))+1 {
			break
		}
		entries = append(entries, e)
		off += int64(uvarintLen(n)) + int64(n)
		if !e.groupNext() {
			good, complete = off, len(entries)
		}
	}
	entries = entries[:complete]
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, nil, err
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, nil, err
	}
	return &walFile{f: f}, entries, nil
}

func uvarintLen(x uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], x)
}
