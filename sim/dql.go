package sim

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"google.golang.org/protobuf/proto"
)

// gracefulTime is Milvus's common.gracefulTime: the staleness Bounded
// consistency tolerates.
const gracefulTime = 5 * time.Second

const maxTopK = 16384

// guaranteeTS turns a read's consistency level and guarantee_timestamp into
// the timestamp the read must wait for, as Milvus's proxy does
// (parseGuaranteeTsFromConsistency / parseGuaranteeTs).
func (c *Cluster) guaranteeTS(coll *collection, level commonpb.ConsistencyLevel, useDefault bool, g uint64) uint64 {
	if useDefault {
		level = coll.consistency
	}
	switch level {
	case commonpb.ConsistencyLevel_Strong:
		return c.tso.alloc()
	case commonpb.ConsistencyLevel_Bounded:
		return subPhysical(c.tso.alloc(), gracefulTime)
	case commonpb.ConsistencyLevel_Eventually:
		return 1
	}
	switch g {
	case 0:
		return c.tso.alloc()
	case 2:
		return subPhysical(c.tso.alloc(), gracefulTime)
	}
	return g
}

// readSnapshot is what a read needs from the catalog, copied under its lock.
type readSnapshot struct {
	coll  *collection
	name  string         // the collection's name at the time of the read
	parts map[int64]bool // nil: every partition
	// metric of the index on each vector field
	metrics map[*fieldInfo]string
}

func (c *Cluster) snapshotForRead(ctx context.Context, db, name string, partitions []string) (*readSnapshot, error) {
	c.cat.mu.RLock()
	defer c.cat.mu.RUnlock()
	coll, err := c.cat.resolveLocked(db, name)
	if err != nil {
		return nil, err
	}
	loaded, err := loadedLocked(coll, partitions)
	if err != nil {
		return nil, err
	}
	if !loaded {
		return nil, errCollectionNotLoaded(coll.name)
	}
	snap := &readSnapshot{coll: coll, name: coll.name, metrics: map[*fieldInfo]string{}}
	if len(partitions) > 0 {
		snap.parts = map[int64]bool{}
		for _, n := range partitions {
			snap.parts[coll.parts[n].id] = true
		}
	} else if !coll.loaded {
		snap.parts = map[int64]bool{}
		for _, p := range coll.parts {
			if p.loaded {
				snap.parts[p.id] = true
			}
		}
	}
	for _, f := range coll.vectorFields() {
		snap.metrics[f] = coll.vectorMetricLocked(f)
	}
	return snap, nil
}

// acquire takes a search slot (Options.SearchConcurrency) and returns the
// release function, which also pads the time the slot is held to
// Options.SearchMinLatency: N slots each busy at least D model a cluster of
// capacity N/D queries per second.
// consistentRead is what a read request says about the consistency it wants.
type consistentRead interface {
	GetConsistencyLevel() commonpb.ConsistencyLevel
	GetUseDefaultConsistency() bool
	GetGuaranteeTimestamp() uint64
}

// awaitRead waits until coll's pchannels are applied up to the timestamp
// req's consistency asks for, then takes a read slot (see acquire). It
// answers that timestamp and the slot's release.
func (c *Cluster) awaitRead(ctx context.Context, coll *collection, req consistentRead) (g uint64, release func(), err error) {
	g = c.guaranteeTS(coll, req.GetConsistencyLevel(), req.GetUseDefaultConsistency(), req.GetGuaranteeTimestamp())
	if err := c.waitServed(ctx, coll.pchIdx, g); err != nil {
		return 0, nil, err
	}
	if release, err = c.acquire(ctx); err != nil {
		return 0, nil, err
	}
	return g, release, nil
}

