package bench

import (
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"
)

// TestFlagMappingErrors: a bad flag value is a *UsageError naming that
// flag, found before anything is contacted.
func TestFlagMappingErrors(t *testing.T) {
	tests := []struct {
		name                              string
		admin, alts, lags, levels, leader string
		wantFlag, wantMsg                 string
	}{
		{name: "bad lag", lags: "1s,soon", levels: "strong", wantFlag: "lags", wantMsg: `bad duration "soon"`},
		{name: "negative lag", lags: "-1s", levels: "strong", wantFlag: "lags", wantMsg: `bad duration "-1s"`},
		{name: "bad level", lags: "0s", levels: "strong,sometimes", wantFlag: "levels", wantMsg: `unknown level "sometimes"`},
		{name: "no admin, no alternatives", lags: "0s", levels: "strong", wantFlag: "admin", wantMsg: "consistency-cost needs --admin"},
		{name: "alternative without URL or admin", lags: "0s", levels: "strong", alts: "b", wantFlag: "alternatives", wantMsg: `"b": want ID=CONTROL_URL`},
		{name: "alternative without ID", lags: "0s", levels: "strong", alts: "=http://x", wantFlag: "alternatives", wantMsg: `"=http://x": want ID=CONTROL_URL`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ConsistencyCostFromFlags(context.Background(), tc.admin, tc.alts, tc.lags, tc.levels, tc.leader)
			var u *UsageError
			if !errors.As(err, &u) {
				t.Fatalf("err = %v, want a *UsageError", err)
			}
			if u.Flag != tc.wantFlag || !strings.Contains(u.Msg, tc.wantMsg) {
				t.Fatalf("err = %v, want flag %q with %q", err, tc.wantFlag, tc.wantMsg)
			}
		})
	}
}

func TestConsistencyCostFromFlagsAlternatives(t *testing.T) {
	o, err := ConsistencyCostFromFlags(context.Background(), "http://admin", "b, c=http://c", "0s, 250ms", "strong,eventually", "a")
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Lags) != 2 || o.Lags[1] != 250*time.Millisecond {
		t.Fatalf("lags %v, want [0s 250ms]", o.Lags)
	}
	if len(o.Levels) != 2 || o.Levels[0] != "strong" || o.Levels[1] != "eventually" {
		t.Fatalf("levels %v", o.Levels)
	}
	if o.Leader != "a" || o.SetLag == nil {
		t.Fatalf("leader %q, SetLag set %v", o.Leader, o.SetLag != nil)
	}
}

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in      string
		want    Target
		wantErr string
	}{
		{in: "127.0.0.1:19530", want: Target{Addr: "127.0.0.1:19530"}},
		{in: "proxy=127.0.0.1:19530", want: Target{Name: "proxy", Addr: "127.0.0.1:19530"}},
		{in: "", wantErr: "bad endpoint"},
		{in: "a=", wantErr: "bad endpoint"},
		{in: "a=host :1", wantErr: "bad endpoint"},
		{in: "=host:1", wantErr: "empty name"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTarget(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// TestFlagsCommand: what the parsed flags become — the targets, where a
// scenario runs, and the scenario defaults that stand in for flags not
// given (while a given flag wins).
func TestFlagsCommand(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, c Command)
	}{
		{"measurement", []string{"--target", "p=127.0.0.1:1", "--compare", "d=127.0.0.1:2, 127.0.0.1:3", "--workload", "Search", "--ops", "10", "--metric", "ip"},
			func(t *testing.T, c Command) {
				want := []Target{{Name: "p", Addr: "127.0.0.1:1"}, {Name: "d", Addr: "127.0.0.1:2"}, {Addr: "127.0.0.1:3"}}
				if len(c.Config.Targets) != 3 || c.Config.Targets[0] != want[0] || c.Config.Targets[1] != want[1] || c.Config.Targets[2] != want[2] {
					t.Errorf("targets %v, want %v", c.Config.Targets, want)
				}
				if c.InProcess || c.Scenario != "" || c.Config.Workload != WorkloadSearch || c.Config.Metric != "IP" || c.Config.Concurrency != 8 || c.Config.Preload != 10000 {
					t.Errorf("command %+v", c)
				}
			}},
		{"in-process scenario defaults", []string{"--scenario", "read-scaling", "--ops", "5"},
			func(t *testing.T, c Command) {
				if !c.InProcess || len(c.Config.Targets) != 0 || c.Config.Dim != 32 || c.Config.Preload != 1000 || c.Config.Concurrency != 0 || c.Config.Setup != "" || c.Config.Consistency != "" {
					t.Errorf("command %+v", c)
				}
			}},
		{"scenario with given flags", []string{"--scenario", "read-scaling", "--ops", "5", "--dim", "16", "--concurrency", "3", "--consistency", "strong", "--setup", "first"},
			func(t *testing.T, c Command) {
				if c.Config.Dim != 16 || c.Config.Concurrency != 3 || c.Config.Consistency != Strong || c.Config.Setup != SetupFirst {
					t.Errorf("command %+v", c)
				}
			}},
		{"in-process consistency-cost", []string{"--scenario", "consistency-cost", "--ops", "5", "--levels", "strong,eventually", "--lags", "0s,1s"},
			func(t *testing.T, c Command) {
				if len(c.ConsistencyCost.Levels) != 2 || len(c.ConsistencyCost.Lags) != 2 || c.ConsistencyCost.SetLag != nil {
					t.Errorf("consistency-cost options %+v", c.ConsistencyCost)
				}
			}},
		{"fault", []string{"--target", "127.0.0.1:1", "--workload", "insert", "--duration", "1s", "--fault-at", "200ms", "--fault-post", "http://127.0.0.1:1/x"},
			func(t *testing.T, c Command) {
				if len(c.Config.Faults) != 1 || c.Config.Faults[0].At != 200*time.Millisecond || c.Config.Faults[0].Name != "POST http://127.0.0.1:1/x" {
					t.Errorf("faults %+v", c.Config.Faults)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("bench", flag.ContinueOnError)
			var f Flags
			f.Register(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			c, err := f.Command(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}
