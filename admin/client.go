package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// DefaultURL is the admin API the CLI talks to when --admin is not given.
const DefaultURL = "http://127.0.0.1:9091"

// Client calls a proxy's admin API (the status, switchover and failover
// commands use it).
type Client struct {
	base string
	http *http.Client
}

// NewClient returns a Client for base, which may omit the scheme
// ("127.0.0.1:9091"). hc nil means http.DefaultClient; per-call deadlines
// come from the context.
func NewClient(base string, hc *http.Client) (*Client, error) {
	if base == "" {
		base = DefaultURL
	}
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("admin URL %q: want http://host:port", base)
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimRight(u.String(), "/"), http: hc}, nil
}

// URL returns the base URL the client calls.
func (c *Client) URL() string { return c.base }

// APIError is an error answer from the admin API.
type APIError struct {
	StatusCode int
	// Code and Message come from the ErrorBody; for an answer that is not
	// one (a proxy in front, an old version), Message holds the raw body.
	Code    string
	Message string
}

func (e *APIError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("%s (HTTP %d): %s", e.Code, e.StatusCode, e.Message)
	}
	return fmt.Sprintf("HTTP %d: %s", e.StatusCode, e.Message)
}

// UnreachableError means no HTTP answer came back at all.
type UnreachableError struct {
	URL string
	Err error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the admin API at %s: %v", e.URL, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Topology fetches GET /api/v1/topology.
func (c *Client) Topology(ctx context.Context) (View, error) {
	var v View
	err := c.call(ctx, http.MethodGet, "/api/v1/topology", nil, &v)
	return v, err
}

// Switchover calls POST /api/v1/switchover.
func (c *Client) Switchover(ctx context.Context, to string) (Result, error) {
	var r Result
	err := c.call(ctx, http.MethodPost, "/api/v1/switchover", ActionRequest{To: to}, &r)
	return r, err
}

// Failover calls POST /api/v1/failover.
func (c *Client) Failover(ctx context.Context, to string) (Result, error) {
	var r Result
	err := c.call(ctx, http.MethodPost, "/api/v1/failover", ActionRequest{To: to}, &r)
	return r, err
}

// Attach asks the proxy to attach a rebuilt or new cluster as a
// replication target of the leader.
func (c *Client) Attach(ctx context.Context, cluster string) (Result, error) {
	var r Result
	err := c.call(ctx, http.MethodPost, "/api/v1/attach", map[string]string{"cluster": cluster}, &r)
	return r, err
}

func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return &UnreachableError{URL: c.base, Err: unwrapURLError(err)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return &UnreachableError{URL: c.base, Err: fmt.Errorf("reading the answer: %w", err)}
	}
	if resp.StatusCode != http.StatusOK {
		var eb ErrorBody
		if json.Unmarshal(data, &eb) == nil && eb.Error != "" {
			return &APIError{StatusCode: resp.StatusCode, Code: eb.Code, Message: eb.Error}
		}
		return &APIError{StatusCode: resp.StatusCode, Message: strings.TrimSpace(string(data))}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: answer is not the expected JSON: %w", method, path, err)
	}
	return nil
}

// unwrapURLError drops net/http's `Get "url": ` prefix; the caller names the
// URL once.
func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}