func (c *Cluster) acquire(ctx context.Context) (func(), error) {
	if c.searchSem != nil {
		select {
		case c.searchSem <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	start := time.Now()
	return func() {
		if d := c.opts.SearchMinLatency - time.Since(start); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
		if c.searchSem != nil {
			<-c.searchSem
		}
	}, nil
}

// outputPlan is the resolved output_fields of a read.
type outputPlan struct {
	fields  []*fieldInfo
	dynKeys []string
	dynAll  bool
	names   []string
	count   bool
}

func resolveOutputs(coll *collection, requested []string, query bool) (*outputPlan, error) {
	op := &outputPlan{}
	seen := map[string]bool{}
	addField := func(f *fieldInfo) {
		if !seen[f.name] {
			seen[f.name] = true
			op.fields = append(op.fields, f)
			op.names = append(op.names, f.name)
		}
	}
	for _, raw := range requested {
		name := strings.TrimSpace(raw)
		switch {
		case name == "":
			continue
		case name == "*":
			for _, f := range coll.fields {
				if !f.dynamic {
					addField(f)
				}
			}
			if coll.dyn != nil {
				op.dynAll = true
			}
		case strings.EqualFold(name, "count(*)"):
			if !query {
				return nil, errParam("count(*) is only supported in query")
			}
			op.count = true
		case name == dynamicFieldName && coll.dyn != nil:
			op.dynAll = true
			if !seen[name] {
				seen[name] = true
				op.names = append(op.names, name)
			}
		default:
			if f := coll.byName[name]; f != nil && !f.dynamic {
				addField(f)
			} else if coll.dyn != nil {
				if !seen[name] {
					seen[name] = true
					op.dynKeys = append(op.dynKeys, name)
					op.names = append(op.names, name)
				}
			} else {
				return nil, errFieldNotFound(name, "output field "+name+" does not exist")
			}
		}
	}
	if op.count && (len(op.fields) > 0 || op.dynAll || len(op.dynKeys) > 0) {
		return nil, errParam("count entities with other output fields is not allowed")
	}
	if query && !op.count && !seen[coll.pk.name] {
		op.fields = append([]*fieldInfo{coll.pk}, op.fields...)
		op.names = append([]string{coll.pk.name}, op.names...)
	}
	return op, nil
}

// render builds FieldData for rows; the caller holds d.mu for reading.
func (op *outputPlan) render(coll *collection, d *collData, rows []int32) []*schemapb.FieldData {
	var out []*schemapb.FieldData
	for _, f := range op.fields {
		out = append(out, d.cols[f.pos].fieldData(f, rows))
	}
	if coll.dyn != nil {
		dc := d.cols[coll.dyn.pos]
		switch {
		case op.dynAll:
			out = append(out, dc.fieldData(coll.dyn, rows))
		case len(op.dynKeys) > 0:
			out = append(out, dc.dynamicSubset(coll.dyn, rows, op.dynKeys))
		}
	}
	return out
}

func kvMap(kvs []*commonpb.KeyValuePair) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = kv.GetValue()
	}
	return m
}

// searchParams are the parsed search_params of a SearchRequest.
type searchParams struct {
	field      *fieldInfo
	metric     string
	topK       int
	offset     int
	round      int
	radius     *float64
	rangeLimit *float64
}

