// Command milvus-ha-proxy is a Milvus-API proxy for several Milvus clusters
// joined by replication. main holds flags, subcommands and wiring only;
// the logic lives in the packages it wires together.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command runs one subcommand and returns the process exit code:
// 0 ok, 1 runtime failure, 2 bad usage or bad config.
type command struct {
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
	summary string
}

// commands is the dispatch table. Adding a subcommand is one line here plus
// its cmd_<name>.go file.
func commands() map[string]command {
	return map[string]command{
		"serve":      {runServe, "run the proxy (--config FILE)"},
		"demo":       {runDemo, "run simulated clusters a (leader), b, c and the proxy in front of them"},
		"bench":      {runBench, "benchmark the Milvus API through the proxy or directly"},
		"status":     {runStatus, "print the topology: clusters, roles, health, breakers, replication lag"},
		"switchover": {runSwitchover, "planned leader change with no data loss (--to ID)"},
		"failover":   {runFailover, "forced promotion of a cluster to leader (--to ID)"},
		"attach":     {runAttach, "attach a rebuilt or new cluster as a replication target of the leader (--cluster ID)"},
		"sim":        {runSim, "run one simulated Milvus cluster (for tests)"},
		"version":    {runVersion, "print the version and the module versions it was built with"},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) > 0 && (args[0] == "--version" || args[0] == "-version") {
		return runVersion(context.Background(), args[1:], stdout, stderr)
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "milvus-ha-proxy: unknown command %q\n\n", args[0])
		usage(stderr, cmds)
		return 2
	}
	// The first SIGINT/SIGTERM cancels ctx (graceful stop); commands own
	// what happens next.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cmd.run(ctx, args[1:], stdout, stderr)
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "usage: milvus-ha-proxy <command> [flags]")
	fmt.Fprintln(w, "\ncommands:")
	names := make([]string, 0, len(cmds))
	for name := range cmds {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %-12s %s\n", name, cmds[name].summary)
	}
	fmt.Fprintln(w, "\nrun 'milvus-ha-proxy <command> -h' for a command's flags; --version prints the version")
}

// setUsage gives a subcommand the help layout every command shares:
//
//	usage: milvus-ha-proxy <synopsis>
//
//	<about>
//
//	flags:
//	  -flag ...
//
// synopsis may span lines (continuation lines are indented by the caller).
func setUsage(fs *flag.FlagSet, synopsis, about string) {
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: milvus-ha-proxy %s\n\n%s\n\nflags:\n", strings.TrimRight(synopsis, "\n"), strings.TrimRight(about, "\n"))
		fs.PrintDefaults()
	}
}
