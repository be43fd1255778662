package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"math"
	"sort"
	"strconv"
	"sync"

	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
)

// dynamicFieldName is the name Milvus gives the hidden JSON field that holds
// the keys of a dynamic-schema collection that are not in its schema.
const dynamicFieldName = "$meta"

// fieldInfo is one stored field of a collection.
type fieldInfo struct {
	id      int64
	name    string
	typ     schemapb.DataType
	pk      bool
	autoID  bool
	dynamic bool
	dim     int
	maxLen  int
	pos     int // index into collData.cols
	schema  *schemapb.FieldSchema
}

func (f *fieldInfo) isVector() bool { return f.typ == schemapb.DataType_FloatVector }

// column holds one field's values for every row, typed.
type column struct {
	typ schemapb.DataType
	i64 []int64   // Int8, Int16, Int32, Int64
	f32 []float32 // Float
	f64 []float64 // Double
	b   []bool
	s   []string
	raw [][]byte // JSON as inserted
	js  []any    // JSON parsed (numbers as json.Number)
	dim int
	vec []float32 // dim values per row
	inv []float32 // 1/||v|| per row, 0 for the zero vector (COSINE)
}

func newColumn(f *fieldInfo) *column { return &column{typ: f.typ, dim: f.dim} }

func (c *column) len() int {
	switch c.typ {
	case schemapb.DataType_Bool:
		return len(c.b)
	case schemapb.DataType_Int8, schemapb.DataType_Int16, schemapb.DataType_Int32, schemapb.DataType_Int64:
		return len(c.i64)
	case schemapb.DataType_Float:
		return len(c.f32)
	case schemapb.DataType_Double:
		return len(c.f64)
	case schemapb.DataType_VarChar, schemapb.DataType_String:
		return len(c.s)
	case schemapb.DataType_JSON:
		return len(c.raw)
	case schemapb.DataType_FloatVector:
		if c.dim == 0 {
			return 0
		}
		return len(c.vec) / c.dim
	}
	return 0
}

func (c *column) appendFrom(src *column, row int) {
	switch c.typ {
	case schemapb.DataType_Bool:
		c.b = append(c.b, src.b[row])
	case schemapb.DataType_Int8, schemapb.DataType_Int16, schemapb.DataType_Int32, schemapb.DataType_Int64:
		c.i64 = append(c.i64, src.i64[row])
	case schemapb.DataType_Float:
		c.f32 = append(c.f32, src.f32[row])
	case schemapb.DataType_Double:
		c.f64 = append(c.f64, src.f64[row])
	case schemapb.DataType_VarChar, schemapb.DataType_String:
		c.s = append(c.s, src.s[row])
	case schemapb.DataType_JSON:
		c.raw = append(c.raw, src.raw[row])
		c.js = append(c.js, src.js[row])
	case schemapb.DataType_FloatVector:
		v := src.vec[row*c.dim : (row+1)*c.dim]
		c.vec = append(c.vec, v...)
		c.inv = append(c.inv, invNorm(v))
	}
}

func invNorm(v []float32) float32 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	if s == 0 {
		return 0
	}
	return float32(1 / math.Sqrt(s))
}

