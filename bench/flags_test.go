package bench

import (
	"context"
	"errors"
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