func parseSearchParams(snap *readSnapshot, kvs []*commonpb.KeyValuePair) (*searchParams, error) {
	coll := snap.coll
	m := kvMap(kvs)
	sp := &searchParams{round: -1}
	if name := m["anns_field"]; name != "" {
		f := coll.byName[name]
		if f == nil || !f.isVector() {
			return nil, errFieldNotFound(name, "failed to get field schema by name")
		}
		sp.field = f
	} else {
		vfs := coll.vectorFields()
		if len(vfs) != 1 {
			return nil, errParam("multiple anns_fields exist, please specify a anns_field in search_params")
		}
		sp.field = vfs[0]
	}
	topk, ok := m["topk"]
	if !ok {
		topk, ok = m["limit"]
	}
	if !ok {
		return nil, errParam("topk not found in search_params")
	}
	k, err := strconv.Atoi(topk)
	if err != nil || k <= 0 || k > maxTopK {
		return nil, errParam("%s [topk] is invalid, it should be in range [1, %d]", topk, maxTopK)
	}
	sp.topK = k
	if v := m["offset"]; v != "" {
		o, err := strconv.Atoi(v)
		if err != nil || o < 0 || o >= maxTopK {
			return nil, errParam("%s [offset] is invalid, it should be in range [0, %d]", v, maxTopK)
		}
		sp.offset = o
	}
	if sp.topK+sp.offset > maxTopK {
		return nil, errParam("topk + offset should be in range [1, %d], but got %d", maxTopK, sp.topK+sp.offset)
	}
	if v := m["round_decimal"]; v != "" {
		r, err := strconv.Atoi(v)
		if err != nil || r < -1 || r > 6 {
			return nil, errParam("round_decimal %s is invalid, it should be in range [-1, 6]", v)
		}
		sp.round = r
	}
	idxMetric := snap.metrics[sp.field]
	sp.metric = idxMetric
	if v := strings.ToUpper(m["metric_type"]); v != "" {
		if idxMetric != "" && v != idxMetric {
			return nil, errParam("metric type not match: invalid parameter[expected=%s][actual=%s]", idxMetric, v)
		}
		sp.metric = v
	}
	if !vectorMetrics[sp.metric] {
		return nil, errParam("unsupported metric type %q for search", sp.metric)
	}
	if raw := m["params"]; raw != "" {
		var p map[string]any
		if err := json.Unmarshal([]byte(raw), &p); err != nil {
			return nil, errParam("search params %q are not valid JSON: %v", raw, err)
		}
		num := func(key string) (*float64, error) {
			v, ok := p[key]
			if !ok {
				return nil, nil
			}
			f, ok := v.(float64)
			if !ok {
				return nil, errParam("search param %s must be a number", key)
			}
			return &f, nil
		}
		if sp.radius, err = num("radius"); err != nil {
			return nil, err
		}
		if sp.rangeLimit, err = num("range_filter"); err != nil {
			return nil, err
		}
	}
	if m["group_by_field"] != "" {
		return nil, errUnsupported("search with group_by_field")
	}
	return sp, nil
}

// lessBetter reports whether smaller scores are better for the metric.
func lessBetter(metric string) bool { return metric == "L2" }

// queryVectors decodes the search input: a PlaceholderGroup of float vectors
// (little-endian), or primary keys whose stored vectors are the queries.
func queryVectors(req *milvuspb.SearchRequest, f *fieldInfo, d *collData) ([][]float32, error) {
	if ids := req.GetIds(); ids != nil {
		var out [][]float32
		col := d.cols[f.pos]
		for _, p := range pksFromIDs(ids) {
			r, ok := d.lookup(p)
			if !ok || !d.alive[r] {
				return nil, errParam("primary key %s to search by does not exist", p)
			}
			out = append(out, col.vec[int(r)*f.dim:(int(r)+1)*f.dim])
		}
		if len(out) == 0 {
			return nil, errParam("no primary keys to search by")
		}
		return out, nil
	}
	var pg commonpb.PlaceholderGroup
	if err := proto.Unmarshal(req.GetPlaceholderGroup(), &pg); err != nil {
		return nil, errParam("failed to unmarshal placeholder group: %v", err)
	}
	if len(pg.GetPlaceholders()) != 1 {
		return nil, errParam("placeholder group must hold exactly one placeholder, got %d", len(pg.GetPlaceholders()))
	}
	ph := pg.GetPlaceholders()[0]
	if ph.GetType() != commonpb.PlaceholderType_FloatVector {
		return nil, errUnsupported("search with %s query vectors on float vector field %s", ph.GetType(), f.name)
	}
	if len(ph.GetValues()) == 0 {
		return nil, errParam("nq (number of search vector per search request) should be in range [1, 16384], but got 0")
	}
	want := f.dim * 4
	out := make([][]float32, len(ph.GetValues()))
	for i, raw := range ph.GetValues() {
		if len(raw) != want {
			return nil, errParam("vector dimension mismatch, expected vector size(byte) %d, actual %d", want, len(raw))
		}
		v := make([]float32, f.dim)
		for j := range v {
			v[j] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*j:]))
		}
		out[i] = v
	}
	return out, nil
}

