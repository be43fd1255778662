package ops

import (
	"strings"
	"syscall"
	"testing"
)

// TestServePprofSwitch: the shipped binary serves /debug/pprof on the admin
// port only when admin_pprof is set.
func TestServePprofSwitch(t *testing.T) {
	bin := buildBinary(t)
	for _, tc := range []struct {
		name  string
		extra string
		code  int
	}{
		{"default off", "", 404},
		{"on", "admin_pprof: true\n", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, t.TempDir(), "proxy.yaml", staticBase+tc.extra)
			cmd, _, adminAddr, stderr := startServe(t, bin, nil, "--config", path)
			code, body := httpGet(t, "http://"+adminAddr+"/debug/pprof/goroutine?debug=1")
			if code != tc.code {
				t.Errorf("GET /debug/pprof/goroutine = %d, want %d\n%s", code, tc.code, stderr())
			}
			if tc.code == 200 && !strings.Contains(body, "goroutine profile:") {
				t.Errorf("goroutine profile body: %.300q", body)
			}
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
		})
	}
}
