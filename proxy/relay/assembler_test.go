package relay

import (
	"bytes"
	"testing"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/proxy/rawmsg"
)

// TestMsgAssemblerGrowsWithBytes: a length prefix claiming far more than
// arrives costs what arrived, not what it claims.
func TestMsgAssemblerGrowsWithBytes(t *testing.T) {
	var a msgAssembler
	msgs, err := a.append(append([]byte{0, 0x0f, 0xff, 0xff, 0xff}, make([]byte, 1024)...), 256<<20)
	if err != nil || len(msgs) != 0 {
		t.Fatalf("%v %v", msgs, err)
	}
	if c := cap(a.body); c > 1<<20 {
		t.Fatalf("a 255 MiB claim with 1 KiB sent holds %d bytes", c)
	}
	// A message whose bytes come in pieces is whole at the end.
	a = msgAssembler{}
	want := make([]byte, 300<<10)
	for i := range want {
		want[i] = byte(i * 7)
	}
	in := append([]byte{0, 0, 0x04, 0xb0, 0x00}, want...)
	var got []*rawmsg.Msg
	for len(in) > 0 {
		n := min(len(in), 1000)
		m, err := a.append(in[:n], 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m...)
		in = in[n:]
	}
	if len(got) != 1 || !bytes.Equal(got[0].Bytes(), want) {
		t.Fatalf("got %d messages", len(got))
	}
}
