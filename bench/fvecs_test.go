package bench

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestFvecsRoundTrip(t *testing.T) {
	want := [][]float32{{1, 2, 3}, {-0.5, float32(math.Pi), 1e-7}, {0, 0, math.MaxFloat32}}
	path := filepath.Join(t.TempDir(), "v.fvecs")
	var buf bytes.Buffer
	if err := WriteFvecs(&buf, want); err != nil {
		t.Fatal(err)
	}
	// 3 vectors * (4-byte dim + 3*4 bytes).
	if buf.Len() != 3*16 {
		t.Fatalf("file is %d bytes, want 48", buf.Len())
	}
	// Check the header by hand, independently of the reader.
	if d := binary.LittleEndian.Uint32(buf.Bytes()[:4]); d != 3 {
		t.Fatalf("first dimension field = %d, want 3", d)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFvecsFile(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}
	got, err = ReadFvecsFile(path, 2)
	if err != nil || len(got) != 2 {
		t.Fatalf("limit 2: got %d vectors, err %v", len(got), err)
	}
}

func TestFvecsErrors(t *testing.T) {
	le := func(vals ...uint32) []byte {
		var b []byte
		for _, v := range vals {
			b = binary.LittleEndian.AppendUint32(b, v)
		}
		return b
	}
	one := math.Float32bits(1)
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"truncated values", le(3, one, one), "vector 0: reading 3 values"},
		{"truncated header", append(le(1, one), 1, 0), "vector 1: reading dimension"},
		{"zero dimension", le(0), "bad dimension 0"},
		{"negative dimension", le(0xffffffff), "bad dimension -1"},
		{"mixed dimensions", le(1, one, 2, one, one), "dimension 2 differs from the file's 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewFvecsReader(bytes.NewReader(tt.data))
			var err error
			for err == nil {
				_, err = r.Next()
			}
			if errors.Is(err, io.EOF) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
	if _, err := ReadFvecsFile(filepath.Join(t.TempDir(), "empty"), 0); err == nil {
		t.Fatal("missing file: no error")
	}
	empty := filepath.Join(t.TempDir(), "empty.fvecs")
	os.WriteFile(empty, nil, 0o600)
	if _, err := ReadFvecsFile(empty, 0); err == nil || !strings.Contains(err.Error(), "no vectors") {
		t.Fatalf("empty file: err = %v", err)
	}
}