func (s *service) Search(ctx context.Context, req *milvuspb.SearchRequest) (*milvuspb.SearchResults, error) {
	res, err := s.c.search(ctx, req)
	if err != nil {
		return &milvuspb.SearchResults{Status: statusOf(err)}, nil
	}
	return res, nil
}

func (c *Cluster) search(ctx context.Context, req *milvuspb.SearchRequest) (*milvuspb.SearchResults, error) {
	if len(req.GetSubReqs()) > 0 || req.GetFunctionScore() != nil {
		return nil, errUnsupported("advanced search with sub requests or function score")
	}
	snap, err := c.snapshotForRead(ctx, dbOf(ctx, req.GetDbName()), req.GetCollectionName(), req.GetPartitionNames())
	if err != nil {
		return nil, err
	}
	coll := snap.coll
	plan, err := planSearch(snap, req)
	if err != nil {
		return nil, err
	}
	outs, err := resolveOutputs(coll, req.GetOutputFields(), false)
	if err != nil {
		return nil, err
	}
	g, release, err := c.awaitRead(ctx, coll, req)
	if err != nil {
		return nil, err
	}
	defer release()

	d := coll.data
	d.mu.RLock()
	defer d.mu.RUnlock()
	hits, err := plan.run(d)
	if err != nil {
		return nil, err
	}
	sp := plan.sp
	res := &schemapb.SearchResultData{NumQueries: int64(len(hits)), TopK: int64(sp.topK), PrimaryFieldName: coll.pk.name, OutputFields: outs.names}
	var allRows []int32
	allScores := []float32{}
	for _, h := range hits {
		rows, scores := h.rows, h.scores
		if sp.offset < len(rows) {
			rows, scores = rows[sp.offset:], scores[sp.offset:]
		} else {
			rows, scores = nil, nil
		}
		roundScores(scores, sp.round)
		res.Topks = append(res.Topks, int64(len(rows)))
		allRows = append(allRows, rows...)
		allScores = append(allScores, scores...)
	}
	res.Ids = idsOf(coll.pk.typ, pksAt(d, allRows))
	res.Scores = allScores
	res.FieldsData = outs.render(coll, d, allRows)
	return &milvuspb.SearchResults{Status: okStatus(), Results: res, CollectionName: snap.name, SessionTs: g}, nil
}

func roundScores(scores []float32, round int) {
	if round < 0 {
		return
	}
	pow := math.Pow(10, float64(round))
	for i := range scores {
		scores[i] = float32(math.Round(float64(scores[i])*pow) / pow)
	}
}

func pksAt(d *collData, rows []int32) []pkValue {
	pks := make([]pkValue, len(rows))
	for i, r := range rows {
		pks[i] = d.pkAt(r)
	}
	return pks
}

// searchPlan is one parsed ANN search (a Search, or one request of a
// HybridSearch).
type searchPlan struct {
	req  *milvuspb.SearchRequest
	sp   *searchParams
	flt  *filter
	snap *readSnapshot
}

// hitList is the best rows of one query, best first.
type hitList struct {
	rows   []int32
	scores []float32
}

func planSearch(snap *readSnapshot, req *milvuspb.SearchRequest) (*searchPlan, error) {
	sp, err := parseSearchParams(snap, req.GetSearchParams())
	if err != nil {
		return nil, err
	}
	plan := &searchPlan{req: req, sp: sp, snap: snap}
	if strings.TrimSpace(req.GetDsl()) != "" {
		if plan.flt, err = compileFilter(req.GetDsl(), snap.coll.exprEnv(req.GetExprTemplateValues())); err != nil {
			return nil, err
		}
	}
	return plan, nil
}

