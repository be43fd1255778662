// Package milvus_test runs milvus-ha-proxy in front of a real Milvus: the
// standalone server of PyPI's `milvus` 2.3.5 (embedded etcd, rocksmq, local
// storage), started by launch.py beside this file on loopback ports chosen
// at run time, each server in its own process group, killed with SIGKILL
// when the test ends (and by the kernel if the test binary dies first).
// The proxy is the built binary's `serve` command in its own process,
// static discovery, that Milvus as its only (leader) cluster.
//
// The tests need a Python with the `milvus` package: MHP_MILVUS_PYTHON
// names it (`make test-milvus` sets it to the venv's python after
// installing requirements.txt). Without it they skip, so `go test ./...`
// stays quick; MHP_MILVUS_REQUIRED=1 turns the skip into a failure.
// MHP_BIN is a prebuilt milvus-ha-proxy (default: built once per run).
package milvus_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// binary is the milvus-ha-proxy the tests run (MHP_BIN or built once).
var binary string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Getenv(pythonEnv) == "" {
		// Every test skips (or fails, with MHP_MILVUS_REQUIRED) on its own.
		return m.Run()
	}
	if b := os.Getenv("MHP_BIN"); b != "" {
		binary = b
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "mhp-milvus-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "milvus-ha-proxy")
	cmd := exec.Command("go", "build", "-o", binary, "github.com/milvus-ha-proxy/milvus-ha-proxy/cmd/milvus-ha-proxy")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building milvus-ha-proxy:", err)
		return 1
	}
	return m.Run()
}