// fieldData renders the given rows of c as Milvus FieldData.
func (c *column) fieldData(f *fieldInfo, rows []int32) *schemapb.FieldData {
	fd := &schemapb.FieldData{Type: f.typ, FieldName: f.name, FieldId: f.id, IsDynamic: f.dynamic}
	switch f.typ {
	case schemapb.DataType_Bool:
		d := pick(c.b, rows)
		fd.Field = scalars(&schemapb.ScalarField{Data: &schemapb.ScalarField_BoolData{BoolData: &schemapb.BoolArray{Data: d}}})
	case schemapb.DataType_Int8, schemapb.DataType_Int16, schemapb.DataType_Int32:
		d := make([]int32, len(rows))
		for i, r := range rows {
			d[i] = int32(c.i64[r])
		}
		fd.Field = scalars(&schemapb.ScalarField{Data: &schemapb.ScalarField_IntData{IntData: &schemapb.IntArray{Data: d}}})
	case schemapb.DataType_Int64:
		d := pick(c.i64, rows)
		fd.Field = scalars(&schemapb.ScalarField{Data: &schemapb.ScalarField_LongData{LongData: &schemapb.LongArray{Data: d}}})
	case schemapb.DataType_Float:
		d := pick(c.f32, rows)
		fd.Field = scalars(&schemapb.ScalarField{Data: &schemapb.ScalarField_FloatData{FloatData: &schemapb.FloatArray{Data: d}}})
	case schemapb.DataType_Double:
		d := pick(c.f64, rows)
		fd.Field = scalars(&schemapb.ScalarField{Data: &schemapb.ScalarField_DoubleData{DoubleData: &schemapb.DoubleArray{Data: d}}})
	case schemapb.DataType_VarChar, schemapb.DataType_String:
		d := pick(c.s, rows)
		fd.Field = scalars(&schemapb.ScalarField{Data: &schemapb.ScalarField_StringData{StringData: &schemapb.StringArray{Data: d}}})
	case schemapb.DataType_JSON:
		d := pick(c.raw, rows)
		fd.Field = scalars(&schemapb.ScalarField{Data: &schemapb.ScalarField_JsonData{JsonData: &schemapb.JSONArray{Data: d}}})
	case schemapb.DataType_FloatVector:
		d := make([]float32, 0, len(rows)*c.dim)
		for _, r := range rows {
			d = append(d, c.vec[int(r)*c.dim:(int(r)+1)*c.dim]...)
		}
		fd.Field = &schemapb.FieldData_Vectors{Vectors: &schemapb.VectorField{Dim: int64(c.dim), Data: &schemapb.VectorField_FloatVector{FloatVector: &schemapb.FloatArray{Data: d}}}}
	}
	return fd
}

// dynamicSubset renders the $meta JSON of rows keeping only keys.
func (c *column) dynamicSubset(f *fieldInfo, rows []int32, keys []string) *schemapb.FieldData {
	d := make([][]byte, len(rows))
	for i, r := range rows {
		m, _ := c.js[r].(map[string]any)
		sub := make(map[string]any, len(keys))
		for _, k := range keys {
			if v, ok := m[k]; ok {
				sub[k] = v
			}
		}
		d[i], _ = json.Marshal(sub)
	}
	return &schemapb.FieldData{Type: schemapb.DataType_JSON, FieldName: f.name, FieldId: f.id, IsDynamic: true,
		Field: scalars(&schemapb.ScalarField{Data: &schemapb.ScalarField_JsonData{JsonData: &schemapb.JSONArray{Data: d}}})}
}

// pick copies the values of col at rows, in order.
func pick[T any](col []T, rows []int32) []T {
	out := make([]T, len(rows))
	for i, r := range rows {
		out[i] = col[r]
	}
	return out
}

func scalars(s *schemapb.ScalarField) *schemapb.FieldData_Scalars {
	return &schemapb.FieldData_Scalars{Scalars: s}
}

// batch is a set of rows decoded from FieldData, one column per stored field
// (schema order).
type batch struct {
	n    int
	cols []*column
}

