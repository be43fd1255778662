package config

import (
	"strings"
	"testing"
)

// TestParseOTLPEndpointHidesCredentials: an endpoint carrying user-info is
// refused, and no error about an endpoint echoes a password.
func TestParseOTLPEndpointHidesCredentials(t *testing.T) {
	for _, in := range []string{
		"https://root:SecretPassw0rd@collector:4317",
		"https://root:SecretPassw0rd@collector",
		"root:SecretPassw0rd@collector:4317",
		"ftp://root:SecretPassw0rd@collector:21",
		"http://root:SecretPassw0rd@[::1",
	} {
		_, _, err := ParseOTLPEndpoint(in)
		if err == nil {
			t.Errorf("%q: accepted", in)
			continue
		}
		if strings.Contains(err.Error(), "SecretPassw0rd") {
			t.Errorf("%q: error shows the password: %v", in, err)
		}
	}
	if hp, insecure, err := ParseOTLPEndpoint("http://collector:4317"); err != nil || hp != "collector:4317" || !insecure {
		t.Errorf("plain endpoint: %q %v %v", hp, insecure, err)
	}
}
