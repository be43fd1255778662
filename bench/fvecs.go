package bench

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
)

// FvecsReader reads the .fvecs format of the TEXMEX corpora (SIFT, GIST):
// each vector is a little-endian int32 dimension d followed by d
// little-endian float32 values. Every vector of a file must have the same
// dimension.
type FvecsReader struct {
	r   *bufio.Reader
	dim int
	n   int // vectors read so far
	buf []byte
}

// NewFvecsReader reads vectors from r.
func NewFvecsReader(r io.Reader) *FvecsReader {
	return &FvecsReader{r: bufio.NewReaderSize(r, 1<<16)}
}

// maxFvecsDim bounds the dimension a file may declare, so a corrupt header
// cannot make us allocate gigabytes. Milvus's own limit is 32768.
const maxFvecsDim = 32768

// Next returns the next vector, or io.EOF after the last one. A file that
// ends inside a vector, a non-positive or oversized dimension, or a
// dimension different from the first vector's is an error naming the
// vector's index.
func (f *FvecsReader) Next() ([]float32, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(f.r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("fvecs: vector %d: reading dimension: %w", f.n, err)
	}
	d := int(int32(binary.LittleEndian.Uint32(hdr[:])))
	if d <= 0 || d > maxFvecsDim {
		return nil, fmt.Errorf("fvecs: vector %d: bad dimension %d", f.n, d)
	}
	if f.dim == 0 {
		f.dim = d
	} else if d != f.dim {
		return nil, fmt.Errorf("fvecs: vector %d: dimension %d differs from the file's %d", f.n, d, f.dim)
	}
	if cap(f.buf) < 4*d {
		f.buf = make([]byte, 4*d)
	}
	buf := f.buf[:4*d]
	if _, err := io.ReadFull(f.r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("fvecs: vector %d: reading %d values: %w", f.n, d, err)
	}
	v := make([]float32, d)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*i:]))
	}
	f.n++
	return v, nil
}

// Dim is the dimension of the vectors read so far (0 before the first).
func (f *FvecsReader) Dim() int { return f.dim }

// ReadFvecsFile reads up to limit vectors (all when limit <= 0) of the
// .fvecs file at path.
func ReadFvecsFile(path string, limit int) ([][]float32, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening fvecs file: %w", err)
	}
	defer fh.Close()
	r := NewFvecsReader(fh)
	var out [][]float32
	for limit <= 0 || len(out) < limit {
		v, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: fvecs: no vectors", path)
	}
	return out, nil
}

// WriteFvecs writes vectors in .fvecs format (for tests and for saving a
// generated data set so other tools can load the same vectors).
func WriteFvecs(w io.Writer, vecs [][]float32) error {
	bw := bufio.NewWriter(w)
	var b [4]byte
	for _, v := range vecs {
		binary.LittleEndian.PutUint32(b[:], uint32(len(v)))
		if _, err := bw.Write(b[:]); err != nil {
			return err
		}
		for _, x := range v {
			binary.LittleEndian.PutUint32(b[:], math.Float32bits(x))
			if _, err := bw.Write(b[:]); err != nil {
				return err
			}
		}
	}
	return bw.Flush()
}