// decodeFields validates fds against the collection's fields the way Milvus's
// proxy validates an insert, and returns the rows as columns. When the
// primary key is auto-generated, the pk column is left empty for the caller.
func decodeFields(fields []*fieldInfo, fds []*schemapb.FieldData, numRows int, allowPK bool) (*batch, error) {
	byName := make(map[string]*fieldInfo, len(fields))
	var dyn *fieldInfo
	for _, f := range fields {
		byName[f.name] = f
		if f.dynamic {
			dyn = f
		}
	}
	got := make(map[*fieldInfo]*schemapb.FieldData, len(fds))
	for _, fd := range fds {
		if fd == nil {
			return nil, errParam("nil field data")
		}
		var f *fieldInfo
		if fd.GetIsDynamic() || fd.GetFieldName() == dynamicFieldName {
			if dyn == nil {
				return nil, errParam("attempt to insert dynamic data to a collection without enabling dynamic field")
			}
			f = dyn
		} else {
			f = byName[fd.GetFieldName()]
			if f == nil || f.dynamic {
				if dyn != nil {
					return nil, errParam("field %s is not in the schema; pass dynamic keys through the dynamic field", fd.GetFieldName())
				}
				return nil, errParam("Attempt to insert an unexpected field `%s` to collection without enabling dynamic field", fd.GetFieldName())
			}
		}
		if _, dup := got[f]; dup {
			return nil, errParam("duplicated field data for field %s", f.name)
		}
		got[f] = fd
	}
	b := &batch{n: -1, cols: make([]*column, len(fields))}
	for i, f := range fields {
		col := newColumn(f)
		b.cols[i] = col
		fd, ok := got[f]
		if !ok {
			switch {
			case f.pk && f.autoID:
				continue
			case f.dynamic:
				continue // filled with {} below
			default:
				return nil, errParam("Insert missed an field `%s` to collection without set nullable==true or set default_value", f.name)
			}
		}
		if f.pk && f.autoID && !allowPK {
			return nil, errParam("can not assign primary field data when auto id enabled, field: %s", f.name)
		}
		if err := fillColumn(col, f, fd); err != nil {
			return nil, err
		}
		n := col.len()
		if b.n >= 0 && n != b.n {
			return nil, errParam("the num_rows (%d) of field (%s) is not equal to the num_rows (%d) of other fields", n, f.name, b.n)
		}
		b.n = n
	}
	if b.n < 0 {
		b.n = numRows
	}
	if numRows > 0 && b.n != numRows {
		return nil, errParam("the num_rows (%d) of the field data is not equal to the passed num_rows (%d)", b.n, numRows)
	}
	if b.n <= 0 {
		return nil, errParam("the number of rows to insert must be positive, got %d", b.n)
	}
	if dyn != nil && got[dyn] == nil {
		col := b.cols[dyn.pos]
		for i := 0; i < b.n; i++ {
			col.raw = append(col.raw, []byte("{}"))
			col.js = append(col.js, map[string]any{})
		}
	}
	return b, nil
}

func fillColumn(col *column, f *fieldInfo, fd *schemapb.FieldData) error {
	mismatch := func() error {
		return errParam("the data type of field %s is %s, but the schema type is %s", f.name, fd.GetType(), f.typ)
	}
	if fd.GetType() != f.typ && !(f.dynamic && fd.GetType() == schemapb.DataType_JSON) &&
		!(isStringType(f.typ) && isStringType(fd.GetType())) {
		return mismatch()
	}
	sc := fd.GetScalars()
	switch f.typ {
	case schemapb.DataType_Bool:
		if sc.GetBoolData() == nil {
			return mismatch()
		}
		col.b = append(col.b, sc.GetBoolData().GetData()...)
	case schemapb.DataType_Int8, schemapb.DataType_Int16, schemapb.DataType_Int32:
		if sc.GetIntData() == nil {
			return mismatch()
		}
		for _, v := range sc.GetIntData().GetData() {
			col.i64 = append(col.i64, int64(v))
		}
	case schemapb.DataType_Int64:
		if sc.GetLongData() == nil {
			return mismatch()
		}
		col.i64 = append(col.i64, sc.GetLongData().GetData()...)
	case schemapb.DataType_Float:
		if sc.GetFloatData() == nil {
			return mismatch()
		}
		for _, v := range sc.GetFloatData().GetData() {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return errParam("value of float field %s is NaN or Inf", f.name)
			}
		}
		col.f32 = append(col.f32, sc.GetFloatData().GetData()...)
	case schemapb.DataType_Double:
		if sc.GetDoubleData() == nil {
			return mismatch()
		}
		col.f64 = append(col.f64, sc.GetDoubleData().GetData()...)
	case schemapb.DataType_VarChar, schemapb.DataType_String:
		if sc.GetStringData() == nil {
			return mismatch()
		}
		for i, s := range sc.GetStringData().GetData() {
			if f.maxLen > 0 && len(s) > f.maxLen {
				return errParam("length of varchar field %s exceeds max length, row number: %d, length: %d, max length: %d", f.name, i, len(s), f.maxLen)
			}
		}
		col.s = append(col.s, sc.GetStringData().GetData()...)
	case schemapb.DataType_JSON:
		if sc.GetJsonData() == nil {
			return mismatch()
		}
		for i, raw := range sc.GetJsonData().GetData() {
			v, err := parseJSON(raw)
			if err != nil {
				return errParam("invalid JSON in field %s, row %d: %v", f.name, i, err)
			}
			if f.dynamic {
				if _, ok := v.(map[string]any); !ok {
					return errParam("dynamic field data must be a JSON object, row %d", i)
				}
			}
			col.raw = append(col.raw, raw)
			col.js = append(col.js, v)
		}
	case schemapb.DataType_FloatVector:
		vf := fd.GetVectors()
		if vf.GetFloatVector() == nil {
			return mismatch()
		}
		if int(vf.GetDim()) != f.dim {
			return errParam("the dim (%d) of field data(%s) is not equal to schema dim (%d)", vf.GetDim(), f.name, f.dim)
		}
		data := vf.GetFloatVector().GetData()
		if len(data)%f.dim != 0 {
			return errParam("the length (%d) of float data of field %s is not a multiple of dim (%d)", len(data), f.name, f.dim)
		}
		col.vec = append(col.vec, data...)
		for r := 0; r < len(data)/f.dim; r++ {
			col.inv = append(col.inv, invNorm(data[r*f.dim:(r+1)*f.dim]))
		}
	default:
		return errUnsupported("data type %s", f.typ)
	}
	return nil
}

