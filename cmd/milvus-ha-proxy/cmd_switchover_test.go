package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/admin"
)

func TestSwitchoverAndFailover(t *testing.T) {
	tests := []struct {
		name     string
		cmd      string
		args     []string
		result   admin.Result
		err      error
		wantCode int
		wantOut  []string
		wantErr  []string
		wantCall string
	}{
		{
			name: "switchover ok", cmd: "switchover", args: []string{"--to", "b"},
			result:   admin.Result{From: "a", To: "b", Epoch: 3, TookSeconds: 1.25, WritesHeld: 4},
			wantCode: 0, wantOut: []string{"switchover done: leader is now b (was a), epoch 3, took 1.25s, 4 writes held meanwhile"},
			wantCall: "switchover b",
		},
		{
			name: "failover ok", cmd: "failover", args: []string{"--to=c"},
			result:   admin.Result{From: "a", To: "c", Epoch: 4, TookSeconds: 0.8, Quarantined: []string{"b"}, SalvageCheckpoint: []uint64{11, 12}},
			wantCode: 0, wantOut: []string{
				"failover done: leader is now c (was a), epoch 4, took 800ms",
				"salvage checkpoint of c: [11 12]",
				"quarantined (ran ahead of the new leader; no reads until dealt with): b",
				"a forced promotion can lose writes",
			},
			wantCall: "failover c",
		},
		{
			name: "refused", cmd: "switchover", args: []string{"--to", "a"},
			err:      fmt.Errorf("a is already the leader: %w", admin.ErrRefused),
			wantCode: 1, wantErr: []string{"milvus-ha-proxy switchover: refused (HTTP 409): switchover to a: a is already the leader"},
			wantCall: "switchover a",
		},
		{
			name: "unknown cluster", cmd: "failover", args: []string{"--to", "zz"},
			err:      fmt.Errorf("cluster %q: %w", "zz", admin.ErrUnknownCluster),
			wantCode: 1, wantErr: []string{"unknown_cluster (HTTP 404)", `cluster "zz": unknown cluster`},
			wantCall: "failover zz",
		},
		{
			name: "missing --to", cmd: "switchover", args: nil,
			wantCode: 2, wantErr: []string{"missing --to ID"},
		},
		{
			name: "empty --to", cmd: "failover", args: []string{"--to", " "},
			wantCode: 2, wantErr: []string{"missing --to ID"},
		},
		{
			name: "stray argument", cmd: "switchover", args: []string{"b"},
			wantCode: 2, wantErr: []string{`unexpected argument "b"`, "usage: milvus-ha-proxy switchover --to ID"},
		},
		{
			name: "attach ok", cmd: "attach", args: []string{"--cluster", "d"},
			result:   admin.Result{From: "a", To: "d", TookSeconds: 0.5, Message: "d is a replication target of a"},
			wantCode: 0, wantOut: []string{"attach done: d is a replication target of a, took 500ms"},
			wantCall: "attach d",
		},
		{
			name: "attach refused", cmd: "attach", args: []string{"--cluster", "a"},
			err:      fmt.Errorf("%w: a is a former leader that has not rejoined", admin.ErrRefused),
			wantCode: 1, wantErr: []string{"refused (HTTP 409): attach a: refused: a is a former leader that has not rejoined"},
			wantCall: "attach a",
		},
		{
			name: "attach without --cluster", cmd: "attach", args: nil,
			wantCode: 2, wantErr: []string{"missing --cluster ID"},
		},
		{
			name: "help", cmd: "failover", args: []string{"-h"},
			wantCode: 0, wantErr: []string{"usage: milvus-ha-proxy failover --to ID", "Forced promotion"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeController{ready: true, result: tt.result, err: tt.err}
			url := startAdmin(t, f)
			fn := runSwitchover
			switch tt.cmd {
			case "failover":
				fn = runFailover
			case "attach":
				fn = runAttach
			}
			code, out, errOut := runCmd(fn, append([]string{"--admin", url}, tt.args...)...)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, out, errOut)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			got := strings.Join(f.calls, ";")
			if got != tt.wantCall {
				t.Errorf("controller calls %q, want %q", got, tt.wantCall)
			}
		})
	}
}

func TestActionUnreachable(t *testing.T) {
	addr := deadAddr(t)
	for _, fn := range []func() (int, string, string){
		func() (int, string, string) { return runCmd(runSwitchover, "--to", "b", "--admin", addr) },
		func() (int, string, string) { return runCmd(runFailover, "--to", "b", "--admin", addr) },
	} {
		code, out, errOut := fn()
		if code != 1 || out != "" || !strings.Contains(errOut, "cannot reach the admin API at http://"+addr) {
			t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	}
}

func TestCommandsRegistered(t *testing.T) {
	cmds := commands()
	for _, name := range []string{"status", "switchover", "failover", "attach"} {
		if _, ok := cmds[name]; !ok {
			t.Errorf("command %s not in the dispatch table", name)
		}
	}
}