// run scans the collection for each query; the caller holds d.mu for
// reading. Each hitList holds topK+offset entries at most.
func (p *searchPlan) run(d *collData) ([]hitList, error) {
	queries, err := queryVectors(p.req, p.sp.field, d)
	if err != nil {
		return nil, err
	}
	cands := candidates(d, p.snap.parts, p.flt)
	col := d.cols[p.sp.field.pos]
	sel := newTopK(p.sp.topK+p.sp.offset, lessBetter(p.sp.metric))
	out := make([]hitList, len(queries))
	for i, q := range queries {
		sel.reset()
		scanVectors(col, q, p.sp.metric, cands, d.alive, sel, p.sp)
		out[i].rows, out[i].scores = sel.sorted()
	}
	return out, nil
}

func (s *service) HybridSearch(ctx context.Context, req *milvuspb.HybridSearchRequest) (*milvuspb.SearchResults, error) {
	res, err := s.c.hybridSearch(ctx, req)
	if err != nil {
		return &milvuspb.SearchResults{Status: statusOf(err)}, nil
	}
	return res, nil
}

// hybridSearch runs every ANN request and fuses the results with the rank
// parameters' reranker: rrf (score = sum 1/(k+rank)) or weighted (sum of
// weight * normalised score), as Milvus does.
func (c *Cluster) hybridSearch(ctx context.Context, req *milvuspb.HybridSearchRequest) (*milvuspb.SearchResults, error) {
	if req.GetFunctionScore() != nil {
		return nil, errUnsupported("hybrid search with function score")
	}
	if len(req.GetRequests()) == 0 {
		return nil, errParam("hybrid search needs at least one search request")
	}
	snap, err := c.snapshotForRead(ctx, dbOf(ctx, req.GetDbName()), req.GetCollectionName(), req.GetPartitionNames())
	if err != nil {
		return nil, err
	}
	coll := snap.coll
	var plans []*searchPlan
	for _, sub := range req.GetRequests() {
		plan, err := planSearch(snap, sub)
		if err != nil {
			return nil, err
		}
		plans = append(plans, plan)
	}
	rank, err := parseHybridRank(kvMap(req.GetRankParams()), len(plans))
	if err != nil {
		return nil, err
	}
	outs, err := resolveOutputs(coll, req.GetOutputFields(), false)
	if err != nil {
		return nil, err
	}
	g, release, err := c.awaitRead(ctx, coll, req)
	if err != nil {
		return nil, err
	}
	defer release()

	d := coll.data
	d.mu.RLock()
	defer d.mu.RUnlock()
	var perPlan [][]hitList
	nq := -1
	for _, plan := range plans {
		hits, err := plan.run(d)
		if err != nil {
			return nil, err
		}
		if nq >= 0 && len(hits) != nq {
			return nil, errParam("the nq of every hybrid search request must be the same, got %d and %d", nq, len(hits))
		}
		nq = len(hits)
		perPlan = append(perPlan, hits)
	}
	res := &schemapb.SearchResultData{NumQueries: int64(nq), TopK: int64(rank.limit), PrimaryFieldName: coll.pk.name, OutputFields: outs.names}
	var allRows []int32
	allScores := []float32{}
	for q := 0; q < nq; q++ {
		hits := make([]hitList, len(perPlan))
		for j := range perPlan {
			hits[j] = perPlan[j][q]
		}
		rows, scores := rank.fuse(plans, hits)
		res.Topks = append(res.Topks, int64(len(rows)))
		allRows = append(allRows, rows...)
		allScores = append(allScores, scores...)
	}
	res.Ids = idsOf(coll.pk.typ, pksAt(d, allRows))
	res.Scores = allScores
	res.FieldsData = outs.render(coll, d, allRows)
	return &milvuspb.SearchResults{Status: okStatus(), Results: res, CollectionName: snap.name, SessionTs: g}, nil
}

// hybridRank is how a hybrid search merges its sub-searches' hits: the
// rank_params of HybridSearchRequest (limit, offset, round_decimal, and
// strategy rrf or weighted with its params k or weights).
type hybridRank struct {
	limit, offset int
	round         int // decimals the scores are rounded to; -1: not rounded
	strategy      string
	k             float64   // rrf: a hit at rank r (from 1) scores 1/(k+r)
	weights       []float64 // weighted: one per sub-search
}

