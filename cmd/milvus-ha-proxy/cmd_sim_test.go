package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func TestSimBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--cluster-id"},
		{[]string{"--cluster-id", "a", "--pchannels", "0"}, "--pchannels"},
		{[]string{"--cluster-id", "a", "--pchannels", "x"}, "-pchannels"},
		{[]string{"--cluster-id", "a", "--tick", "0s"}, "--tick"},
		{[]string{"--cluster-id", "a", "--replication-delay", "soon"}, "-replication-delay"},
		{[]string{"--cluster-id", "a", "--user", "u"}, "--password"},
		{[]string{"--cluster-id", "a", "--nope"}, "-nope"},
		{[]string{"--cluster-id", "a", "extra"}, "extra"},
	} {
		var out, errb strings.Builder
		if rc := runSim(context.Background(), tc.args, &out, &errb); rc != 2 {
			t.Errorf("%v: exit %d, want 2", tc.args, rc)
		}
		if !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: stderr %q does not name %s", tc.args, errb.String(), tc.want)
		}
	}
}

func TestSimRuns(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- runSim(ctx, []string{"--cluster-id", "x", "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", "--log-level", "error"}, pw, io.Discard)
		pw.Close()
	}()
	lines := bufio.NewScanner(pr)
	var addr, ctl string
	for lines.Scan() {
		f := strings.Fields(lines.Text())
		switch {
		case len(f) == 5 && f[2] == "listening":
			addr = f[4]
		case len(f) == 5 && f[2] == "control":
			ctl = f[4]
		}
		if addr != "" && ctl != "" {
			break
		}
	}
	go io.Copy(io.Discard, pr)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
	defer ccancel()
	v, err := milvuspb.NewMilvusServiceClient(conn).GetVersion(cctx, &milvuspb.GetVersionRequest{})
	if err != nil || v.GetVersion() == "" {
		t.Fatalf("GetVersion on %s: %v %v", addr, v, err)
	}
	res, err := http.Post("http://"+ctl+"/sim/x/replication/pause", "", nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("control pause: %v %v", res, err)
	}
	res.Body.Close()
	cancel()
	select {
	case rc := <-done:
		if rc != 0 {
			t.Fatalf("exit %d after cancel", rc)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sim did not stop after its context was cancelled")
	}
}
