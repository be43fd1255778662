package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"text/tabwriter"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/app"
)

// runVersion prints the proxy's version, the Go toolchain and VCS revision
// it was built with, and every module in the binary with its version: what
// a bug report needs (the Milvus proto and SDK versions included).
func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	short := fs.Bool("short", false, "print only the version number")
	setUsage(fs, "version [--short]   (or: milvus-ha-proxy --version)",
		"Prints the version, the Go toolchain, the source revision and the version of\nevery module the binary was built with.")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if *short {
		fmt.Fprintln(stdout, app.Version)
		return 0
	}
	writeVersion(stdout, app.Version)
	return 0
}

// writeVersion writes the version report from the binary's build info.
func writeVersion(w io.Writer, version string) {
	fmt.Fprintf(w, "milvus-ha-proxy %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		fmt.Fprintln(w, "build info: not available (binary built without module support)")
		return
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if rev := settings["vcs.revision"]; rev != "" {
		line := "revision " + rev
		if t := settings["vcs.time"]; t != "" {
			line += " (" + t + ")"
		}
		if settings["vcs.modified"] == "true" {
			line += ", with uncommitted changes"
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintf(w, "module %s %s\n", bi.Main.Path, orDash(bi.Main.Version))
	if len(bi.Deps) == 0 {
		return
	}
	fmt.Fprintln(w, "\nbuilt with:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, d := range bi.Deps {
		v := d.Version
		if d.Replace != nil {
			v += " => " + d.Replace.Path + " " + d.Replace.Version
		}
		fmt.Fprintf(tw, "  %s\t%s\n", d.Path, v)
	}
	tw.Flush()
}
