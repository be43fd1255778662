package proxy

import (
	"errors"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// Only the few fields routing needs are read from a message, with
// protowire, in one pass over its top level: a bytes field (vectors,
// placeholder groups, column data) is skipped by its length prefix, never
// copied or parsed.

var errMalformed = errors.New("malformed protobuf message")

// readFields are what routing reads from a request.
type readFields struct {
	db, coll   []byte // aliases into the message; copy before keeping
	level      int32
	guarantee  uint64
	useDefault bool
	iterator   bool
}

// scanRequest reads the fields m's layout names from a request.
func scanRequest(b []byte, l *layout, out *readFields) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
		switch {
		case typ == protowire.BytesType && (num == l.db || num == l.coll || num == l.params):
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errMalformed
			}
			b = b[n:]
			switch num {
			case l.db:
				out.db = v
			case l.coll:
				if !l.collRepeated {
					out.coll = v
				}
			case l.params:
				if isIteratorParam(v) {
					out.iterator = true
				}
			}
			continue
		case typ == protowire.VarintType && (num == l.level || num == l.guarantee || num == l.useDefault):
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return errMalformed
			}
			b = b[n:]
			switch num {
			case l.level:
				out.level = int32(v)
			case l.guarantee:
				out.guarantee = v
			case l.useDefault:
				out.useDefault = v != 0
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
	}
	return nil
}

// isIteratorParam reports whether a commonpb.KeyValuePair is
// iterator=true, the mark the SDKs put on iterator pages.
func isIteratorParam(kv []byte) bool {
	var key, val []byte
	for len(kv) > 0 {
		num, typ, n := protowire.ConsumeTag(kv)
		if n < 0 {
			return false
		}
		kv = kv[n:]
		if typ == protowire.BytesType && (num == 1 || num == 2) {
			v, n := protowire.ConsumeBytes(kv)
			if n < 0 {
				return false
			}
			kv = kv[n:]
			if num == 1 {
				key = v
			} else {
				val = v
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, kv)
		if n < 0 {
			return false
		}
		kv = kv[n:]
	}
	return string(key) == "iterator" && strings.EqualFold(string(val), "true")
}

// appendConsistency appends consistency_level, guarantee_timestamp and
// use_default_consistency=false to dst. Appended to a message, they
// override the fields it carries (proto3: the last value of a scalar field
// wins), so the original bytes are forwarded untouched.
func appendConsistency(dst []byte, l *layout, level int32, guarantee uint64) []byte {
	if l.level != 0 {
		dst = protowire.AppendTag(dst, l.level, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(level))
	}
	if l.guarantee != 0 {
		dst = protowire.AppendTag(dst, l.guarantee, protowire.VarintType)
		dst = protowire.AppendVarint(dst, guarantee)
	}
	if l.useDefault != 0 {
		dst = protowire.AppendTag(dst, l.useDefault, protowire.VarintType)
		dst = protowire.AppendVarint(dst, 0)
	}
	return dst
}

// milvusStatus is the part of a commonpb.Status routing looks at.
type milvusStatus struct {
	errorCode int32 // legacy commonpb.ErrorCode (field 1)
	code      int32 // merr code (field 3)
}

func (s milvusStatus) ok() bool { return s.errorCode == 0 && s.code == 0 }

// commonpb.Status field numbers.
const (
	statusErrorCodeField = 1
	statusReasonField    = 2
	statusCodeField      = 3
)

func scanStatus(b []byte) (milvusStatus, bool) {
	var st milvusStatus
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return st, false
		}
		b = b[n:]
		if typ == protowire.VarintType && (num == statusErrorCodeField || num == statusCodeField) {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return st, false
			}
			b = b[n:]
			if num == statusErrorCodeField {
				st.errorCode = int32(v)
			} else {
				st.code = int32(v)
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return st, false
		}
		b = b[n:]
	}
	return st, true
}

// scanResponse reads the Milvus status of a response and, when tsField is
// set, a top-level varint such as MutationResult.timestamp. A response
// without a status field counts as a success, as Milvus's SDKs read it.
func scanResponse(b []byte, l *layout) (st milvusStatus, ts uint64, ok bool) {
	if l.statusField == statusIsMessage {
		st, ok = scanStatus(b)
		return st, 0, ok
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return st, ts, false
		}
		b = b[n:]
		switch {
		case num == l.statusField && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return st, ts, false
			}
			b = b[n:]
			if st, ok = scanStatus(v); !ok {
				return st, ts, false
			}
			if l.tsField == 0 {
				// The status is all we need; it comes first in
				// every Milvus response, so this returns at once.
				return st, ts, true
			}
			continue
		case num == l.tsField && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return st, ts, false
			}
			b = b[n:]
			ts = v
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return st, ts, false
		}
		b = b[n:]
	}
	return st, ts, true
}

// ddlTargets reads the names a DDL request affects, for cache
// invalidation: the database, and every collection or alias name field.
func ddlTargets(b []byte, l *layout, fn func(db, name []byte)) {
	var db []byte
	var names [4][]byte
	k := 0
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return
		}
		b = b[n:]
		if typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return
			}
			b = b[n:]
			if num == l.db {
				db = v
			} else if k < len(names) && l.isNameField(num) {
				names[k] = v
				k++
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return
		}
		b = b[n:]
	}
	if k == 0 {
		fn(db, nil)
		return
	}
	for _, name := range names[:k] {
		fn(db, name)
	}
}

// appendStatusResponse builds a response whose only field is a Milvus
// status (the whole message when the response type is commonpb.Status).
func appendStatusResponse(dst []byte, l *layout, errorCode, code int32, reason string) []byte {
	var st []byte
	st = protowire.AppendTag(st, statusErrorCodeField, protowire.VarintType)
	st = protowire.AppendVarint(st, uint64(int64(errorCode)))
	st = protowire.AppendTag(st, statusReasonField, protowire.BytesType)
	st = protowire.AppendString(st, reason)
	st = protowire.AppendTag(st, statusCodeField, protowire.VarintType)
	st = protowire.AppendVarint(st, uint64(int64(code)))
	if l.statusField == statusIsMessage {
		return append(dst, st...)
	}
	dst = protowire.AppendTag(dst, l.statusField, protowire.BytesType)
	return protowire.AppendBytes(dst, st)
}
