package proxy

import "testing"

// Fuzz target for the routing's parser of untrusted bytes: request
// messages (scanRequest). Its seed corpus is in testdata/fuzz; `make
// test-fuzz` runs it for a few seconds. The relay's parsers have theirs
// in package relay.

// FuzzScanRequest: any bytes, under every method's layout, are read or
// refused, never a panic; a status and response scan likewise.
func FuzzScanRequest(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x04, 'c', 'o', 'l', 'l', 0x10, 0x01})
	f.Add(appendConsistency([]byte{0x12, 0x02, 'd', 'b'}, &layout{level: 12, guarantee: 11, useDefault: 13}, 2, 1<<40))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	methods, err := buildMethods()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, m := range methods {
			var out readFields
			if err := scanRequest(b, &m.layout, &out); err == nil {
				if len(out.db) > len(b) || len(out.coll) > len(b) {
					t.Fatalf("%s: fields longer than the message", m.name)
				}
			}
			scanResponse(b, &m.layout)
			ddlTargets(b, &m.layout, func(db, name []byte) {})
		}
		scanStatus(b)
	})
}
