package topology

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
)

// TestChooseLeader: which cluster discovery makes the leader from the
// clusters' own configurations, above all when more than one could be a
// source (a proxy restarted after a lossy failover, a former leader back
// with its old configuration).
func TestChooseLeader(t *testing.T) {
	down := errors.New("connection refused")
	alone := func(id string) *commonpb.ReplicateConfiguration { return starConfig(id, 2) }
	type ans = configAnswer
	cases := []struct {
		name    string
		cur     string
		answers map[string]ans
		want    string
		split   []string
	}{
		{name: "steady star", answers: map[string]ans{
			"a": {cfg: starConfig("a", 2, "b", "c")}, "b": {cfg: starConfig("a", 2, "b", "c")}, "c": {cfg: starConfig("a", 2, "b", "c")}},
			want: "a"},
		{name: "leader down at start: the targets name it", answers: map[string]ans{
			"a": {err: down}, "b": {cfg: starConfig("a", 2, "b", "c")}, "c": {cfg: starConfig("a", 2, "b", "c")}},
			want: "a"},
		{name: "current leader kept against a returning former leader", cur: "b", answers: map[string]ans{
			"a": {cfg: starConfig("a", 2, "b", "c")}, "b": {cfg: starConfig("b", 2, "c")}, "c": {cfg: starConfig("b", 2, "c")}},
			want: "b"},
		// A proxy restarted after a lossy failover b -> c (b was killed;
		// a, a target of b, was not re-pointed): b unreachable is named by
		// a, c claims alone. a's configuration lists c as b's target, and
		// c now claims: a's vote for b is older than c's promotion.
		{name: "restart: dead former leader named by a stale target", answers: map[string]ans{
			"a": {cfg: starConfig("b", 2, "a", "c")}, "b": {err: down}, "c": {cfg: alone("c")}},
			want: "c"},
		// The same, and b comes back with its old configuration naming c
		// its target: b was superseded by c's promotion.
		{name: "restart: former leader back with its old configuration", answers: map[string]ans{
			"a": {cfg: starConfig("b", 2, "a", "c")}, "b": {cfg: starConfig("b", 2, "a", "c")}, "c": {cfg: alone("c")}},
			want: "c"},
		// Two votes for the former leader do not outweigh the evidence:
		// a majority would pick a here.
		{name: "restart: stale majority for the former leader", answers: map[string]ans{
			"a": {cfg: starConfig("a", 2, "b", "c")}, "b": {cfg: starConfig("a", 2, "b", "c")}, "c": {cfg: starConfig("c", 2)}},
			want: "c"},
		// Nothing says which came last: a claims with a configuration
		// that does not list c; c is unreachable and named by b. Failing
		// closed instead of picking a by config order.
		{name: "restart: two possible sources, no evidence", answers: map[string]ans{
			"a": {cfg: starConfig("a", 2)}, "b": {cfg: starConfig("c", 2, "b")}, "c": {err: down}},
			split: []string{"a", "c"}},
		{name: "restart: two claimants, neither listing the other", answers: map[string]ans{
			"a": {cfg: starConfig("a", 2, "b")}, "b": {cfg: starConfig("a", 2, "b")}, "c": {cfg: alone("c")}},
			split: []string{"a", "c"}},
		{name: "two claimants each listing the other", answers: map[string]ans{
			"a": {cfg: starConfig("a", 2, "c")}, "b": {err: down}, "c": {cfg: starConfig("c", 2, "a")}},
			split: []string{"a", "c"}},
		{name: "current leader gone over to another source", cur: "a", answers: map[string]ans{
			"a": {cfg: starConfig("c", 2, "a", "b")}, "b": {cfg: starConfig("c", 2, "a", "b")}, "c": {cfg: starConfig("c", 2, "a", "b")}},
			want: "c"},
	}
	m := &Manager{order: []*member{{id: "a"}, {id: "b"}, {id: "c"}}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tally := m.tally(tc.answers)
			got, split := m.chooseLeader(tc.cur, &tally)
			if got != tc.want || !slices.Equal(split, tc.split) {
				t.Fatalf("chooseLeader = %q, split brain %v; want %q, %v", got, split, tc.want, tc.split)
			}
			if len(split) > 0 {
				msg := m.noLeaderReason(&tally, split)
				for _, want := range []string{"split brain", "failover --to"} {
					if !strings.Contains(msg, want) {
						t.Fatalf("no-leader reason %q lacks %q", msg, want)
					}
				}
			}
		})
	}
}
