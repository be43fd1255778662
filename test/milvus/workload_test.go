package milvus_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/milvus-io/milvus/client/v2/column"
	"github.com/milvus-io/milvus/client/v2/entity"
	"github.com/milvus-io/milvus/client/v2/index"
	"github.com/milvus-io/milvus/client/v2/milvusclient"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/testenv"
)

// The workload: wlRows rows of wlDim floats in batches of wlBatch, indexed
// IVF_FLAT with wlNlist lists; then deletes (by ids and by expression) and
// upserts (wlUpserted existing rows from wlUpsertBase get new vectors,
// tags and titles; wlNewRows new rows from wlRows).
const (
	wlRows       = 20_000
	wlDim        = 128
	wlNlist      = 128
	wlBatch      = 2_000
	wlTopK       = 10
	wlTags       = 16
	wlUpsertBase = 5_000
	wlUpserted   = 500
	wlNewRows    = 100
	// wlDeleteExpr deletes, after the deletes by id, some of the last
	// rows (version 0 tags are id % wlTags).
	wlDeleteExpr = "tag == 7 and id >= 19000"
	// gracefulTime is Milvus's common.gracefulTime (default 5000 ms): a
	// Bounded read's guarantee is that far behind now.
	gracefulTime = 5 * time.Second
)

// wlDeletedByID: the rows deleted by primary key.
func wlDeletedByID(id int64) bool { return id%10 == 3 && id < wlUpsertBase }

// wlVec is row id's vector in version ver (0: inserted, 1: upserted; 99:
// query vectors that are no row): deterministic, uniform in [0, 1).
func wlVec(id int64, ver uint64) []float32 {
	r := rand.New(rand.NewPCG(uint64(id), ver))
	v := make([]float32, wlDim)
	for i := range v {
		v[i] = r.Float32()
	}
	return v
}

func wlTag(id int64, ver uint64) int64    { return id%wlTags + 100*int64(ver) }
func wlTitle(id int64, ver uint64) string { return fmt.Sprintf("t%d-v%d", id, ver) }

// wlData is the insert or upsert option for ids in version ver.
func wlData(coll string, ids []int64, ver uint64) milvusclient.InsertOption {
	tags := make([]int64, len(ids))
	titles := make([]string, len(ids))
	vecs := make([][]float32, len(ids))
	for i, id := range ids {
		tags[i], titles[i], vecs[i] = wlTag(id, ver), wlTitle(id, ver), wlVec(id, ver)
	}
	return milvusclient.NewColumnBasedInsertOption(coll,
		column.NewColumnInt64("id", ids),
		column.NewColumnInt64("tag", tags),
		column.NewColumnVarChar("title", titles),
		column.NewColumnFloatVector("vec", wlDim, vecs))
}

func idRange(from, to int64) []int64 {
	ids := make([]int64, 0, to-from)
	for id := from; id < to; id++ {
		ids = append(ids, id)
	}
	return ids
}

// wlLive is the expected end state: live row id -> its version.
func wlLive() map[int64]uint64 {
	live := map[int64]uint64{}
	for id := range int64(wlRows) {
		if !wlDeletedByID(id) {
			live[id] = 0
		}
	}
	for id := range live {
		if id >= 19000 && wlTag(id, 0) == 7 {
			delete(live, id)
		}
	}
	for id := int64(wlUpsertBase); id < wlUpsertBase+wlUpserted; id++ {
		live[id] = 1
	}
	for id := int64(wlRows); id < wlRows+wlNewRows; id++ {
		live[id] = 1
	}
	return live
}

// phaseTimes are the durations of one writer's phases.
type phaseTimes struct {
	insert, flush, index, load, del, upsert time.Duration
}

func (p phaseTimes) String() string {
	return fmt.Sprintf("insert %v, flush %v, index %v, load %v, delete %v, upsert %v",
		p.insert.Round(time.Millisecond), p.flush.Round(time.Millisecond), p.index.Round(time.Millisecond),
		p.load.Round(time.Millisecond), p.del.Round(time.Millisecond), p.upsert.Round(time.Millisecond))
}

