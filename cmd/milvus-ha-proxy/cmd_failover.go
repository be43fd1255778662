package main

import (
	"context"
	"io"
)

// runFailover asks the proxy to force-promote a cluster. Writes the old
// leader took but had not replicated are not on the new leader; the proxy
// reports them (status shows the salvage).
func runFailover(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runAction(ctx, "failover",
		"Forced promotion: the target becomes leader now, without waiting for the old\n"+
			"leader. Writes the old leader had not replicated are not on the new one;\n"+
			"`milvus-ha-proxy status` reports them once the old leader is back.",
		"note: a forced promotion can lose writes the old leader had not replicated; see `milvus-ha-proxy status` (salvage).",
		args, stdout, stderr)
}