// parseHybridRank reads the rank params of a hybrid search of n
// sub-searches.
func parseHybridRank(rank map[string]string, n int) (hybridRank, error) {
	h := hybridRank{round: -1, strategy: strings.ToLower(rank["strategy"]), k: 60}
	var err error
	h.limit, err = strconv.Atoi(rank["limit"])
	if err != nil || h.limit <= 0 || h.limit > maxTopK {
		return h, errParam("limit [%s] of hybrid search is invalid, it should be in range [1, %d]", rank["limit"], maxTopK)
	}
	if v := rank["offset"]; v != "" {
		if h.offset, err = strconv.Atoi(v); err != nil || h.offset < 0 || h.offset+h.limit > maxTopK {
			return h, errParam("offset [%s] of hybrid search is invalid", v)
		}
	}
	if v := rank["round_decimal"]; v != "" {
		if h.round, err = strconv.Atoi(v); err != nil || h.round < -1 || h.round > 6 {
			return h, errParam("round_decimal [%s] is invalid", v)
		}
	}
	if h.strategy == "" {
		h.strategy = "rrf"
	}
	var rp struct {
		K       *float64  `json:"k"`
		Weights []float64 `json:"weights"`
	}
	if raw := rank["params"]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &rp); err != nil {
			return h, errParam("rank params %q are not valid JSON: %v", raw, err)
		}
	}
	switch h.strategy {
	case "rrf":
		if rp.K != nil {
			if *rp.K <= 0 || *rp.K >= 16384 {
				return h, errParam("the rank param k should be in range (0, 16384), got %v", *rp.K)
			}
			h.k = *rp.K
		}
	case "weighted":
		if len(rp.Weights) != n {
			return h, errParam("the length of weights param mismatch with ann search requests: want len = %d, but got %d", n, len(rp.Weights))
		}
		h.weights = rp.Weights
	default:
		return h, errParam("unsupported rerank strategy %q", h.strategy)
	}
	return h, nil
}

// fuse merges one query's hits of each sub-search (hits[j] from plans[j])
// into the rows of the page asked for, best first (ties: lower row
// first), with their fused scores.
func (h hybridRank) fuse(plans []*searchPlan, hits []hitList) ([]int32, []float32) {
	fused := map[int32]float64{}
	for j, hl := range hits {
		for rank, r := range hl.rows {
			if h.strategy == "rrf" {
				fused[r] += 1 / (h.k + float64(rank+1))
			} else {
				fused[r] += h.weights[j] * normalizeScore(plans[j].sp.metric, float64(hl.scores[rank]))
			}
		}
	}
	rows := make([]int32, 0, len(fused))
	for r := range fused {
		rows = append(rows, r)
	}
	sort.Slice(rows, func(a, b int) bool {
		if fused[rows[a]] != fused[rows[b]] {
			return fused[rows[a]] > fused[rows[b]]
		}
		return rows[a] < rows[b]
	})
	if h.offset < len(rows) {
		rows = rows[h.offset:]
	} else {
		rows = nil
	}
	if len(rows) > h.limit {
		rows = rows[:h.limit]
	}
	scores := make([]float32, len(rows))
	for i, r := range rows {
		scores[i] = float32(fused[r])
	}
	roundScores(scores, h.round)
	return rows, scores
}

// normalizeScore maps a metric's score into [0, 1], larger better, as
// Milvus's weighted reranker does.
func normalizeScore(metric string, x float64) float64 {
	switch metric {
	case "L2":
		return 1 - 2*math.Atan(x)/math.Pi
	case "COSINE":
		return (1 + x) / 2
	default:
		return 0.5 + math.Atan(x)/math.Pi
	}
}