// writeWorkload creates coll through c and runs every write of the
// workload through c.
func writeWorkload(ctx context.Context, t *testing.T, c *milvusclient.Client, coll string) phaseTimes {
	t.Helper()
	var pt phaseTimes
	schema := entity.NewSchema().WithName(coll).
		WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
		WithField(entity.NewField().WithName("tag").WithDataType(entity.FieldTypeInt64)).
		WithField(entity.NewField().WithName("title").WithDataType(entity.FieldTypeVarChar).WithMaxLength(64)).
		WithField(entity.NewField().WithName("vec").WithDataType(entity.FieldTypeFloatVector).WithDim(wlDim))
	if err := c.CreateCollection(ctx, milvusclient.NewCreateCollectionOption(coll, schema).
		WithConsistencyLevel(entity.ClBounded)); err != nil {
		t.Fatalf("create collection %s: %v", coll, err)
	}
	step := func(d *time.Duration, what string, f func() error) {
		t.Helper()
		t0 := time.Now()
		if err := f(); err != nil {
			t.Fatalf("%s %s: %v", what, coll, err)
		}
		*d += time.Since(t0)
	}
	for from := int64(0); from < wlRows; from += wlBatch {
		step(&pt.insert, "insert into", func() error {
			res, err := c.Insert(ctx, wlData(coll, idRange(from, from+wlBatch), 0))
			if err == nil && res.InsertCount != wlBatch {
				err = fmt.Errorf("inserted %d rows, want %d", res.InsertCount, wlBatch)
			}
			return err
		})
	}
	// Seal the segments so the index is built on them (a growing segment
	// is searched without it).
	step(&pt.flush, "flush", func() error {
		task, err := c.Flush(ctx, milvusclient.NewFlushOption(coll))
		if err != nil {
			return err
		}
		return task.Await(ctx)
	})
	step(&pt.index, "create IVF_FLAT index on", func() error {
		task, err := c.CreateIndex(ctx, milvusclient.NewCreateIndexOption(coll, "vec", index.NewIvfFlatIndex(entity.L2, wlNlist)))
		if err != nil {
			return err
		}
		return task.Await(ctx)
	})
	step(&pt.load, "load", func() error {
		task, err := c.LoadCollection(ctx, milvusclient.NewLoadCollectionOption(coll))
		if err != nil {
			return err
		}
		return task.Await(ctx)
	})
	var byID []int64
	for id := range int64(wlRows) {
		if wlDeletedByID(id) {
			byID = append(byID, id)
		}
	}
	step(&pt.del, "delete by id from", func() error {
		_, err := c.Delete(ctx, milvusclient.NewDeleteOption(coll).WithInt64IDs("id", byID))
		return err
	})
	step(&pt.del, "delete by expression from", func() error {
		_, err := c.Delete(ctx, milvusclient.NewDeleteOption(coll).WithExpr(wlDeleteExpr))
		return err
	})
	for _, ids := range [][]int64{idRange(wlUpsertBase, wlUpsertBase+wlUpserted), idRange(wlRows, wlRows+wlNewRows)} {
		step(&pt.upsert, "upsert into", func() error {
			res, err := c.Upsert(ctx, wlData(coll, ids, 1).(milvusclient.UpsertOption))
			if err == nil && int(res.UpsertCount) != len(ids) {
				err = fmt.Errorf("upserted %d rows, want %d", res.UpsertCount, len(ids))
			}
			return err
		})
	}
	return pt
}

type hit struct {
	ID    int64
	Score float32
	Tag   int64
	Title string
}

type row struct {
	ID    int64
	Tag   int64
	Title string
}

// snapshot is what one client reads from one collection at one level.
type snapshot struct {
	count    int64
	exact    [][]hit // nprobe = nlist: every list, exact top k
	approx   [][]hit // nprobe 16
	filtered [][]hit // nprobe = nlist, with wlFilter
	rows     []row   // query wlRowsFilter, by id
	probe    []row   // query by ids wlProbeIDs, by id
}

const (
	wlFilter     = "tag in [1, 5, 9] and id > 1000"
	wlRowsFilter = "tag == 5 and id < 3000"
)

// wlProbeIDs: a live row, a row deleted by id, one deleted by expression,
// an upserted row, a new row, and one that never existed.
var wlProbeIDs = []int64{10, 13, 19015, 5100, 20050, 99_999}

// wlQueries are the search vectors: rows 10 (as inserted), 5100 and 20050
// (as upserted), row 13's vector (deleted), row 5100's old vector (replaced),
// and three vectors that are no row.
func wlQueries() [][]float32 {
	return [][]float32{wlVec(10, 0), wlVec(5100, 1), wlVec(20050, 1), wlVec(13, 0), wlVec(5100, 0),
		wlVec(1, 99), wlVec(2, 99), wlVec(3, 99)}
}

