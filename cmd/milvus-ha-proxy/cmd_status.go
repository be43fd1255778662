package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/admin"
)

// runStatus prints the proxy's topology as a table, from its admin API.
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	adminURL := fs.String("admin", "", adminFlagHelp)
	asJSON := fs.Bool("json", false, "print the topology as JSON instead of a table")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the proxy")
	setUsage(fs, "status [--admin URL] [--json]",
		"Prints every cluster's role, health, breaker, replication lag and requests served.")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	c, err := admin.NewClient(adminURLOr(*adminURL), nil)
	if err != nil {
		fmt.Fprintf(stderr, "milvus-ha-proxy status: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	v, err := c.Topology(ctx)
	if err != nil {
		reportAdminError(stderr, "status", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			fmt.Fprintf(stderr, "milvus-ha-proxy status: %v\n", err)
			return 1
		}
		return 0
	}
	printStatus(stdout, v)
	return 0
}

// envAdmin names the admin API for status, switchover and failover when
// --admin is not given: a proxy whose admin port is elsewhere (another
// host, a kubectl port-forward) is set once per shell.
const envAdmin = "MILVUS_HA_PROXY_ADMIN"

const adminFlagHelp = "the proxy's admin API `URL` (default $" + envAdmin + ", else " + admin.DefaultURL + ")"

// adminURLOr is flagValue (--admin) when set, else $MILVUS_HA_PROXY_ADMIN,
// else admin.DefaultURL.
func adminURLOr(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if u := os.Getenv(envAdmin); u != "" {
		return u
	}
	return admin.DefaultURL
}

// parseFlags parses args and reports whether the command should stop, with
// which code: 0 for -h, 2 for a bad flag or a stray argument.
func parseFlags(fs *flag.FlagSet, args []string) (code int, done bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, true
		}
		return 2, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "milvus-ha-proxy %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		fs.Usage()
		return 2, true
	}
	return 0, false
}

// reportAdminError explains a failed admin call in terms an operator can
// act on.
func reportAdminError(w io.Writer, cmd string, err error) {
	var unreachable *admin.UnreachableError
	var apiErr *admin.APIError
	switch {
	case errors.As(err, &unreachable):
		fmt.Fprintf(w, "milvus-ha-proxy %s: %v\n(is the proxy running, with admin_listen at that address? otherwise pass --admin URL)\n", cmd, err)
	case errors.As(err, &apiErr):
		fmt.Fprintf(w, "milvus-ha-proxy %s: %v\n", cmd, apiErr)
	default:
		fmt.Fprintf(w, "milvus-ha-proxy %s: %v\n", cmd, err)
	}
}

func printStatus(w io.Writer, v admin.View) {
	fmt.Fprintln(w, statusHeadline(v))
	if b := banner(v); b != "" {
		fmt.Fprintln(w, b)
	}
	for _, r := range v.SplitBrainRisk {
		fmt.Fprintln(w, "SPLIT-BRAIN RISK: "+r)
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tROLE\tHEALTH\tBREAKER\tLAG\tSERVED\tIN FLIGHT")
	for _, c := range v.Clusters {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\n", c.ID, c.Role, health(c), orDash(c.Breaker), lag(c), c.Served, c.Outstanding)
	}
	tw.Flush()

	if notes := statusNotes(v); len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, n)
		}
	}
	printArbiter(w, v.Arbiter)
}

// statusHeadline is who leads and whether the proxy takes traffic.
func statusHeadline(v admin.View) string {
	leader := v.Leader
	if leader == "" {
		leader = "none"
	}
	head := []string{"leader " + leader, "epoch " + strconv.FormatUint(v.Epoch, 10)}
	if v.Discovery != "" {
		head = append(head, "discovery "+v.Discovery)
	}
	if v.FailoverMode != "" {
		head = append(head, "failover "+v.FailoverMode)
	}
	switch {
	case v.Draining:
		head = append(head, "DRAINING")
	case v.Ready:
		head = append(head, "ready")
	default:
		head = append(head, "NOT READY: "+v.NotReadyReason)
	}
	return strings.Join(head, " | ")
}