func isStringType(t schemapb.DataType) bool {
	return t == schemapb.DataType_VarChar || t == schemapb.DataType_String
}

func parseJSON(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data after JSON value")
	}
	return v, nil
}

// subsetFieldData renders rows of b as FieldData (for a WAL message).
func (b *batch) subsetFieldData(fields []*fieldInfo, rows []int32) []*schemapb.FieldData {
	out := make([]*schemapb.FieldData, 0, len(fields))
	for i, f := range fields {
		out = append(out, b.cols[i].fieldData(f, rows))
	}
	return out
}

// pkValue is a primary key, int64 or varchar.
type pkValue struct {
	isStr bool
	i     int64
	s     string
}

func (p pkValue) String() string {
	if p.isStr {
		return strconv.Quote(p.s)
	}
	return strconv.FormatInt(p.i, 10)
}

// shardOf maps a primary key onto one of n shards, as Milvus hashes pks onto
// vchannels.
func shardOf(p pkValue, n int) int {
	if n <= 1 {
		return 0
	}
	var h uint32
	if p.isStr {
		h = crc32.ChecksumIEEE([]byte(p.s))
	} else {
		x := uint64(p.i)
		x ^= x >> 33
		x *= 0xff51afd7ed558ccd
		x ^= x >> 33
		x *= 0xc4ceb9fe1a85ec53
		x ^= x >> 33
		h = uint32(x)
	}
	return int(h % uint32(n))
}

// collData holds a collection's rows. Readers (search, query) hold mu for
// reading; appliers of WAL messages hold it briefly for writing.
type collData struct {
	mu     sync.RWMutex
	fields []*fieldInfo
	pk     *fieldInfo
	cols   []*column
	part   []int64 // partition id per row
	alive  []bool
	nAlive int
	pkInt  map[int64]int32
	pkStr  map[string]int32
}

// aliveRows is how many rows are alive (inserted, not deleted).
func (d *collData) aliveRows() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.nAlive
}

func newCollData(fields []*fieldInfo, pk *fieldInfo) *collData {
	d := &collData{fields: fields, pk: pk, cols: make([]*column, len(fields))}
	for i, f := range fields {
		d.cols[i] = newColumn(f)
	}
	if pk.typ == schemapb.DataType_Int64 {
		d.pkInt = make(map[int64]int32)
	} else {
		d.pkStr = make(map[string]int32)
	}
	return d
}

func (d *collData) rows() int { return len(d.alive) }

