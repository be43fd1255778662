package sim

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"google.golang.org/protobuf/proto"
)

const (
	defaultDB        = "default"
	defaultPartition = "_default"
	maxDim           = 32768
	maxShards        = 16
	maxVarcharLen    = 65535
)

type database struct {
	id      int64
	name    string
	created uint64
	props   []*commonpb.KeyValuePair
	colls   map[string]*collection
	aliases map[string]*collection
}

type partition struct {
	id      int64
	name    string
	created uint64
	loaded  bool
}

type indexInfo struct {
	id      int64
	name    string
	field   *fieldInfo
	params  []*commonpb.KeyValuePair
	metric  string // vector indexes
	created uint64
}

// collection is the catalog entry of a collection. Its immutable parts
// (fields, pk, pchannels, data) are read without locks; the rest is guarded by
// catalog.mu.
type collection struct {
	id          int64
	db          *database
	name        string
	schema      *schemapb.CollectionSchema // as DescribeCollection returns it
	fields      []*fieldInfo               // stored fields, $meta included
	byName      map[string]*fieldInfo
	pk          *fieldInfo
	dyn         *fieldInfo
	shards      int32
	pchIdx      []int // pchannel index of each shard
	vchannels   []string
	consistency commonpb.ConsistencyLevel
	props       []*commonpb.KeyValuePair
	created     uint64
	updated     uint64
	parts       map[string]*partition
	partByID    map[int64]*partition
	indexes     map[string]*indexInfo
	loaded      bool
	aliases     map[string]bool
	data        *collData
}

// catalog is the cluster's metadata.
type catalog struct {
	mu    sync.RWMutex
	dbs   map[string]*database
	colls map[int64]*collection
}

func newCatalog() *catalog {
	c := &catalog{dbs: make(map[string]*database), colls: make(map[int64]*collection)}
	c.dbs[defaultDB] = &database{id: 1, name: defaultDB, colls: map[string]*collection{}, aliases: map[string]*collection{}}
	return c
}

// resolveLocked finds a collection by name or alias. Caller holds mu.
func (c *catalog) resolveLocked(db, name string) (*collection, error) {
	d, ok := c.dbs[db]
	if !ok {
		return nil, errDatabaseNotFound(db)
	}
	if coll, ok := d.colls[name]; ok {
		return coll, nil
	}
	if coll, ok := d.aliases[name]; ok {
		return coll, nil
	}
	return nil, errCollectionNotFound(db, name)
}

func (c *catalog) resolve(db, name string) (*collection, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.resolveLocked(db, name)
}

// collectionLocked finds db and, by its own name (not an alias), one of its
// collections. Caller holds mu.
func (c *catalog) collectionLocked(db, name string) (*database, *collection, error) {
	d := c.dbs[db]
	if d == nil {
		return nil, nil, errDatabaseNotFound(db)
	}
	coll := d.colls[name]
	if coll == nil {
		return nil, nil, errCollectionNotFound(db, name)
	}
	return d, coll, nil
}

// inspect resolves db/name and runs check (when not nil) on the collection,
// both under the read lock, so that check sees the catalog as resolved.
func (c *catalog) inspect(db, name string, check func(coll *collection) error) (*collection, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	coll, err := c.resolveLocked(db, name)
	if err == nil && check != nil {
		err = check(coll)
	}
	return coll, err
}

func validName(kind, name string) error {
	if name == "" {
		return errParam("%s name should not be empty", kind)
	}
	if len(name) > 255 {
		return errParam("the length of a %s name must be less than 255 characters", kind)
	}
	first := name[0]
	if !(first == '_' || first >= 'a' && first <= 'z' || first >= 'A' && first <= 'Z') {
		return errParam("the first character of a %s name must be an underscore or letter, got %q", kind, name)
	}
	for _, r := range name {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return errParam("%s name %q can only contain numbers, letters and underscores", kind, name)
		}
	}
	return nil
}

func kvGet(kvs []*commonpb.KeyValuePair, key string) (string, bool) {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return kv.GetValue(), true
		}
	}
	return "", false
}

