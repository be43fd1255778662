package main

import (
	"bytes"
	"context"
	"regexp"
	"runtime"
	"testing"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/app"
)

// TestHelpLayout: every subcommand's -h has the same layout: the usage
// line naming the command, a blank line, what the command does, a blank
// line, "flags:" and the flag defaults; it exits 0 and writes nothing to
// stdout.
func TestHelpLayout(t *testing.T) {
	layout := regexp.MustCompile(`(?s)^usage: milvus-ha-proxy (\S+)[^\n]*\n` + // usage line
		`(?:[^\n]+\n)*` + // continuation lines of a long synopsis
		`\n[A-Z][^\n]+\n(?:[^\n]+\n)*` + // a paragraph saying what it does
		`\nflags:\n(?:  -\S+[^\n]*\n    \t[^\n]*\n(?:[^\n]+\n)*)+$`) // flag defaults
	for name, cmd := range commands() {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := cmd.run(context.Background(), []string{"-h"}, &stdout, &stderr); code != 0 {
				t.Fatalf("-h exit %d, want 0; stderr:\n%s", code, stderr.String())
			}
			if stdout.Len() != 0 {
				t.Errorf("-h wrote to stdout:\n%s", stdout.String())
			}
			m := layout.FindStringSubmatch(stderr.String())
			if m == nil {
				t.Fatalf("help does not follow the layout (usage line, blank, description, blank, flags:):\n%s", stderr.String())
			}
			if m[1] != name {
				t.Errorf("usage line names %q, want %q", m[1], name)
			}
		})
	}
}

// TestVersion: --version and the version command print the version, the
// Go toolchain and the modules the binary was built with (a test binary
// has build info with its dependencies).
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"version"}} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr.String())
		}
		out := stdout.String()
		for _, want := range []string{
			`(?m)^milvus-ha-proxy ` + regexp.QuoteMeta(app.Version+" ("+runtime.Version()),
			`(?m)^built with:$`,
			`(?m)^  github\.com/milvus-io/milvus-proto/go-api/v2 +v\d`,
			`(?m)^  google\.golang\.org/grpc +v\d`,
		} {
			if !regexp.MustCompile(want).MatchString(out) {
				t.Errorf("%v: output does not match %s:\n%s", args, want, out)
			}
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"version", "--short"}, &stdout, &stderr); code != 0 || stdout.String() != app.Version+"\n" {
		t.Errorf("version --short: exit %d, output %q, want %q", code, stdout.String(), app.Version+"\n")
	}
	if code := run([]string{"version", "extra"}, &stdout, &stderr); code != 2 {
		t.Errorf("version extra: exit %d, want 2", code)
	}
}
