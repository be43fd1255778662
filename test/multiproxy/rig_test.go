package multiproxy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/admin"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/etcdarbiter/etcdtest"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/sim"
)

const (
	collName    = "multi"
	pchannels   = 2
	detectAfter = time.Second
	writeHold   = 6 * time.Second
	leaseTTL    = 2 * time.Second
)

// node is one proxy process, its relay to etcd and its admin client.
type node struct {
	name  string
	p     *proxyProc
	relay *etcdtest.Relay
	adm   *admin.Client
	cl    *client
}

// rig is three simulated clusters a -> b, c, one etcd and three proxies.
type rig struct {
	t     testing.TB
	root  string
	ids   []string
	sims  map[string]*simProc
	etcd  *etcdtest.Server
	nodes []*node
	hc    *http.Client

	direct map[string]*client
}

func newRig(t testing.TB) *rig {
	t.Helper()
	r := &rig{t: t, root: t.TempDir(), ids: []string{"a", "b", "c"}, sims: map[string]*simProc{},
		direct: map[string]*client{}, hc: &http.Client{Timeout: 5 * time.Second}}
	if bin := os.Getenv("MHP_ETCD_BIN"); bin != "" {
		r.etcd = etcdtest.StartBinary(t, bin)
	} else {
		r.etcd = etcdtest.Start(t)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	errs := make([]error, len(r.ids))
	for i, id := range r.ids {
		wg.Go(func() {
			p, err := startSim(t, r.root, id)
			mu.Lock()
			r.sims[id], errs[i] = p, err
			mu.Unlock()
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range r.ids {
		r.direct[id] = dial(t, r.sims[id].Addr)
	}
	r.join("a", "b", "c")

	for i := range 3 {
		name := fmt.Sprintf("p%d", i+1)
		n := &node{name: name, relay: etcdtest.NewRelay(t, r.etcd.Endpoint)}
		var y strings.Builder
		fmt.Fprintf(&y, "discovery: replicate\nclusters:\n")
		for _, id := range r.ids {
			fmt.Fprintf(&y, "  - id: %s\n    uri: %s\n", id, r.sims[id].Addr)
		}
		fmt.Fprintf(&y, "failover:\n  mode: auto\n  detect_after: %s\n  write_hold: %s\ndrain:\n  grace_period: 1s\n", detectAfter, writeHold)
		fmt.Fprintf(&y, "arbiter:\n  proxy_id: %s\n  etcd:\n    endpoints: [%s]\n    prefix: /mhp-test/%s\n    lease_ttl: %s\n",
			name, n.relay.Addr(), strings.ReplaceAll(t.Name(), "/", "_"), leaseTTL)
		path := filepath.Join(r.root, name+".yaml")
		if err := os.WriteFile(path, []byte(y.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := startProxy(t, r.root, name, path)
		if err != nil {
			t.Fatal(err)
		}
		n.p = p
		if n.adm, err = admin.NewClient("http://"+p.Admin, &http.Client{}); err != nil {
			t.Fatal(err)
		}
		n.cl = dial(t, p.Addr)
		r.nodes = append(r.nodes, n)
	}
	if _, err := r.agree(30*time.Second, "a"); err != nil {
		t.Fatalf("the proxies did not agree on leader a: %v\n%s", err, r.diagnostics())
	}
	r.setup()
	return r
}

// join sends the same replicate configuration (source -> targets) to every
// cluster, as a deployment does.
func (r *rig) join(source string, targets ...string) {
	r.t.Helper()
	entry := func(id string) *commonpb.MilvusCluster {
		e := &commonpb.MilvusCluster{ClusterId: id, ConnectionParam: &commonpb.ConnectionParam{Uri: r.sims[id].Addr}}
		for i := range pchannels {
			e.Pchannels = append(e.Pchannels, sim.PChannelName(id, i))
		}
		return e
	}
	cfg := &commonpb.ReplicateConfiguration{Clusters: []*commonpb.MilvusCluster{entry(source)}}
	for _, t := range targets {
		cfg.Clusters = append(cfg.Clusters, entry(t))
		cfg.CrossClusterTopology = append(cfg.CrossClusterTopology, &commonpb.CrossClusterTopology{SourceClusterId: source, TargetClusterId: t})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, id := range append([]string{source}, targets...) {
		if err := sim.UpdateReplicateConfiguration(ctx, r.sims[id].Addr, "", cfg, false); err != nil {
			r.t.Fatalf("joining replication: %v", err)
		}
	}
}

// setup creates, indexes and loads the collection through the first proxy
// and waits until every alternative serves it.
func (r *rig) setup() {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	schema, _ := proto.Marshal(&schemapb.CollectionSchema{Name: collName, Fields: []*schemapb.FieldSchema{
		{FieldID: 100, Name: "pk", DataType: schemapb.DataType_Int64, IsPrimaryKey: true},
		{FieldID: 101, Name: "val", DataType: schemapb.DataType_Int64},
		{FieldID: 102, Name: "v", DataType: schemapb.DataType_FloatVector, TypeParams: []*commonpb.KeyValuePair{{Key: "dim", Value: "2"}}},
	}})
	c := r.nodes[0].cl.rpc
	must := func(what string, st *commonpb.Status, err error) {
		if err := statusErr(st, err); err != nil {
			r.t.Fatalf("%s: %v", what, err)
		}
	}
	st, err := c.CreateCollection(ctx, &milvuspb.CreateCollectionRequest{CollectionName: collName, Schema: schema, ShardsNum: 1,
		ConsistencyLevel: commonpb.ConsistencyLevel_Session})
	must("CreateCollection", st, err)
	st, err = c.CreateIndex(ctx, &milvuspb.CreateIndexRequest{CollectionName: collName, FieldName: "v",
		ExtraParams: []*commonpb.KeyValuePair{{Key: "metric_type", Value: "L2"}}})
	must("CreateIndex", st, err)
	st, err = c.LoadCollection(ctx, &milvuspb.LoadCollectionRequest{CollectionName: collName})
	must("LoadCollection", st, err)
	for _, id := range []string{"b", "c"} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			qctx, qcancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := r.direct[id].query(qctx, commonpb.ConsistencyLevel_Eventually, 0, 1)
			qcancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				r.t.Fatalf("%s does not serve the collection after 20s: %v", id, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func (n *node) topology() (admin.View, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return n.adm.Topology(ctx)
}

// agree waits until every running proxy routes writes to the same leader
// (want, or any when want is "", or any other than X when want is "!X"),
// with the same etcd topology epoch, and none holds writes. It returns
// the leader.
func (r *rig) agree(bound time.Duration, want string, skip ...string) (string, error) {
	deadline := time.Now().Add(bound)
	var last string
	for {
		leader, why := r.agreedOnce(want, skip)
		if why == "" {
			return leader, nil
		}
		last = why
		if time.Now().After(deadline) {
			return "", fmt.Errorf("after %s: %s", bound, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *rig) agreedOnce(want string, skip []string) (string, string) {
	leader, epoch := "", uint64(0)
	for _, n := range r.nodes {
		if !n.p.Running() || contains(skip, n.name) {
			continue
		}
		v, err := n.topology()
		switch {
		case err != nil:
			return "", fmt.Sprintf("%s: %v", n.name, err)
		case v.Arbiter == nil:
			return "", n.name + " shows no arbiter"
		case v.Leader == "" || v.FailingOver || v.Arbiter.Fenced:
			return "", fmt.Sprintf("%s: leader %q failing over %v fenced %v", n.name, v.Leader, v.FailingOver, v.Arbiter.Fenced)
		case strings.HasPrefix(want, "!") && v.Leader == want[1:]:
			return "", fmt.Sprintf("%s still routes to %s", n.name, v.Leader)
		case want != "" && !strings.HasPrefix(want, "!") && v.Leader != want:
			return "", fmt.Sprintf("%s routes to %s, want %s", n.name, v.Leader, want)
		case leader != "" && (v.Leader != leader || v.Arbiter.Epoch != epoch):
			return "", fmt.Sprintf("%s routes to %s (epoch %d), another to %s (epoch %d)", n.name, v.Leader, v.Arbiter.Epoch, leader, epoch)
		}
		leader, epoch = v.Leader, v.Arbiter.Epoch
	}
	return leader, ""
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// decider returns the proxy that decides, as the proxies' records say.
func (r *rig) decider() (*node, error) {
	for _, n := range r.nodes {
		if !n.p.Running() {
			continue
		}
		v, err := n.topology()
		if err != nil || v.Arbiter == nil {
			continue
		}
		if v.Arbiter.Deciding {
			return n, nil
		}
	}
	return nil, fmt.Errorf("no proxy decides")
}

// simStatus reads one simulator's status.
func (r *rig) simStatus(id string) (sim.ClusterStatus, error) {
	var st sim.ClusterStatus
	resp, err := r.hc.Get("http://" + r.sims[id].Ctl + "/sim/" + id + "/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return st, json.Unmarshal(b, &st)
}

// promotions sums the force promotions the running clusters carried out.
func (r *rig) promotions() (total int64, by string) {
	var parts []string
	for _, id := range r.ids {
		if !r.sims[id].Running() {
			continue
		}
		st, err := r.simStatus(id)
		if err != nil {
			r.t.Errorf("status of %s: %v", id, err)
			continue
		}
		total += st.ForcePromotions
		parts = append(parts, id+"="+strconv.FormatInt(st.ForcePromotions, 10))
	}
	return total, strings.Join(parts, " ")
}

// writable asks every running cluster directly whether it takes a write.
func (r *rig) writable(pk int64) []string {
	var ok []string
	for _, id := range r.ids {
		if !r.sims[id].Running() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, _, err := r.direct[id].insert(ctx, pk, pk)
		cancel()
		if err == nil {
			ok = append(ok, id)
		}
		pk++
	}
	return ok
}

func (r *rig) diagnostics() string {
	var b strings.Builder
	for _, n := range r.nodes {
		if !n.p.Running() {
			fmt.Fprintf(&b, "%s: down\n", n.name)
			continue
		}
		v, err := n.topology()
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", n.name, err)
			continue
		}
		j, _ := json.Marshal(v.Arbiter)
		fmt.Fprintf(&b, "%s: leader %s failing_over %v ready %v (%s) arbiter %s\n", n.name, v.Leader, v.FailingOver, v.Ready, v.NotReadyReason, j)
	}
	for _, id := range r.ids {
		if !r.sims[id].Running() {
			fmt.Fprintf(&b, "sim %s: down\n", id)
			continue
		}
		st, err := r.simStatus(id)
		fmt.Fprintf(&b, "sim %s: role %s source %s targets %v promotions %d %v\n", id, st.Role, st.Source, st.Targets, st.ForcePromotions, err)
	}
	return b.String()
}

// client is a raw Milvus client: one gRPC connection.
type client struct {
	rpc  milvuspb.MilvusServiceClient
	conn *grpc.ClientConn
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: 2 * time.Second,
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{rpc: milvuspb.NewMilvusServiceClient(conn), conn: conn}
}

func statusErr(st *commonpb.Status, err error) error {
	if err != nil {
		return err
	}
	if st.GetCode() != 0 || st.GetErrorCode() != commonpb.ErrorCode_Success {
		return fmt.Errorf("milvus error %d: %s", st.GetCode(), st.GetReason())
	}
	return nil
}

// insert writes one row and returns its timestamp and the cluster that
// took it (x-milvus-ha-cluster when the call went through a proxy).
func (c *client) insert(ctx context.Context, pk, val int64) (ts uint64, cluster string, err error) {
	var hdr metadata.MD
	vec := []float32{float32(pk % 1000), 1}
	fields := []*schemapb.FieldData{
		{FieldName: "pk", Type: schemapb.DataType_Int64, Field: &schemapb.FieldData_Scalars{Scalars: &schemapb.ScalarField{
			Data: &schemapb.ScalarField_LongData{LongData: &schemapb.LongArray{Data: []int64{pk}}}}}},
		{FieldName: "val", Type: schemapb.DataType_Int64, Field: &schemapb.FieldData_Scalars{Scalars: &schemapb.ScalarField{
			Data: &schemapb.ScalarField_LongData{LongData: &schemapb.LongArray{Data: []int64{val}}}}}},
		{FieldName: "v", Type: schemapb.DataType_FloatVector, Field: &schemapb.FieldData_Vectors{Vectors: &schemapb.VectorField{
			Dim: 2, Data: &schemapb.VectorField_FloatVector{FloatVector: &schemapb.FloatArray{Data: vec}}}}},
	}
	res, err := c.rpc.Insert(ctx, &milvuspb.InsertRequest{CollectionName: collName, FieldsData: fields, NumRows: 1}, grpc.Header(&hdr))
	cl := ""
	if v := hdr.Get("x-milvus-ha-cluster"); len(v) > 0 {
		cl = v[0]
	}
	return res.GetTimestamp(), cl, statusErr(res.GetStatus(), err)
}

// query returns which of pks the cluster behind c holds, at a level and
// guarantee timestamp.
func (c *client) query(ctx context.Context, level commonpb.ConsistencyLevel, guarantee uint64, pks ...int64) (map[int64]bool, error) {
	var b strings.Builder
	b.WriteString("pk in [")
	for i, pk := range pks {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(pk, 10))
	}
	b.WriteByte(']')
	res, err := c.rpc.Query(ctx, &milvuspb.QueryRequest{CollectionName: collName, Expr: b.String(),
		OutputFields: []string{"pk"}, ConsistencyLevel: level, GuaranteeTimestamp: guarantee})
	if err := statusErr(res.GetStatus(), err); err != nil {
		return nil, err
	}
	out := map[int64]bool{}
	for _, f := range res.GetFieldsData() {
		if f.GetFieldName() == "pk" {
			for _, pk := range f.GetScalars().GetLongData().GetData() {
				out[pk] = true
			}
		}
	}
	return out, nil
}
