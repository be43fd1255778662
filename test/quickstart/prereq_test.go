package quickstart

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakePython writes a python3 stand-in that reports version v (and can
// import venv) for the prereq check.
func fakePython(t *testing.T, v string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "python3")
	script := "#!/bin/sh\n" +
		"case \"$2\" in *version_info*) echo " + v + " ;; esac\n" +
		"exit 0\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPrereqPythonVersion: `make prereq` checks the Python version before
// anything else and names it when it is too old (under 3.10 pip's own
// error names a package, not the version).
func TestPrereqPythonVersion(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed")
	}
	root := repoRoot(t)
	for _, tt := range []struct {
		version string
		ok      bool
		want    []string
	}{
		{"3.10.12", false, []string{"Python 3.10.12 found", "needs Python >= 3.11", "No matching distribution found", "SDK_PYTHON=python3.11"}},
		{"3.9.2", false, []string{"Python 3.9.2 found", "needs Python >= 3.11"}},
		{"3.11.0", true, []string{"prereq: Python 3.11.0 ok"}},
		{"3.13.1", true, []string{"prereq: Python 3.13.1 ok"}},
	} {
		t.Run(tt.version, func(t *testing.T) {
			// prereq, not prereq-python: the Python check must come first
			// and stop the rest.
			cmd := exec.Command("make", "-s", "--no-print-directory", "prereq", "SDK_PYTHON="+fakePython(t, tt.version))
			cmd.Dir = root
			out, err := cmd.CombinedOutput()
			if tt.ok {
				if !strings.Contains(string(out), tt.want[0]) {
					t.Fatalf("want %q, got (err %v):\n%s", tt.want[0], err, out)
				}
				return
			}
			if err == nil {
				t.Fatalf("make prereq succeeded with Python %s:\n%s", tt.version, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(string(out), "prereq: go, node") {
				t.Errorf("other checks ran after the Python check failed:\n%s", out)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		cmd := exec.Command("make", "-s", "--no-print-directory", "prereq-python", "SDK_PYTHON=/nonexistent/python3")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "/nonexistent/python3 not found") {
			t.Errorf("missing Python: err %v, output:\n%s", err, out)
		}
	})
}
