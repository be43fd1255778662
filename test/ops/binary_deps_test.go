package ops

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/milvus-ha-proxy/milvus-ha-proxy"

// testHelpers lists the packages of this module that pkg links and that
// exist for tests only: the suites under test/ and the helper packages,
// whose names end in "test" or "testutil" (internal/testutil,
// etcdarbiter/etcdtest, telemetry/otlptest, bench/benchtest).
func testHelpers(t *testing.T, pkg string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", pkg)
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	var found []string
	for _, p := range strings.Fields(string(out)) {
		if !strings.HasPrefix(p, module+"/") {
			continue
		}
		if strings.HasPrefix(p, module+"/test/") || isTestHelper(p) {
			found = append(found, p)
		}
	}
	return found
}

// TestBinaryLinksNoTestHelpers: the shipped binary links no test suite or
// test helper package (the simulator it ships is the product package sim).
func TestBinaryLinksNoTestHelpers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	if got := testHelpers(t, "./cmd/milvus-ha-proxy"); len(got) > 0 {
		t.Errorf("cmd/milvus-ha-proxy links test packages: %v", got)
	}
	// The check itself: a suite's harness is found where it is linked.
	if got := testHelpers(t, "./test/testenv"); len(got) == 0 {
		t.Errorf("test/testenv links no test package by this check; the check is broken")
	}
}