func readSnapshot(ctx context.Context, c *milvusclient.Client, coll string, cl entity.ConsistencyLevel) (*snapshot, error) {
	s := &snapshot{}
	rs, err := c.Query(ctx, milvusclient.NewQueryOption(coll).WithFilter("").WithOutputFields("count(*)").WithConsistencyLevel(cl))
	if err != nil {
		return nil, fmt.Errorf("count: %w", err)
	}
	if s.count, err = rs.GetColumn("count(*)").GetAsInt64(0); err != nil {
		return nil, fmt.Errorf("count: %w", err)
	}
	for _, q := range []struct {
		dst    *[][]hit
		nprobe int
		filter string
	}{{&s.exact, wlNlist, ""}, {&s.approx, 16, ""}, {&s.filtered, wlNlist, wlFilter}} {
		if *q.dst, err = search(ctx, c, coll, cl, q.nprobe, q.filter); err != nil {
			return nil, err
		}
	}
	if s.rows, err = query(ctx, c, coll, cl, wlRowsFilter); err != nil {
		return nil, err
	}
	ids := make([]string, len(wlProbeIDs))
	for i, id := range wlProbeIDs {
		ids[i] = fmt.Sprint(id)
	}
	if s.probe, err = query(ctx, c, coll, cl, "id in ["+strings.Join(ids, ", ")+"]"); err != nil {
		return nil, err
	}
	return s, nil
}

func search(ctx context.Context, c *milvusclient.Client, coll string, cl entity.ConsistencyLevel, nprobe int, filter string) ([][]hit, error) {
	qs := wlQueries()
	vecs := make([]entity.Vector, len(qs))
	for i, q := range qs {
		vecs[i] = entity.FloatVector(q)
	}
	opt := milvusclient.NewSearchOption(coll, wlTopK, vecs).WithANNSField("vec").
		WithAnnParam(index.NewIvfAnnParam(nprobe)).WithOutputFields("tag", "title").WithConsistencyLevel(cl)
	if filter != "" {
		opt = opt.WithFilter(filter)
	}
	res, err := c.Search(ctx, opt)
	if err != nil {
		return nil, fmt.Errorf("search nprobe %d filter %q: %w", nprobe, filter, err)
	}
	if len(res) != len(qs) {
		return nil, fmt.Errorf("search nprobe %d filter %q: %d result sets for %d queries", nprobe, filter, len(res), len(qs))
	}
	out := make([][]hit, len(res))
	for qi, rs := range res {
		for k := range rs.ResultCount {
			var h hit
			var err error
			if h.ID, err = rs.IDs.GetAsInt64(k); err == nil {
				if h.Tag, err = rs.GetColumn("tag").GetAsInt64(k); err == nil {
					h.Title, err = rs.GetColumn("title").GetAsString(k)
				}
			}
			if err != nil {
				return nil, fmt.Errorf("search result %d/%d: %w", qi, k, err)
			}
			h.Score = rs.Scores[k]
			out[qi] = append(out[qi], h)
		}
	}
	return out, nil
}

