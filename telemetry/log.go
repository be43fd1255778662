package telemetry

import (
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
)

// ParseLevel reads debug, info, warn or error.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// NewLogger returns a slog.Logger writing text or json lines to w at level
// (debug, info, warn, error) and up.
//
// As a second line of defence behind config.Secret, any attribute whose key
// names a credential (token, password, passwd, secret, authorization,
// api_key, apikey, credential) is replaced by "[redacted]" whatever its value,
// at every level and in every group.
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	l, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: l, ReplaceAttr: redactAttr}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

var secretKeys = []string{"token", "password", "passwd", "secret", "authorization", "api_key", "apikey", "credential"}

// IsSecretKey reports whether an attribute or header key names a credential.
func IsSecretKey(key string) bool {
	k := strings.ToLower(key)
	for _, s := range secretKeys {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

func redactAttr(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindGroup {
		return a
	}
	if IsSecretKey(a.Key) {
		if a.Value.Kind() == slog.KindString && a.Value.String() == "" {
			return a
		}
		return slog.String(a.Key, "[redacted]")
	}
	if a.Value.Kind() == slog.KindAny {
		if m, ok := redactMap(a.Value.Any()); ok {
			return slog.Any(a.Key, m)
		}
	}
	return a
}

// redactMap copies a map keyed by strings (gRPC metadata.MD, http.Header)
// with the values of credential keys replaced, so logging a request's
// headers cannot print its authorization.
func redactMap(v any) (map[string]any, bool) {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Map || rv.Type().Key().Kind() != reflect.String {
		return nil, false
	}
	out := make(map[string]any, rv.Len())
	hidden := false
	for it := rv.MapRange(); it.Next(); {
		k := it.Key().String()
		if IsSecretKey(k) {
			out[k] = "[redacted]"
			hidden = true
			continue
		}
		out[k] = it.Value().Interface()
	}
	return out, hidden
}
