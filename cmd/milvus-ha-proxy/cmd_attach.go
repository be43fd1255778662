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

// runAttach asks the proxy to attach a rebuilt or new cluster as a
// replication target of the leader.
func runAttach(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("attach", flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.String("cluster", "", "id of the cluster to attach (required; one of the proxy's configured clusters)")
	adminURL := fs.String("admin", "", adminFlagHelp)
	timeout := fs.Duration("timeout", 3*time.Minute, "how long to wait for the proxy to finish")
	setUsage(fs, "attach --cluster ID [--admin URL]",
		"Attaches a rebuilt or new cluster as a replication target of the current leader:\n"+
			"the configuration goes to the cluster first, then to the leader. CDC carries\n"+
			"only what the leader takes from then on: restore the history from a backup of\n"+
			"the leader first (docs/operations.md). Refused, with the reason, when not safe\n"+
			"(a former leader not rebuilt, a quarantined cluster, one replicating elsewhere).")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if strings.TrimSpace(*id) == "" {
		fmt.Fprintln(stderr, "milvus-ha-proxy attach: missing --cluster ID (the cluster to attach; `milvus-ha-proxy status` lists them)")
		return 2
	}
	c, err := admin.NewClient(adminURLOr(*adminURL), nil)
	if err != nil {
		fmt.Fprintf(stderr, "milvus-ha-proxy attach: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	res, err := c.Attach(ctx, *id)
	if err != nil {
		reportAdminError(stderr, "attach", err)
		return 1
	}
	fmt.Fprintf(stdout, "attach done: %s is a replication target of %s, took %s\n", res.To, orDash(res.From), seconds(res.TookSeconds))
	if res.Message != "" {
		fmt.Fprintln(stdout, res.Message)
	}
	return 0
}