func query(ctx context.Context, c *milvusclient.Client, coll string, cl entity.ConsistencyLevel, filter string) ([]row, error) {
	rs, err := c.Query(ctx, milvusclient.NewQueryOption(coll).WithFilter(filter).
		WithOutputFields("id", "tag", "title").WithConsistencyLevel(cl))
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", filter, err)
	}
	out := make([]row, rs.ResultCount)
	for i := range out {
		var err error
		if out[i].ID, err = rs.GetColumn("id").GetAsInt64(i); err == nil {
			if out[i].Tag, err = rs.GetColumn("tag").GetAsInt64(i); err == nil {
				out[i].Title, err = rs.GetColumn("title").GetAsString(i)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("query %q row %d: %w", filter, i, err)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// diffHits lists the differences between two searches' results; scores
// differ when apart by more than tol (relative, at least tol absolute).
func diffHits(what string, a, b [][]hit, tol float64) []string {
	var d []string
	if len(a) != len(b) {
		return []string{fmt.Sprintf("%s: %d vs %d result sets", what, len(a), len(b))}
	}
	for qi := range a {
		if len(a[qi]) != len(b[qi]) {
			d = append(d, fmt.Sprintf("%s query %d: %d vs %d hits", what, qi, len(a[qi]), len(b[qi])))
			continue
		}
		for k := range a[qi] {
			x, y := a[qi][k], b[qi][k]
			if x.ID != y.ID || x.Tag != y.Tag || x.Title != y.Title ||
				math.Abs(float64(x.Score-y.Score)) > tol*math.Max(1, math.Abs(float64(x.Score))) {
				d = append(d, fmt.Sprintf("%s query %d rank %d: %+v vs %+v", what, qi, k, x, y))
			}
		}
	}
	return d
}

func diffRows(what string, a, b []row) []string {
	if slices.Equal(a, b) {
		return nil
	}
	return []string{fmt.Sprintf("%s: %d rows vs %d rows; only in the first %v, only in the second %v",
		what, len(a), len(b), minus(a, b), minus(b, a))}
}

// minus: up to 3 rows of a that are not in b.
func minus(a, b []row) []row {
	var out []row
	for _, r := range a {
		if !slices.Contains(b, r) && len(out) < 3 {
			out = append(out, r)
		}
	}
	return out
}

// diffSnapshots compares two reads: exact for the same collection (tol 0
// and the approximate search too), with a float tolerance and without the
// approximate search for twin collections (their IVF lists are trained
// separately, so nprobe 16 may visit different rows).
func diffSnapshots(what string, a, b *snapshot, twins bool) []string {
	var d []string
	if a.count != b.count {
		d = append(d, fmt.Sprintf("%s count: %d vs %d", what, a.count, b.count))
	}
	tol := 0.0
	if twins {
		tol = 1e-4
	} else {
		d = append(d, diffHits(what+" approx", a.approx, b.approx, tol)...)
	}
	d = append(d, diffHits(what+" exact", a.exact, b.exact, tol)...)
	d = append(d, diffHits(what+" filtered", a.filtered, b.filtered, tol)...)
	d = append(d, diffRows(what+" rows", a.rows, b.rows)...)
	d = append(d, diffRows(what+" probe", a.probe, b.probe)...)
	return d
}

// expected computes what the reads must return from the workload's own
// data: counts, rows and an exact top k by brute force (squared L2, as
// Milvus reports L2).
func expected(live map[int64]uint64) *snapshot {
	s := &snapshot{count: int64(len(live))}
	ids := make([]int64, 0, len(live))
	for id := range live {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	vecs := make([][]float32, len(ids))
	for i, id := range ids {
		vecs[i] = wlVec(id, live[id])
	}
	brute := func(pass func(id int64) bool) [][]hit {
		var out [][]hit
		for _, q := range wlQueries() {
			var hs []hit
			for i, id := range ids {
				if !pass(id) {
					continue
				}
				var d float64
				for j := range q {
					x := float64(q[j] - vecs[i][j])
					d += x * x
				}
				hs = append(hs, hit{ID: id, Score: float32(d), Tag: wlTag(id, live[id]), Title: wlTitle(id, live[id])})
			}
			sort.Slice(hs, func(a, b int) bool { return hs[a].Score < hs[b].Score })
			out = append(out, hs[:wlTopK])
		}
		return out
	}
	s.exact = brute(func(int64) bool { return true })
	s.filtered = brute(func(id int64) bool {
		tag := wlTag(id, live[id])
		return (tag == 1 || tag == 5 || tag == 9) && id > 1000
	})
	for _, id := range ids {
		if tag := wlTag(id, live[id]); tag == 5 && id < 3000 {
			s.rows = append(s.rows, row{id, tag, wlTitle(id, live[id])})
		}
	}
	for _, id := range wlProbeIDs {
		if v, ok := live[id]; ok {
			s.probe = append(s.probe, row{id, wlTag(id, v), wlTitle(id, v)})
		}
	}
	slices.SortFunc(s.probe, func(a, b row) int { return int(a.ID - b.ID) })
	return s
}

// TestWorkloadDirectAndThroughProxy runs the same data workload against a
// real Milvus twice, once directly and once through `serve`, each on its
// own collection: 20k rows of dim 128 in batches, flush, IVF_FLAT, load,
// deletes by id and by expression, upserts of existing and new rows. Then
// every read — counts, exhaustive and nprobe-16 searches, filtered
// searches, filtered queries, queries by id — at Strong, Session, Bounded
// and Eventually, by both clients on both collections, is compared: the
// same collection read directly and through the proxy must match exactly,
// the two collections must match each other (within float rounding), and
// everything must match what the workload wrote (brute-force top k).
func TestWorkloadDirectAndThroughProxy(t *testing.T) {
	m := startMilvus(t)
	px := startProxy(t, m.Addr)
	direct := testenv.Connect(t, m.Addr, nil)
	proxied := testenv.Connect(t, px.Addr, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	const dColl, pColl = "wl_direct", "wl_proxy"
	dt := writeWorkload(ctx, t, direct, dColl)
	t.Logf("writes directly:       %v", dt)
	pt := writeWorkload(ctx, t, proxied, pColl)
	t.Logf("writes through proxy:  %v", pt)
	lastWrite := time.Now()

	want := expected(wlLive())
	// Every level must see every write: a Strong read first, then past
	// Milvus's graceful time for Bounded, Session (the Go SDK sends
	// guarantee 0: no wait) and Eventually.
	for _, r := range []struct {
		c    *milvusclient.Client
		coll string
	}{{direct, dColl}, {proxied, pColl}} {
		if _, err := readSnapshot(ctx, r.c, r.coll, entity.ClStrong); err != nil {
			t.Fatalf("strong read of %s: %v", r.coll, err)
		}
	}
	time.Sleep(time.Until(lastWrite.Add(gracefulTime + time.Second)))

	var readDirect, readProxy time.Duration
	read := func(c *milvusclient.Client, coll string, cl entity.ConsistencyLevel) *snapshot {
		t.Helper()
		t0 := time.Now()
		s, err := readSnapshot(ctx, c, coll, cl)
		if err != nil {
			t.Fatalf("%v read of %s: %v", cl, coll, err)
		}
		if c == direct {
			readDirect += time.Since(t0)
		} else {
			readProxy += time.Since(t0)
		}
		return s
	}
	var diffs []string
	compared := 0
	for _, cl := range []entity.ConsistencyLevel{entity.ClStrong, entity.ClSession, entity.ClBounded, entity.ClEventually} {
		dd := read(direct, dColl, cl)
		pd := read(proxied, dColl, cl)
		pp := read(proxied, pColl, cl)
		dp := read(direct, pColl, cl)
		lv := cl.CommonConsistencyLevel().String()
		for _, c := range []struct {
			what  string
			a, b  *snapshot
			twins bool
		}{
			{lv + " " + dColl + " direct vs proxy", dd, pd, false},
			{lv + " " + pColl + " direct vs proxy", dp, pp, false},
			{lv + " direct on " + dColl + " vs proxy on " + pColl, dd, pp, true},
			{lv + " " + dColl + " vs the data written", want, dd, true},
			{lv + " " + pColl + " vs the data written", want, pp, true},
		} {
			compared++
			d := diffSnapshots(c.what, c.a, c.b, c.twins)
			// The approximate search is checked against the written data
			// only for what any search must hold: no deleted or
			// replaced row, ascending scores.
			if c.a == want {
				d = append(d, checkApprox(c.what, c.b.approx, wlLive())...)
			}
			diffs = append(diffs, d...)
		}
	}
	t.Logf("reads (per client: 4 levels × 2 collections, each 3 searches of nq %d and 3 queries): directly %v, through the proxy %v",
		len(wlQueries()), readDirect.Round(time.Millisecond), readProxy.Round(time.Millisecond))
	t.Logf("%d comparisons, %d differences; live rows %d (of %d inserted, %d upserted)",
		compared, len(diffs), want.count, wlRows, wlUpserted+wlNewRows)
	for i, d := range diffs {
		if i == 20 {
			t.Errorf("... and %d more", len(diffs)-i)
			break
		}
		t.Error(d)
	}
}

// checkApprox: every hit of an approximate search is a live row in its
// current version, and scores ascend.
func checkApprox(what string, got [][]hit, live map[int64]uint64) []string {
	var d []string
	for qi, hs := range got {
		if len(hs) != wlTopK {
			d = append(d, fmt.Sprintf("%s approx query %d: %d hits, want %d", what, qi, len(hs), wlTopK))
		}
		for k, h := range hs {
			v, ok := live[h.ID]
			if !ok || h.Tag != wlTag(h.ID, v) || h.Title != wlTitle(h.ID, v) {
				d = append(d, fmt.Sprintf("%s approx query %d rank %d: %+v is not a live row", what, qi, k, h))
			}
			if k > 0 && hs[k-1].Score > h.Score {
				d = append(d, fmt.Sprintf("%s approx query %d rank %d: scores not ascending", what, qi, k))
			}
		}
	}
	return d
}
