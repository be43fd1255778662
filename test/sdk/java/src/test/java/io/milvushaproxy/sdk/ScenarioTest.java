package io.milvushaproxy.sdk;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.google.gson.JsonObject;
import io.milvus.orm.iterator.QueryIterator;
import io.milvus.orm.iterator.SearchIteratorV2;
import io.milvus.response.QueryResultsWrapper;
import io.milvus.v2.client.ConnectConfig;
import io.milvus.v2.client.MilvusClientV2;
import io.milvus.v2.common.ConsistencyLevel;
import io.milvus.v2.common.DataType;
import io.milvus.v2.common.IndexParam;
import io.milvus.v2.service.collection.request.AddFieldReq;
import io.milvus.v2.service.collection.request.CreateCollectionReq;
import io.milvus.v2.service.collection.request.DescribeCollectionReq;
import io.milvus.v2.service.collection.request.DropCollectionReq;
import io.milvus.v2.service.collection.request.GetLoadStateReq;
import io.milvus.v2.service.collection.request.HasCollectionReq;
import io.milvus.v2.service.collection.request.LoadCollectionReq;
import io.milvus.v2.service.collection.request.ReleaseCollectionReq;
import io.milvus.v2.service.database.request.CreateDatabaseReq;
import io.milvus.v2.service.database.request.DescribeDatabaseReq;
import io.milvus.v2.service.database.request.DropDatabaseReq;
import io.milvus.v2.service.index.request.CreateIndexReq;
import io.milvus.v2.service.index.request.DescribeIndexReq;
import io.milvus.v2.service.index.response.DescribeIndexResp;
import io.milvus.v2.service.partition.request.CreatePartitionReq;
import io.milvus.v2.service.partition.request.DropPartitionReq;
import io.milvus.v2.service.partition.request.HasPartitionReq;
import io.milvus.v2.service.partition.request.ListPartitionsReq;
import io.milvus.v2.service.utility.request.AlterAliasReq;
import io.milvus.v2.service.utility.request.CreateAliasReq;
import io.milvus.v2.service.utility.request.DescribeAliasReq;
import io.milvus.v2.service.utility.request.DropAliasReq;
import io.milvus.v2.service.utility.request.ListAliasesReq;
import io.milvus.v2.service.vector.request.AnnSearchReq;
import io.milvus.v2.service.vector.request.DeleteReq;
import io.milvus.v2.service.vector.request.GetReq;
import io.milvus.v2.service.vector.request.HybridSearchReq;
import io.milvus.v2.service.vector.request.InsertReq;
import io.milvus.v2.service.vector.request.QueryIteratorReq;
import io.milvus.v2.service.vector.request.QueryReq;
import io.milvus.v2.service.vector.request.SearchIteratorReqV2;
import io.milvus.v2.service.vector.request.SearchReq;
import io.milvus.v2.service.vector.request.UpsertReq;
import io.milvus.v2.service.vector.request.data.BaseVector;
import io.milvus.v2.service.vector.request.data.FloatVec;
import io.milvus.v2.service.vector.request.ranker.RRFRanker;
import io.milvus.v2.service.vector.response.QueryResp;
import io.milvus.v2.service.vector.response.SearchResp;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.stream.Collectors;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.extension.ExtensionContext;
import org.junit.jupiter.api.extension.TestWatcher;