// candidates lists the rows a read may return (alive, in the partitions,
// matching the filter), or nil meaning "every alive row". The caller holds
// d.mu for reading.
func candidates(d *collData, parts map[int64]bool, flt *filter) []int32 {
	if parts == nil && flt == nil {
		return nil
	}
	var pred func(int32) bool
	if flt != nil {
		pred = flt.bind(d)
	}
	out := make([]int32, 0, d.nAlive)
	for r := int32(0); r < int32(len(d.alive)); r++ {
		if !d.alive[r] || parts != nil && !parts[d.part[r]] || pred != nil && !pred(r) {
			continue
		}
		out = append(out, r)
	}
	return out
}

// scanVectors scores q against the candidate rows (every alive row when cands
// is nil) into sel.
func scanVectors(col *column, q []float32, metric string, cands []int32, alive []bool, sel *topK, sp *searchParams) {
	dim := col.dim
	var qinv float32
	if metric == "COSINE" {
		qinv = invNorm(q)
	}
	score := func(r int32) float32 {
		v := col.vec[int(r)*dim : int(r)*dim+dim]
		switch metric {
		case "L2":
			return l2sq(q, v)
		case "IP":
			return dot(q, v)
		default:
			return dot(q, v) * qinv * col.inv[r]
		}
	}
	inRange := func(s float32) bool {
		if sp.radius == nil && sp.rangeLimit == nil {
			return true
		}
		x := float64(s)
		if metric == "L2" {
			return (sp.radius == nil || x < *sp.radius) && (sp.rangeLimit == nil || x >= *sp.rangeLimit)
		}
		return (sp.radius == nil || x > *sp.radius) && (sp.rangeLimit == nil || x <= *sp.rangeLimit)
	}
	if cands == nil {
		for r := int32(0); r < int32(len(alive)); r++ {
			if alive[r] {
				if s := score(r); inRange(s) {
					sel.push(s, r)
				}
			}
		}
		return
	}
	for _, r := range cands {
		if s := score(r); inRange(s) {
			sel.push(s, r)
		}
	}
}

func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return s0 + s1 + s2 + s3
}

func l2sq(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		d0 := a[i] - b[i]
		d1 := a[i+1] - b[i+1]
		d2 := a[i+2] - b[i+2]
		d3 := a[i+3] - b[i+3]
		s0 += d0 * d0
		s1 += d1 * d1
		s2 += d2 * d2
		s3 += d3 * d3
	}
	for ; i < len(a); i++ {
		d := a[i] - b[i]
		s0 += d * d
	}
	return s0 + s1 + s2 + s3
}

// topK keeps the k best (score, row) pairs in a heap whose root is the worst
// kept.
type topK struct {
	k      int
	asc    bool // smaller is better
	scores []float32
	rows   []int32
}

func newTopK(k int, asc bool) *topK {
	return &topK{k: k, asc: asc, scores: make([]float32, 0, k), rows: make([]int32, 0, k)}
}

func (t *topK) reset() { t.scores, t.rows = t.scores[:0], t.rows[:0] }

// worse reports whether entry i is worse than entry j (ties: larger row is worse).
func (t *topK) worse(si float32, ri int32, sj float32, rj int32) bool {
	if si != sj {
		if t.asc {
			return si > sj
		}
		return si < sj
	}
	return ri > rj
}

func (t *topK) push(s float32, r int32) {
	if len(t.scores) < t.k {
		t.scores = append(t.scores, s)
		t.rows = append(t.rows, r)
		i := len(t.scores) - 1
		for i > 0 {
			p := (i - 1) / 2
			if !t.worse(t.scores[i], t.rows[i], t.scores[p], t.rows[p]) {
				break
			}
			t.scores[i], t.scores[p] = t.scores[p], t.scores[i]
			t.rows[i], t.rows[p] = t.rows[p], t.rows[i]
			i = p
		}
		return
	}
	if !t.worse(t.scores[0], t.rows[0], s, r) {
		return
	}
	t.scores[0], t.rows[0] = s, r
	i, n := 0, len(t.scores)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		w := l
		if rr := l + 1; rr < n && t.worse(t.scores[rr], t.rows[rr], t.scores[l], t.rows[l]) {
			w = rr
		}
		if !t.worse(t.scores[w], t.rows[w], t.scores[i], t.rows[i]) {
			break
		}
		t.scores[i], t.scores[w] = t.scores[w], t.scores[i]
		t.rows[i], t.rows[w] = t.rows[w], t.rows[i]
		i = w
	}
}