// statusNotes are the details that do not fit a column: why a cluster is
// down, stale or quarantined, the salvage reports, the last change.
func statusNotes(v admin.View) []string {
	var notes []string
	for _, c := range v.Clusters {
		if !c.Healthy && c.HealthReason != "" {
			notes = append(notes, fmt.Sprintf("%s is down: %s", c.ID, c.HealthReason))
		}
		if c.Role != "leader" && !c.LagKnown && c.LagReason != "" {
			notes = append(notes, fmt.Sprintf("%s lag unknown (counts as stale, no reads that need fresh data): %s", c.ID, c.LagReason))
		}
		if c.Quarantined {
			reason := c.QuarantineReason
			if reason == "" {
				reason = "it holds data the leader lacks"
			}
			notes = append(notes, fmt.Sprintf("%s is QUARANTINED (gets no reads): %s", c.ID, reason))
		}
	}
	for _, s := range v.Salvage {
		line := fmt.Sprintf("salvage (epoch %d): %s was promoted by force from %s at %s", s.Epoch, s.NewLeader, s.OldLeader, s.At.UTC().Format(time.RFC3339))
		if len(s.Checkpoints) > 0 {
			line += fmt.Sprintf("; salvage checkpoint %v", s.Checkpoints)
		}
		switch {
		case s.Unreplicated != "":
			line += "; the old leader held, never replicated: " + s.Unreplicated
		case s.OldLeaderReturned:
			line += "; the old leader is back and demoted"
		default:
			line += "; the old leader has not come back: what it held past the checkpoint is unknown"
		}
		notes = append(notes, line)
	}
	if lc := v.LastChange; lc != nil {
		what := fmt.Sprintf("%s %s -> %s", lc.Kind, orDash(lc.From), orDash(lc.To))
		if lc.Kind == "attach" {
			what = fmt.Sprintf("attach %s to %s", orDash(lc.To), orDash(lc.From))
		}
		line := fmt.Sprintf("last change: %s at %s (epoch %d, %s, took %s)", what,
			lc.At.UTC().Format(time.RFC3339), lc.Epoch, orDash(lc.Result), seconds(lc.TookSeconds))
		if lc.Message != "" {
			line += ": " + lc.Message
		}
		if len(lc.Steps) > 0 {
			line += "; steps " + steps(lc.Steps)
		}
		notes = append(notes, line)
	}
	return notes
}

// printArbiter shows the etcd arbiter: who decides and every proxy.
func printArbiter(w io.Writer, a *admin.ArbiterView) {
	if a == nil {
		return
	}
	fmt.Fprintln(w)
	state := "connected"
	if !a.Connected {
		state = "NOT CONNECTED"
	}
	role := "follows " + orDash(a.Decider)
	if a.Deciding {
		role = "DECIDES"
	}
	fmt.Fprintf(w, "arbiter: etcd %s %s | %s | this proxy %s, %s | topology epoch %d, leader %s\n",
		strings.Join(a.Endpoints, ","), a.Prefix, state, a.ProxyID, role, a.Epoch, orDash(a.Leader))
	if a.Fenced {
		fmt.Fprintf(w, "WRITES FENCED: %s\n", a.FenceReason)
	}
	if a.LastError != "" {
		fmt.Fprintf(w, "last etcd error: %s\n", a.LastError)
	}
	if a.ChangeRunning {
		fmt.Fprintln(w, "a leader change recorded in etcd has not finished")
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROXY\tADDRESS\tEPOCH\tLEADER\tLAST HEARTBEAT\tDECIDES")
	for _, p := range a.Proxies {
		d := ""
		if p.Deciding {
			d = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", p.ID, p.Address, p.Epoch, orDash(p.Leader),
			p.LastHeartbeat.UTC().Format("15:04:05.000"), d)
	}
	tw.Flush()
}

// banner names what stops writes, if anything: a change under way (with
// its step), a stuck switchover, a lost leader, or a hold.
func banner(v admin.View) string {
	held := ""
	if v.FailingOver {
		held = "; writes are held"
	}
	if c := v.ChangeUnderWay; c != nil {
		line := fmt.Sprintf("CHANGE UNDER WAY: %s %s -> %s", c.Kind, orDash(c.From), orDash(c.To))
		if n := len(c.Steps); n > 0 {
			st := c.Steps[n-1]
			where := st.Name
			if st.Cluster != "" {
				where += " on " + st.Cluster
			}
			if st.Done {
				line += ", after step " + where
			} else {
				line += ", step " + where
				if st.Sent != "" {
					line += " (sent " + st.Sent + ")"
				}
			}
		}
		return line + held
	}
	switch {
	case v.FailingOver && v.Phase == "stuck":
		line := "SWITCHOVER STUCK" + held
		if lc := v.LastChange; lc != nil && lc.Message != "" {
			line += ": " + lc.Message
		}
		return line + " (settled automatically after detect_after, or retry `switchover --to` / force `failover --to`)"
	case v.FailingOver:
		return "LEADER CHANGE UNDER WAY" + held
	case v.LeaderLostAt != nil:
		line := "LEADER LOST since " + v.LeaderLostAt.UTC().Format(time.RFC3339) + "; writes wait for a new leader"
		if v.FailoverMode == "manual" {
			line += " (failover.mode is manual: run `milvus-ha-proxy failover --to ID`)"
		}
		return line
	}
	return ""
}

// steps prints a change's steps in one line: name@cluster took.
func steps(ss []admin.Step) string {
	var out []string
	for _, st := range ss {
		s := st.Name
		if st.Cluster != "" {
			s += "@" + st.Cluster
		}
		if st.Done {
			s += " " + seconds(st.TookSeconds)
		} else {
			s += " (running)"
		}
		if st.Error != "" {
			s += " FAILED"
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}

func health(c admin.ClusterView) string {
	switch {
	case c.Quarantined:
		return "quarantined"
	case c.Healthy:
		return "healthy"
	default:
		return "DOWN"
	}
}

func lag(c admin.ClusterView) string {
	switch {
	case c.Role == "leader":
		return "-"
	case !c.LagKnown:
		return "unknown"
	default:
		return seconds(c.LagSeconds)
	}
}

// seconds prints a duration in seconds the way an operator reads it.
func seconds(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	default:
		return d.Round(10 * time.Millisecond).String()
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