/**
 * The drop-in scenario for the Java SDK: the same steps as
 * test/sdk/python/scenario.py, one ordered JUnit test per step, so surefire
 * reports the counts and the run prints PASS/FAIL per step and a closing
 * {@code N passed, N failed}.
 *
 * <p>Environment: MILVUS_URI (default http://127.0.0.1:19530), MILVUS_TOKEN,
 * SDK_RUN_ID (name suffix), SDK_SKIP (comma-separated step names).
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
@ExtendWith(ScenarioTest.Report.class)
class ScenarioTest {
    static final int DIM = 8;
    static final int ROWS = 100; // ids 0..99
    static final long SESSION_ID = 1000;
    static final int PART_BASE = 2000;
    static final int PART_ROWS = 10;
    static final long LIVE = ROWS + 1 - 6; // rows left after the delete step

    static final String URI = env("MILVUS_URI", "http://127.0.0.1:19530");
    static final String RUN_ID = env("SDK_RUN_ID", UUID.randomUUID().toString().substring(0, 8));
    static final String DB = "sdk_java_" + RUN_ID.replace('-', '_');
    static final String COLL = "items";
    static final String ALIAS = "items_alias_" + RUN_ID.replace('-', '_');
    static final String PART = "p1";
    static final Set<String> SKIP = new HashSet<>(Arrays.asList(env("SDK_SKIP", "").split(",")));

    static int passed;
    static int failed;
    static int skipped;
    static final long T0 = System.nanoTime();

    MilvusClientV2 client;

    static String env(String k, String d) {
        String v = System.getenv(k);
        return v == null || v.isEmpty() ? d : v;
    }

    /** Deterministic vector for row i; the same integer hash in every suite. */
    static float[] vector(long i) {
        float[] v = new float[DIM];
        for (int j = 0; j < DIM; j++) {
            long h = ((i + 1) * (j + 3) * 2654435761L) % 4294967296L;
            v[j] = (float) (h / 4294967296.0);
        }
        return v;
    }

    static List<BaseVector> vecs(long... ids) {
        List<BaseVector> out = new ArrayList<>();
        for (long i : ids) {
            out.add(new FloatVec(vector(i)));
        }
        return out;
    }

    static JsonObject row(long i) {
        JsonObject r = new JsonObject();
        r.addProperty("id", i);
        com.google.gson.JsonArray v = new com.google.gson.JsonArray();
        for (float x : vector(i)) {
            v.add(x);
        }
        r.add("vec", v);
        r.addProperty("title", "title-" + i);
        r.addProperty("n", i);
        JsonObject meta = new JsonObject();
        meta.addProperty("i", i);
        meta.addProperty("even", i % 2 == 0);
        meta.addProperty("tag", "t" + (i % 5));
        r.add("meta", meta);
        return r;
    }

    static List<JsonObject> rows(long from, long to) {
        List<JsonObject> out = new ArrayList<>();
        for (long i = from; i < to; i++) {
            out.add(row(i));
        }
        return out;
    }

    static long num(Object o) {
        return ((Number) o).longValue();
    }

    long count(ConsistencyLevel level, String filter, List<String> partitions) {
        QueryReq.QueryReqBuilder b = QueryReq.builder().collectionName(COLL).filter(filter)
                .outputFields(List.of("count(*)")).consistencyLevel(level);
        if (partitions != null) {
            b.partitionNames(partitions);
        }
        QueryResp r = client.query(b.build());
        return num(r.getQueryResults().get(0).getEntity().get("count(*)"));
    }

    long count(ConsistencyLevel level) {
        return count(level, "", null);
    }

    List<SearchResp.SearchResult> searchTop(long id, ConsistencyLevel level, List<String> partitions) {
        SearchReq.SearchReqBuilder b = SearchReq.builder().collectionName(COLL).data(vecs(id)).annsField("vec")
                .limit(3).outputFields(List.of("n")).consistencyLevel(level);
        if (partitions != null) {
            b.partitionNames(partitions);
        }
        return client.search(b.build()).getSearchResults().get(0);
    }

    @BeforeEach
    void skipIfAsked(TestInfo info) {
        String name = info.getTestMethod().get().getName();
        Assumptions.assumeFalse(SKIP.contains(name), "skipped by SDK_SKIP");
        if (!name.equals("connect")) {
            Assumptions.assumeTrue(client != null, "not connected");
        }
    }

    @Test
    @Order(1)
    void connect() {
        System.out.println("# java sdk scenario against " + URI + " (db " + DB + ")");
        ConnectConfig.ConnectConfigBuilder b = ConnectConfig.builder().uri(URI).connectTimeoutMs(30000);
        String token = env("MILVUS_TOKEN", "");
        if (!token.isEmpty()) {
            b.token(token);
        }
        client = new MilvusClientV2(b.build());
        String v = client.getServerVersion();
        assertTrue(v != null && !v.isEmpty(), "server version " + v);
    }

    @Test
    @Order(2)
    void create_database() {
        client.createDatabase(CreateDatabaseReq.builder().databaseName(DB).build());
        List<String> dbs = client.listDatabases().getDatabaseNames();
        assertTrue(dbs.contains(DB), DB + " not in " + dbs);
    }

    @Test
    @Order(3)
    void use_database() throws InterruptedException {
        client.useDatabase(DB);
        assertEquals(List.of(), client.listCollections().getCollectionNames(), "fresh database is not empty");
    }

    @Test
    @Order(4)
    void create_collection() {
        CreateCollectionReq.CollectionSchema schema = MilvusClientV2.CreateSchema();
        schema.addField(AddFieldReq.builder().fieldName("id").dataType(DataType.Int64).isPrimaryKey(true).autoID(false).build());
        schema.addField(AddFieldReq.builder().fieldName("vec").dataType(DataType.FloatVector).dimension(DIM).build());
        schema.addField(AddFieldReq.builder().fieldName("title").dataType(DataType.VarChar).maxLength(64).build());
        schema.addField(AddFieldReq.builder().fieldName("n").dataType(DataType.Int64).build());
        schema.addField(AddFieldReq.builder().fieldName("meta").dataType(DataType.JSON).build());
        client.createCollection(CreateCollectionReq.builder().collectionName(COLL).collectionSchema(schema)
                .consistencyLevel(ConsistencyLevel.BOUNDED).build());
        List<String> names = client.describeCollection(DescribeCollectionReq.builder().collectionName(COLL).build())
                .getFieldNames();
        assertEquals(List.of("id", "vec", "title", "n", "meta"), names);
        assertTrue(client.hasCollection(HasCollectionReq.builder().collectionName(COLL).build()));
    }

    @Test
    @Order(5)
    void create_index() {
        IndexParam ip = IndexParam.builder().fieldName("vec").indexName("vec_idx")
                .indexType(IndexParam.IndexType.FLAT).metricType(IndexParam.MetricType.L2).build();
        // By default createIndex waits for the build, which calls
        // AllocTimestamp; Milvus Lite does not implement it, so on Lite
        // (SDK_BACKEND=lite) the step asks for no wait.
        boolean sync = !"lite".equals(env("SDK_BACKEND", ""));
        client.createIndex(CreateIndexReq.builder().collectionName(COLL).indexParams(List.of(ip)).sync(sync).build());
        DescribeIndexResp d = client.describeIndex(DescribeIndexReq.builder().collectionName(COLL).fieldName("vec").build());
        assertEquals(1, d.getIndexDescriptions().size(), "indexes");
        assertEquals(IndexParam.MetricType.L2, d.getIndexDescriptions().get(0).getMetricType());
    }

    @Test
    @Order(6)
    void load() {
        client.loadCollection(LoadCollectionReq.builder().collectionName(COLL).build());
        assertTrue(client.getLoadState(GetLoadStateReq.builder().collectionName(COLL).build()), "not loaded");
    }

    @Test
    @Order(7)
    void insert() {
        var r = client.insert(InsertReq.builder().collectionName(COLL).data(rows(0, ROWS)).build());
        assertEquals(ROWS, r.getInsertCnt());
        assertEquals(ROWS, new HashSet<>(r.getPrimaryKeys()).size());
    }

    @Test
    @Order(8)
    void session_read_your_writes() {
        client.insert(InsertReq.builder().collectionName(COLL).data(List.of(row(SESSION_ID))).build());
        QueryResp q = client.query(QueryReq.builder().collectionName(COLL).filter("id == " + SESSION_ID)
                .outputFields(List.of("title")).consistencyLevel(ConsistencyLevel.SESSION).build());
        assertEquals(1, q.getQueryResults().size(), "session read");
        assertEquals("title-" + SESSION_ID, q.getQueryResults().get(0).getEntity().get("title"));
        var s = searchTop(SESSION_ID, ConsistencyLevel.SESSION, null);
        assertEquals(SESSION_ID, num(s.get(0).getId()), "session search top hit");
    }

    @Test
    @Order(9)
    void search_filter_output() {
        SearchResp r = client.search(SearchReq.builder().collectionName(COLL).data(vecs(5, 42)).annsField("vec")
                .limit(5).filter("n >= 5 and n < 90").outputFields(List.of("title", "n", "meta"))
                .metricType(IndexParam.MetricType.L2).consistencyLevel(ConsistencyLevel.STRONG).build());
        var res = r.getSearchResults();
        assertEquals(2, res.size(), "nq");
        for (var hits : res) {
            assertEquals(5, hits.size(), "hits");
            for (int k = 1; k < hits.size(); k++) {
                assertTrue(hits.get(k - 1).getScore() <= hits.get(k).getScore(), "scores not ascending");
            }
            for (var h : hits) {
                long n = num(h.getEntity().get("n"));
                assertTrue(n >= 5 && n < 90, "filter violated " + h);
                assertEquals("title-" + num(h.getId()), h.getEntity().get("title"));
                JsonObject meta = (JsonObject) h.getEntity().get("meta");
                assertEquals(num(h.getId()), meta.get("i").getAsLong(), "meta");
            }
        }
        assertEquals(5L, num(res.get(0).get(0).getId()));
        assertEquals(42L, num(res.get(1).get(0).getId()));
        assertTrue(Math.abs(res.get(0).get(0).getScore()) < 1e-5, "self distance");
    }

    @Test
    @Order(10)
    void query_filter() {
        QueryResp r = client.query(QueryReq.builder().collectionName(COLL).filter("n < 10 and meta[\"even\"] == true")
                .outputFields(List.of("id", "title", "meta")).consistencyLevel(ConsistencyLevel.STRONG).build());
        List<Long> ids = r.getQueryResults().stream().map(x -> num(x.getEntity().get("id"))).sorted()
                .collect(Collectors.toList());
        assertEquals(List.of(0L, 2L, 4L, 6L, 8L), ids);
        QueryResp lim = client.query(QueryReq.builder().collectionName(COLL).filter("n >= 0").limit(7)
                .outputFields(List.of("id")).consistencyLevel(ConsistencyLevel.STRONG).build());
        assertEquals(7, lim.getQueryResults().size(), "limit 7");
    }

    @Test
    @Order(11)
    void get_by_ids() {
        var r = client.get(GetReq.builder().collectionName(COLL).ids(List.of(3L, 7L, 99L))
                .outputFields(List.of("title", "vec")).build());
        List<Long> ids = r.getGetResults().stream().map(x -> num(x.getEntity().get("id"))).sorted()
                .collect(Collectors.toList());
        assertEquals(List.of(3L, 7L, 99L), ids);
        for (var x : r.getGetResults()) {
            @SuppressWarnings("unchecked")
            List<Float> v = (List<Float>) x.getEntity().get("vec");
            float[] want = vector(num(x.getEntity().get("id")));
            for (int j = 0; j < DIM; j++) {
                assertTrue(Math.abs(v.get(j) - want[j]) < 1e-6, "vector differs");
            }
        }
    }

    @Test
    @Order(12)
    void count() {
        assertEquals(ROWS + 1, count(ConsistencyLevel.STRONG), "count(*)");
        assertEquals(50, count(ConsistencyLevel.STRONG, "n < 50", null), "count(n<50)");
    }

    @Test
    @Order(13)
    void upsert() {
        JsonObject r3 = row(3);
        r3.addProperty("title", "upserted-3");
        var r = client.upsert(UpsertReq.builder().collectionName(COLL).data(List.of(r3, row(ROWS + 500))).build());
        assertEquals(2, r.getUpsertCnt());
        QueryResp q = client.query(QueryReq.builder().collectionName(COLL).filter("id in [3, " + (ROWS + 500) + "]")
                .outputFields(List.of("title")).consistencyLevel(ConsistencyLevel.STRONG).build());
        Map<Long, Object> titles = new HashMap<>();
        q.getQueryResults().forEach(x -> titles.put(num(x.getEntity().get("id")), x.getEntity().get("title")));
        assertEquals(Map.of(3L, "upserted-3", (long) ROWS + 500, "title-" + (ROWS + 500)), titles);
        assertEquals(ROWS + 2, count(ConsistencyLevel.STRONG), "count after upsert");
    }

    @Test
    @Order(14)
    void delete() {
        client.delete(DeleteReq.builder().collectionName(COLL).ids(List.of(0L, 1L, 2L, (long) ROWS + 500)).build());
        QueryResp q = client.query(QueryReq.builder().collectionName(COLL).filter("id in [0, 1, 2, " + (ROWS + 500) + "]")
                .outputFields(List.of("id")).consistencyLevel(ConsistencyLevel.STRONG).build());
        assertEquals(0, q.getQueryResults().size(), "deleted rows still there");
        client.delete(DeleteReq.builder().collectionName(COLL).filter("n >= 95 and n < 98").build());
        assertEquals(LIVE, count(ConsistencyLevel.STRONG), "count after delete");
    }

    @Test
    @Order(15)
    void partitions() {
        client.createPartition(CreatePartitionReq.builder().collectionName(COLL).partitionName(PART).build());
        try {
            List<String> parts = client.listPartitions(ListPartitionsReq.builder().collectionName(COLL).build());
            assertTrue(parts.contains(PART) && parts.contains("_default"), "partitions " + parts);
            assertTrue(client.hasPartition(HasPartitionReq.builder().collectionName(COLL).partitionName(PART).build()));
            // The collection is loaded, so Milvus loads the new partition too.
            client.insert(InsertReq.builder().collectionName(COLL).partitionName(PART)
                    .data(rows(PART_BASE, PART_BASE + PART_ROWS)).build());
            // A filter, not "": Milvus Lite's count(*) without one ignores partitions.
            assertEquals(PART_ROWS, count(ConsistencyLevel.STRONG, "n >= 0", List.of(PART)), "partition count");
            var s = searchTop(PART_BASE + 1, ConsistencyLevel.STRONG, List.of(PART));
            for (var h : s) {
                long id = num(h.getId());
                assertTrue(id >= PART_BASE && id < PART_BASE + PART_ROWS, "partition search " + s);
            }
            assertEquals(PART_BASE + 1, num(s.get(0).getId()), "partition search top");
        } finally {
            // A loaded partition cannot be dropped; Milvus Lite has no partition release.
            client.releaseCollection(ReleaseCollectionReq.builder().collectionName(COLL).build());
            client.dropPartition(DropPartitionReq.builder().collectionName(COLL).partitionName(PART).build());
            client.loadCollection(LoadCollectionReq.builder().collectionName(COLL).build());
        }
        assertTrue(!client.hasPartition(HasPartitionReq.builder().collectionName(COLL).partitionName(PART).build()),
                "partition not dropped");
        assertEquals(LIVE, count(ConsistencyLevel.STRONG), "partition rows still counted");
    }

    @Test
    @Order(16)
    void aliases() {
        client.createAlias(CreateAliasReq.builder().collectionName(COLL).alias(ALIAS).build());
        List<String> al = client.listAliases(ListAliasesReq.builder().collectionName(COLL).build()).getAlias();
        assertTrue(al.contains(ALIAS), "aliases " + al);
        assertEquals(COLL, client.describeAlias(DescribeAliasReq.builder().alias(ALIAS).build()).getCollectionName());
        QueryResp q = client.query(QueryReq.builder().collectionName(ALIAS).filter("id == 10")
                .outputFields(List.of("title")).consistencyLevel(ConsistencyLevel.STRONG).build());
        assertEquals(1, q.getQueryResults().size(), "query via alias");
        assertEquals("title-10", q.getQueryResults().get(0).getEntity().get("title"));
        SearchResp s = client.search(SearchReq.builder().collectionName(ALIAS).data(vecs(10)).annsField("vec").limit(1)
                .consistencyLevel(ConsistencyLevel.STRONG).build());
        assertEquals(10L, num(s.getSearchResults().get(0).get(0).getId()), "search via alias");
        client.alterAlias(AlterAliasReq.builder().collectionName(COLL).alias(ALIAS).build());
        client.dropAlias(DropAliasReq.builder().alias(ALIAS).build());
        List<String> al2 = client.listAliases(ListAliasesReq.builder().collectionName(COLL).build()).getAlias();
        assertTrue(!al2.contains(ALIAS), "alias not dropped " + al2);
    }

    @Test
    @Order(17)
    void query_iterator() {
        QueryIterator it = client.queryIterator(QueryIteratorReq.builder().collectionName(COLL).expr("n >= 0")
                .outputFields(List.of("id")).batchSize(10).build());
        List<Long> ids = new ArrayList<>();
        int pages = 0;
        while (true) {
            List<QueryResultsWrapper.RowRecord> page = it.next();
            if (page.isEmpty()) {
                it.close();
                break;
            }
            pages++;
            for (var r : page) {
                ids.add(num(r.get("id")));
            }
        }
        assertEquals(LIVE, ids.size(), "iterated");
        assertEquals(LIVE, new HashSet<>(ids).size(), "distinct");
        assertTrue(pages >= 9, "pages " + pages);
    }

    @Test
    @Order(18)
    void search_iterator() {
        List<Long> ids = new ArrayList<>();
        try {
            SearchIteratorV2 it = client.searchIteratorV2(SearchIteratorReqV2.builder().collectionName(COLL)
                    .vectorFieldName("vec").vectors(vecs(20)).batchSize(10).limit(30)
                    .metricType(IndexParam.MetricType.L2).build());
            while (true) {
                List<SearchResp.SearchResult> page = it.next();
                if (page.isEmpty()) {
                    it.close();
                    break;
                }
                for (var h : page) {
                    ids.add(num(h.getId()));
                }
            }
        } catch (RuntimeException e) {
            // Servers without search iterator v2 (Milvus Lite; Milvus before
            // 2.5.2): the SDK says to use v1, as pymilvus does by itself.
            if (!String.valueOf(e.getMessage()).contains("does not support Search Iterator V2")) {
                throw e;
            }
            System.out.println("# search_iterator: server has no iterator v2, using v1");
            io.milvus.orm.iterator.SearchIterator it = client.searchIterator(
                    io.milvus.v2.service.vector.request.SearchIteratorReq.builder().collectionName(COLL)
                            .vectorFieldName("vec").vectors(vecs(20)).batchSize(10).limit(30)
                            .metricType(IndexParam.MetricType.L2).outputFields(List.of("id")).build());
            while (true) {
                List<QueryResultsWrapper.RowRecord> page = it.next();
                if (page.isEmpty()) {
                    it.close();
                    break;
                }
                for (var r : page) {
                    ids.add(num(r.get("id")));
                }
            }
        }
        assertEquals(30, ids.size(), "iterated");
        assertEquals(30, new HashSet<>(ids).size(), "distinct");
        assertEquals(20L, ids.get(0), "first hit");
    }

    @Test
    @Order(19)
    void hybrid_search() {
        List<AnnSearchReq> reqs = List.of(
                AnnSearchReq.builder().vectorFieldName("vec").vectors(vecs(30)).limit(5).filter("n >= 10")
                        .metricType(IndexParam.MetricType.L2).build(),
                AnnSearchReq.builder().vectorFieldName("vec").vectors(vecs(31)).limit(5).filter("n >= 10")
                        .metricType(IndexParam.MetricType.L2).build());
        SearchResp r = client.hybridSearch(HybridSearchReq.builder().collectionName(COLL).searchRequests(reqs)
                .ranker(new RRFRanker(60)).limit(4).outFields(List.of("title"))
                .consistencyLevel(ConsistencyLevel.STRONG).build());
        List<Long> ids = r.getSearchResults().get(0).stream().map(h -> num(h.getId())).collect(Collectors.toList());
        assertEquals(4, ids.size(), "hybrid ids " + ids);
        assertTrue(ids.contains(30L) && ids.contains(31L), "hybrid ids " + ids);
    }

    void level(ConsistencyLevel lv, boolean exact) {
        long c = count(lv);
        if (exact) {
            assertEquals(LIVE, c, lv + ": count");
        } else {
            assertTrue(c >= 0 && c <= LIVE + 1, lv + ": count " + c);
        }
        var s = searchTop(60, lv, null);
        assertEquals(3, s.size(), lv + ": hits");
        if (exact) {
            assertEquals(60L, num(s.get(0).getId()), lv + ": top hit");
        }
    }

    @Test
    @Order(20)
    void consistency_strong() {
        level(ConsistencyLevel.STRONG, true);
    }

    @Test
    @Order(21)
    void consistency_session() {
        level(ConsistencyLevel.SESSION, true);
    }

    @Test
    @Order(22)
    void consistency_bounded() {
        level(ConsistencyLevel.BOUNDED, false);
    }

    @Test
    @Order(23)
    void consistency_eventually() {
        level(ConsistencyLevel.EVENTUALLY, false);
    }

    // The Java v2 API has no Customized level (its enum stops at EVENTUALLY),
    // so there is no consistency_customized step here.

    @Test
    @Order(24)
    void default_consistency() {
        QueryResp r = client.query(QueryReq.builder().collectionName(COLL).filter("")
                .outputFields(List.of("count(*)")).build());
        long c = num(r.getQueryResults().get(0).getEntity().get("count(*)"));
        assertTrue(c >= 0 && c <= ROWS + 2, "count " + c);
    }

    @Test
    @Order(25)
    void errors() {
        Map<String, Runnable> calls = new LinkedHashMap<>();
        calls.put("search_missing_collection", () -> client.search(SearchReq.builder()
                .collectionName("no_such_collection").data(vecs(1)).limit(1).build()));
        calls.put("query_bad_expr", () -> client.query(QueryReq.builder().collectionName(COLL).filter("n >>> 3")
                .outputFields(List.of("id")).build()));
        calls.put("describe_missing_database", () -> client.describeDatabase(DescribeDatabaseReq.builder()
                .databaseName("no_such_db_xyz").build()));
        calls.put("describe_missing_collection", () -> client.describeCollection(DescribeCollectionReq.builder()
                .collectionName("no_such_coll").build()));
        List<String> noError = new ArrayList<>();
        for (var e : calls.entrySet()) {
            try {
                e.getValue().run();
                noError.add(e.getKey());
            } catch (RuntimeException ex) {
                // expected: the error is the point
            }
        }
        assertEquals(Collections.emptyList(), noError, "no error for");
    }

    @Test
    @Order(26)
    void drop() throws InterruptedException {
        client.releaseCollection(ReleaseCollectionReq.builder().collectionName(COLL).build());
        client.dropCollection(DropCollectionReq.builder().collectionName(COLL).build());
        assertTrue(!client.hasCollection(HasCollectionReq.builder().collectionName(COLL).build()), "collection still there");
        client.useDatabase("default");
        client.dropDatabase(DropDatabaseReq.builder().databaseName(DB).build());
        assertTrue(!client.listDatabases().getDatabaseNames().contains(DB), "database still there");
    }

    @AfterAll
    void cleanup() {
        if (client != null) {
            try {
                client.useDatabase("default");
                if (client.listDatabases().getDatabaseNames().contains(DB)) {
                    client.useDatabase(DB);
                    for (String c : client.listCollections().getCollectionNames()) {
                        for (String a : client.listAliases(ListAliasesReq.builder().collectionName(c).build()).getAlias()) {
                            client.dropAlias(DropAliasReq.builder().alias(a).build());
                        }
                        client.dropCollection(DropCollectionReq.builder().collectionName(c).build());
                    }
                    client.useDatabase("default");
                    client.dropDatabase(DropDatabaseReq.builder().databaseName(DB).build());
                }
            } catch (Exception e) {
                // best effort
            }
            try {
                client.close(3);
            } catch (Exception e) {
                // best effort
            }
        }
        System.out.printf("# %.1fs%n", (System.nanoTime() - T0) / 1e9);
        String s = passed + " passed, " + failed + " failed";
        if (skipped > 0) {
            s += ", " + skipped + " skipped";
        }
        System.out.println(s);
    }

    /** Prints one PASS/FAIL/SKIP line per step, as the other suites do. */
    static class Report implements TestWatcher {
        @Override
        public void testSuccessful(ExtensionContext ctx) {
            passed++;
            System.out.println("PASS " + ctx.getRequiredTestMethod().getName());
        }

        @Override
        public void testFailed(ExtensionContext ctx, Throwable cause) {
            failed++;
            String msg = String.valueOf(cause.getMessage()).replace('\n', ' ');
            if (msg.length() > 300) {
                msg = msg.substring(0, 300) + "...";
            }
            System.out.println("FAIL " + ctx.getRequiredTestMethod().getName() + ": "
                    + cause.getClass().getSimpleName() + ": " + msg);
        }

        @Override
        public void testAborted(ExtensionContext ctx, Throwable cause) {
            skipped++;
            System.out.println("SKIP " + ctx.getRequiredTestMethod().getName() + ": " + cause.getMessage());
        }
    }
}
