package telemetry

import (
	"bytes"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

func TestNewLoggerLevelsAndFormats(t *testing.T) {
	var buf bytes.Buffer
	l, err := NewLogger(&buf, "warn", "json")
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.Warn("shown", "k", 1)
	out := buf.String()
	if strings.Contains(out, "hidden") || !strings.Contains(out, `"msg":"shown"`) || !strings.Contains(out, `"k":1`) {
		t.Errorf("json warn logger wrote %q", out)
	}
	buf.Reset()
	l, _ = NewLogger(&buf, "debug", "text")
	l.Debug("dbg")
	if !strings.Contains(buf.String(), "level=DEBUG msg=dbg") {
		t.Errorf("text debug logger wrote %q", buf.String())
	}
	for _, bad := range [][2]string{{"loud", "text"}, {"info", "xml"}} {
		if _, err := NewLogger(&buf, bad[0], bad[1]); err == nil {
			t.Errorf("NewLogger(%q, %q) accepted", bad[0], bad[1])
		}
	}
}

// TestLoggerRedactsCredentials logs credentials at debug level under the
// keys and in the shapes code tends to use and fails if any shows.
func TestLoggerRedactsCredentials(t *testing.T) {
	const secret = "root:Milvus-S3cr3t"
	for _, format := range []string{"text", "json"} {
		var buf bytes.Buffer
		l, err := NewLogger(&buf, "debug", format)
		if err != nil {
			t.Fatal(err)
		}
		md := map[string][]string{"authorization": {"Basic " + secret}, "dbname": {"default"}}
		l.Debug("call", "token", secret, "Password", secret, "api_key", secret,
			slog.Group("cluster", "id", "a", "token", secret),
			"metadata", md, "header", http.Header{"Authorization": {secret}, "X-Other": {"ok"}})
		l.With("secret", secret).Debug("with")
		out := buf.String()
		if strings.Contains(out, "S3cr3t") {
			t.Errorf("%s log leaks a credential:\n%s", format, out)
		}
		for _, keep := range []string{"default", "ok", "[redacted]"} {
			if !strings.Contains(out, keep) {
				t.Errorf("%s log lost %q:\n%s", format, keep, out)
			}
		}
	}
}