// sorted returns copies of the kept entries, best first.
func (t *topK) sorted() ([]int32, []float32) {
	idx := make([]int, len(t.scores))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool {
		return t.worse(t.scores[idx[b]], t.rows[idx[b]], t.scores[idx[a]], t.rows[idx[a]])
	})
	rows := make([]int32, len(idx))
	scores := make([]float32, len(idx))
	for i, j := range idx {
		rows[i], scores[i] = t.rows[j], t.scores[j]
	}
	return rows, scores
}

func (s *service) Query(ctx context.Context, req *milvuspb.QueryRequest) (*milvuspb.QueryResults, error) {
	res, err := s.c.query(ctx, req)
	if err != nil {
		return &milvuspb.QueryResults{Status: statusOf(err)}, nil
	}
	return res, nil
}

func (c *Cluster) query(ctx context.Context, req *milvuspb.QueryRequest) (*milvuspb.QueryResults, error) {
	snap, err := c.snapshotForRead(ctx, dbOf(ctx, req.GetDbName()), req.GetCollectionName(), req.GetPartitionNames())
	if err != nil {
		return nil, err
	}
	coll := snap.coll
	outs, err := resolveOutputs(coll, req.GetOutputFields(), true)
	if err != nil {
		return nil, err
	}
	params := kvMap(req.GetQueryParams())
	limit, offset := -1, 0
	if v, ok := params["limit"]; ok {
		if limit, err = strconv.Atoi(v); err != nil || limit < 0 {
			return nil, errParam("limit [%s] is invalid, should be greater than or equal to 0", v)
		}
	}
	if v, ok := params["offset"]; ok {
		if offset, err = strconv.Atoi(v); err != nil || offset < 0 {
			return nil, errParam("offset [%s] is invalid, should be greater than or equal to 0", v)
		}
	}
	if limit >= 0 && limit+offset > maxTopK {
		return nil, errParam("invalid max query result window, (offset+limit) should be in range [1, %d], but got %d", maxTopK, limit+offset)
	}
	expr := strings.TrimSpace(req.GetExpr())
	if expr == "" && !outs.count && limit < 0 {
		return nil, errParam("empty expression should be used with limit")
	}
	var flt *filter
	if expr != "" {
		if flt, err = compileFilter(expr, coll.exprEnv(req.GetExprTemplateValues())); err != nil {
			return nil, err
		}
	}
	_, release, err := c.awaitRead(ctx, coll, req)
	if err != nil {
		return nil, err
	}
	defer release()

	d := coll.data
	d.mu.RLock()
	defer d.mu.RUnlock()
	rows := candidates(d, snap.parts, flt)
	if rows == nil {
		rows = make([]int32, 0, d.nAlive)
		for r := int32(0); r < int32(len(d.alive)); r++ {
			if d.alive[r] {
				rows = append(rows, r)
			}
		}
	}
	res := &milvuspb.QueryResults{Status: okStatus(), CollectionName: snap.name, PrimaryFieldName: coll.pk.name}
	if outs.count {
		res.OutputFields = []string{"count(*)"}
		res.FieldsData = []*schemapb.FieldData{{Type: schemapb.DataType_Int64, FieldName: "count(*)",
			Field: scalars(&schemapb.ScalarField{Data: &schemapb.ScalarField_LongData{LongData: &schemapb.LongArray{Data: []int64{int64(len(rows))}}}})}}
		return res, nil
	}
	d.sortRowsByPK(rows)
	if offset >= len(rows) {
		rows = rows[:0]
	} else {
		rows = rows[offset:]
	}
	if limit >= 0 && limit < len(rows) {
		rows = rows[:limit]
	}
	res.OutputFields = outs.names
	res.FieldsData = outs.render(coll, d, rows)
	return res, nil
}