func (d *collData) pkAt(row int32) pkValue {
	c := d.cols[d.pk.pos]
	if d.pkInt != nil {
		return pkValue{i: c.i64[row]}
	}
	return pkValue{isStr: true, s: c.s[row]}
}

func (d *collData) lookup(p pkValue) (int32, bool) {
	if d.pkInt != nil {
		r, ok := d.pkInt[p.i]
		return r, ok
	}
	r, ok := d.pkStr[p.s]
	return r, ok
}

// insert appends b's rows in partition part. A row whose primary key already
// exists supersedes the old row: Milvus keeps both until compaction but
// every read deduplicates by primary key in favour of the latest.
func (d *collData) insert(b *batch, part int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.insertLocked(b, part)
}

// insertLocked is insert with d.mu held.
func (d *collData) insertLocked(b *batch, part int64) {
	for r := 0; r < b.n; r++ {
		row := int32(len(d.alive))
		for i, c := range d.cols {
			c.appendFrom(b.cols[i], r)
		}
		d.part = append(d.part, part)
		d.alive = append(d.alive, true)
		d.nAlive++
		p := d.pkAt(row)
		if old, ok := d.lookup(p); ok && d.alive[old] {
			d.alive[old] = false
			d.nAlive--
		}
		if d.pkInt != nil {
			d.pkInt[p.i] = row
		} else {
			d.pkStr[p.s] = row
		}
	}
}

// removeLocked deletes the rows with the given primary keys (in partition
// part, or any partition when part is 0) and reports how many existed. The
// caller holds d.mu.
func (d *collData) removeLocked(pks []pkValue, part int64) int {
	n := 0
	for _, p := range pks {
		r, ok := d.lookup(p)
		if !ok || !d.alive[r] || (part != 0 && d.part[r] != part) {
			continue
		}
		d.alive[r] = false
		d.nAlive--
		if d.pkInt != nil {
			delete(d.pkInt, p.i)
		} else {
			delete(d.pkStr, p.s)
		}
		n++
	}
	return n
}

// dropPartition deletes every row of a partition.
func (d *collData) dropPartition(part int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for r := range d.alive {
		if d.alive[r] && d.part[r] == part {
			d.alive[r] = false
			d.nAlive--
			p := d.pkAt(int32(r))
			if d.pkInt != nil {
				delete(d.pkInt, p.i)
			} else {
				delete(d.pkStr, p.s)
			}
		}
	}
}

// pksFromIDs converts schemapb.IDs into primary keys.
func pksFromIDs(ids *schemapb.IDs) []pkValue {
	var out []pkValue
	if ints := ids.GetIntId(); ints != nil {
		for _, v := range ints.GetData() {
			out = append(out, pkValue{i: v})
		}
	}
	if strs := ids.GetStrId(); strs != nil {
		for _, v := range strs.GetData() {
			out = append(out, pkValue{isStr: true, s: v})
		}
	}
	return out
}

// idsOf renders primary keys as schemapb.IDs.
func idsOf(pkType schemapb.DataType, pks []pkValue) *schemapb.IDs {
	if pkType == schemapb.DataType_Int64 {
		d := make([]int64, len(pks))
		for i, p := range pks {
			d[i] = p.i
		}
		return &schemapb.IDs{IdField: &schemapb.IDs_IntId{IntId: &schemapb.LongArray{Data: d}}}
	}
	d := make([]string, len(pks))
	for i, p := range pks {
		d[i] = p.s
	}
	return &schemapb.IDs{IdField: &schemapb.IDs_StrId{StrId: &schemapb.StringArray{Data: d}}}
}

// sortRowsByPK orders rows by primary key, as Milvus orders query results.
func (d *collData) sortRowsByPK(rows []int32) {
	c := d.cols[d.pk.pos]
	if d.pkInt != nil {
		sort.Slice(rows, func(a, b int) bool { return c.i64[rows[a]] < c.i64[rows[b]] })
		return
	}
	sort.Slice(rows, func(a, b int) bool { return c.s[rows[a]] < c.s[rows[b]] })
}
