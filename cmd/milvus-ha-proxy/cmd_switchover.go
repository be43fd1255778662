package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/admin"
)

// runSwitchover asks the proxy for a planned leader change with no data
// loss.
func runSwitchover(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runAction(ctx, "switchover",
		"Planned leader change, zero data loss: writes are held, the target catches up\n"+
			"with the leader on every pchannel, then takes the writes.",
		"", args, stdout, stderr)
}

// runAction is the shared body of switchover and failover; note, when set,
// is printed after a successful action.
func runAction(ctx context.Context, kind, about, note string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(kind, flag.ContinueOnError)
	fs.SetOutput(stderr)
	to := fs.String("to", "", "id of the cluster to make leader (required)")
	adminURL := fs.String("admin", "", adminFlagHelp)
	timeout := fs.Duration("timeout", 3*time.Minute, "how long to wait for the proxy to finish")
	setUsage(fs, kind+" --to ID [--admin URL]", about)
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if strings.TrimSpace(*to) == "" {
		fmt.Fprintf(stderr, "milvus-ha-proxy %s: missing --to ID (the cluster to make leader; `milvus-ha-proxy status` lists them)\n", kind)
		return 2
	}
	c, err := admin.NewClient(adminURLOr(*adminURL), nil)
	if err != nil {
		fmt.Fprintf(stderr, "milvus-ha-proxy %s: %v\n", kind, err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	call := c.Switchover
	if kind == "failover" {
		call = c.Failover
	}
	res, err := call(ctx, *to)
	if err != nil {
		reportAdminError(stderr, kind, err)
		return 1
	}
	printResult(stdout, kind, res)
	// The note is about a promotion by force; a failover whose old
	// leader answered was not one (no salvage checkpoint).
	if note != "" && (kind != "failover" || len(res.SalvageCheckpoint) > 0) {
		fmt.Fprintln(stdout, note)
	}
	return 0
}

func printResult(w io.Writer, kind string, r admin.Result) {
	fmt.Fprintf(w, "%s done: leader is now %s (was %s), epoch %d, took %s", kind, r.To, orDash(r.From), r.Epoch, seconds(r.TookSeconds))
	if r.WritesHeld > 0 {
		fmt.Fprintf(w, ", %d writes held meanwhile", r.WritesHeld)
	}
	fmt.Fprintln(w)
	if r.Message != "" {
		fmt.Fprintln(w, r.Message)
	}
	if len(r.SalvageCheckpoint) > 0 {
		fmt.Fprintf(w, "salvage checkpoint of %s: %v\n", r.To, r.SalvageCheckpoint)
	}
	if len(r.Quarantined) > 0 {
		fmt.Fprintf(w, "quarantined (ran ahead of the new leader; no reads until dealt with): %s\n", strings.Join(r.Quarantined, ", "))
	}
}