// buildFields validates a user schema the way Milvus's proxy validates
// CreateCollection, assigns field ids (100, 101, ...) and returns the stored
// fields, the schema as DescribeCollection returns it, the pk and the dynamic
// field.
func buildFields(name string, schema *schemapb.CollectionSchema) ([]*fieldInfo, *schemapb.CollectionSchema, *fieldInfo, *fieldInfo, error) {
	if schema.GetName() != "" && schema.GetName() != name {
		return nil, nil, nil, nil, errParam("collection name [%s] not matches schema name [%s]", name, schema.GetName())
	}
	if len(schema.GetFields()) == 0 {
		return nil, nil, nil, nil, errParam("schema of collection %s has no fields", name)
	}
	if len(schema.GetFunctions()) > 0 || len(schema.GetStructArrayFields()) > 0 {
		return nil, nil, nil, nil, errUnsupported("functions and struct array fields")
	}
	desc := proto.Clone(schema).(*schemapb.CollectionSchema)
	desc.Name = name
	var fields []*fieldInfo
	var pk, dyn *fieldInfo
	seen := map[string]bool{}
	vectors := 0
	for i, fs := range desc.Fields {
		if fs.GetIsDynamic() {
			return nil, nil, nil, nil, errParam("the dynamic field is added by Milvus; set enable_dynamic_field instead of declaring %s", fs.GetName())
		}
		if err := validName("field", fs.GetName()); err != nil {
			return nil, nil, nil, nil, err
		}
		if seen[fs.GetName()] {
			return nil, nil, nil, nil, errParam("duplicated field name %s", fs.GetName())
		}
		seen[fs.GetName()] = true
		if fs.GetNullable() || fs.GetDefaultValue() != nil {
			return nil, nil, nil, nil, errUnsupported("nullable fields and default values (field %s)", fs.GetName())
		}
		fs.FieldID = int64(100 + i)
		f := &fieldInfo{id: fs.FieldID, name: fs.GetName(), typ: fs.GetDataType(), pk: fs.GetIsPrimaryKey(), autoID: fs.GetAutoID() || (fs.GetIsPrimaryKey() && desc.GetAutoID()), pos: len(fields), schema: fs}
		switch f.typ {
		case schemapb.DataType_Bool, schemapb.DataType_Int8, schemapb.DataType_Int16, schemapb.DataType_Int32,
			schemapb.DataType_Int64, schemapb.DataType_Float, schemapb.DataType_Double, schemapb.DataType_JSON:
		case schemapb.DataType_VarChar, schemapb.DataType_String:
			v, ok := kvGet(fs.GetTypeParams(), "max_length")
			if !ok {
				return nil, nil, nil, nil, errParam("type param(max_length) should be specified for the field(%s) of collection %s", f.name, name)
			}
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 || n > maxVarcharLen {
				return nil, nil, nil, nil, errParam("the maximum length specified for the field(%s) should be in (0, %d], but got %s", f.name, maxVarcharLen, v)
			}
			f.maxLen = n
		case schemapb.DataType_FloatVector:
			v, ok := kvGet(fs.GetTypeParams(), "dim")
			if !ok {
				return nil, nil, nil, nil, errParam("dimension is not defined in field type params of %s", f.name)
			}
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 || n > maxDim {
				return nil, nil, nil, nil, errParam("invalid dimension: %s of field %s. should be in range 1 ~ %d", v, f.name, maxDim)
			}
			f.dim = n
			vectors++
		default:
			return nil, nil, nil, nil, errUnsupported("field %s of type %s", f.name, f.typ)
		}
		if f.pk {
			if pk != nil {
				return nil, nil, nil, nil, errParam("there are more than one primary key, field name = %s, %s", pk.name, f.name)
			}
			if f.typ != schemapb.DataType_Int64 && f.typ != schemapb.DataType_VarChar {
				return nil, nil, nil, nil, errParam("the data type of primary key should be Int64 or VarChar")
			}
			if f.autoID && f.typ != schemapb.DataType_Int64 {
				return nil, nil, nil, nil, errUnsupported("autoID on a VarChar primary key")
			}
			pk = f
			fs.AutoID = f.autoID
		} else if fs.GetAutoID() {
			return nil, nil, nil, nil, errParam("only primary field can speficy AutoID with true, field name = %s", f.name)
		}
		fields = append(fields, f)
	}
	if pk == nil {
		return nil, nil, nil, nil, errParam("primary key is not specified")
	}
	if vectors == 0 {
		return nil, nil, nil, nil, errParam("schema does not contain vector field")
	}
	desc.AutoID = pk.autoID
	if desc.GetEnableDynamicField() {
		fs := &schemapb.FieldSchema{FieldID: int64(100 + len(desc.Fields)), Name: dynamicFieldName, DataType: schemapb.DataType_JSON, IsDynamic: true}
		dyn = &fieldInfo{id: fs.FieldID, name: dynamicFieldName, typ: schemapb.DataType_JSON, dynamic: true, pos: len(fields), schema: fs}
		fields = append(fields, dyn)
	}
	return fields, desc, pk, dyn, nil
}

// vchannelName is Milvus's virtual channel name: <pchannel>_<collectionID>v<shard>.
func vchannelName(pchannel string, collID int64, shard int) string {
	return fmt.Sprintf("%s_%dv%d", pchannel, collID, shard)
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

func splitInts(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	out := make([]int, len(parts))
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// vectorMetric is the metric of the index on a vector field, "" when none.
func (c *collection) vectorMetricLocked(f *fieldInfo) string {
	for _, idx := range c.indexes {
		if idx.field == f {
			return idx.metric
		}
	}
	return ""
}

func (c *collection) indexOnLocked(f *fieldInfo) *indexInfo {
	for _, idx := range c.indexes {
		if idx.field == f {
			return idx
		}
	}
	return nil
}

func (c *collection) sortedPartitionsLocked() []*partition {
	ps := make([]*partition, 0, len(c.parts))
	for _, p := range c.parts {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].id < ps[j].id })
	return ps
}

func (c *collection) aliasListLocked() []string {
	out := make([]string, 0, len(c.aliases))
	for a := range c.aliases {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

func (c *collection) vectorFields() []*fieldInfo {
	var out []*fieldInfo
	for _, f := range c.fields {
		if f.isVector() {
			out = append(out, f)
		}
	}
	return out
}

func (c *collection) exprEnv(tmpl map[string]*schemapb.TemplateValue) *exprEnv {
	return &exprEnv{fields: c.byName, dyn: c.dyn, tmpl: tmpl}
}
