package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/config"
)

const manifestPath = "kubernetes/milvus-ha-proxy.yaml"

// manifests decodes the multi-document YAML into objects by kind.
func manifests(t *testing.T) map[string]map[string]any {
	t.Helper()
	f, err := os.Open(manifestPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string]any{}
	dec := yaml.NewDecoder(f)
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", manifestPath, err)
		}
		if doc == nil {
			continue
		}
		kind, _ := doc["kind"].(string)
		if _, dup := out[kind]; dup {
			t.Fatalf("%s has two %s objects", manifestPath, kind)
		}
		out[kind] = doc
	}
	for _, k := range []string{"ConfigMap", "Deployment", "Service"} {
		if out[k] == nil {
			t.Fatalf("%s has no %s", manifestPath, k)
		}
	}
	return out
}

// dig walks a decoded YAML tree: string keys index maps, ints index lists.
func dig(t *testing.T, v any, keys ...any) any {
	t.Helper()
	for i, k := range keys {
		switch k := k.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("%v: not a map at %v", keys[:i+1], keys[:i])
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				t.Fatalf("%v: not a list of %d at %v", keys[:i+1], k+1, keys[:i])
			}
			v = l[k]
		}
	}
	return v
}

// entrypoint is the image's ENTRYPOINT from the Dockerfile.
func entrypoint(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^ENTRYPOINT (\[.*\])$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("Dockerfile has no exec-form ENTRYPOINT")
	}
	var args []string
	if err := json.Unmarshal(m[1], &args); err != nil {
		t.Fatalf("ENTRYPOINT: %v", err)
	}
	return args
}

func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

// TestKubernetesConfigMapPassesCheck: the ConfigMap's config is what the
// container reads (mounted where the entrypoint's --config points), and
// the built binary's `serve --check` accepts it with the entrypoint's
// flags.
func TestKubernetesConfigMapPassesCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	objs := manifests(t)
	ep := entrypoint(t)
	cfgPath := flagValue(ep, "--config")
	if cfgPath == "" {
		t.Fatalf("ENTRYPOINT %v has no --config", ep)
	}
	data, _ := dig(t, objs["ConfigMap"], "data").(map[string]any)
	text, ok := data[path.Base(cfgPath)].(string)
	if !ok {
		t.Fatalf("ConfigMap has no key %q (the entrypoint reads %s)", path.Base(cfgPath), cfgPath)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "milvus-ha-proxy")
	build := exec.Command("go", "build", "-o", bin, "../cmd/milvus-ha-proxy")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// The entrypoint's arguments after the binary, with the file here.
	args := slices.Clone(ep[1:])
	for i := range args {
		if args[i] == cfgPath {
			args[i] = file
		}
	}
	args = append(args, "--check")
	cmd := exec.Command(bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\nstdout:\n%s\nstderr:\n%s", bin, args, err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), ": ok") {
		t.Errorf("serve --check did not say ok:\n%s", stdout.String())
	}

	// The pod mounts the ConfigMap where the entrypoint reads it.
	pod := dig(t, objs["Deployment"], "spec", "template", "spec")
	ctr := dig(t, pod, "containers", 0)
	var mountVolume string
	for _, m := range dig(t, ctr, "volumeMounts").([]any) {
		if dig(t, m, "mountPath") == path.Dir(cfgPath) {
			mountVolume, _ = dig(t, m, "name").(string)
		}
	}
	if mountVolume == "" {
		t.Fatalf("no volumeMount at %s", path.Dir(cfgPath))
	}
	var cmName any
	for _, v := range dig(t, pod, "volumes").([]any) {
		if dig(t, v, "name") == mountVolume {
			cmName = dig(t, v, "configMap", "name")
		}
	}
	if cmName != dig(t, objs["ConfigMap"], "metadata", "name") {
		t.Errorf("volume %s mounts configMap %v, not the manifest's ConfigMap", mountVolume, cmName)
	}

	// Drain finishes before Kubernetes kills the pod.
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	grace, _ := dig(t, pod, "terminationGracePeriodSeconds").(int)
	if d := cfg.Drain.GracePeriod.Std(); time.Duration(grace)*time.Second <= d {
		t.Errorf("terminationGracePeriodSeconds %d is not above drain.grace_period %s", grace, d)
	}
}

// TestKubernetesProbesAndPorts: liveness on /healthz and readiness on
// /readyz of the admin port, container ports equal to the ports the
// entrypoint listens on, a Service that targets them and selects the pod,
// and one replica (the proxy is the failover arbiter).
func TestKubernetesProbesAndPorts(t *testing.T) {
	objs := manifests(t)
	ep := entrypoint(t)
	dep := objs["Deployment"]
	ctr := dig(t, dep, "spec", "template", "spec", "containers", 0)

	ports := map[string]int{} // container port name -> number
	for _, p := range dig(t, ctr, "ports").([]any) {
		name, _ := dig(t, p, "name").(string)
		n, _ := dig(t, p, "containerPort").(int)
		ports[name] = n
	}
	for flagName, portName := range map[string]string{"--listen": "grpc", "--admin-listen": "admin"} {
		_, port, err := net.SplitHostPort(flagValue(ep, flagName))
		if err != nil {
			t.Fatalf("ENTRYPOINT %s: %v", flagName, err)
		}
		if strconv.Itoa(ports[portName]) != port {
			t.Errorf("container port %q is %d, the entrypoint's %s listens on %s", portName, ports[portName], flagName, port)
		}
	}
	for probe, want := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
		if got := dig(t, ctr, probe, "httpGet", "path"); got != want {
			t.Errorf("%s path %v, want %s", probe, got, want)
		}
		if got := dig(t, ctr, probe, "httpGet", "port"); got != "admin" && got != ports["admin"] {
			t.Errorf("%s port %v, want the admin port", probe, got)
		}
	}
	if r := dig(t, dep, "spec", "replicas"); r != 1 {
		t.Errorf("replicas %v: one proxy arbitrates failovers; several do not coordinate", r)
	}
	if s := dig(t, dep, "spec", "strategy", "type"); s != "Recreate" {
		t.Errorf("strategy %v, want Recreate (no two arbiters during a rollout)", s)
	}

	podLabels := dig(t, dep, "spec", "template", "metadata", "labels").(map[string]any)
	for _, sel := range []map[string]any{
		dig(t, dep, "spec", "selector", "matchLabels").(map[string]any),
		dig(t, objs["Service"], "spec", "selector").(map[string]any),
	} {
		for k, v := range sel {
			if podLabels[k] != v {
				t.Errorf("selector %s=%v does not match the pod's labels %v", k, v, podLabels)
			}
		}
	}
	targets := map[any]bool{}
	for _, p := range dig(t, objs["Service"], "spec", "ports").([]any) {
		tp := dig(t, p, "targetPort")
		targets[tp] = true
		if s, ok := tp.(string); ok {
			if _, ok := ports[s]; !ok {
				t.Errorf("Service targetPort %q is no container port", s)
			}
		}
	}
	if !targets["grpc"] || !targets["admin"] {
		t.Errorf("Service targets %v, want grpc and admin", targets)
	}
}
