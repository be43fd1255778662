package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// pollAdmin watches the proxy's admin API for leader changes, so a change
// shows up even in read-only workloads (where no write header reveals it).
func (r *runner) pollAdmin(ctx context.Context) {
	url := strings.TrimRight(r.cfg.AdminURL, "/") + "/api/v1/topology"
	client := &http.Client{Timeout: time.Second}
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	failures := 0
	for {
		leader, err := fetchLeader(ctx, client, url)
		if err != nil {
			if failures++; failures == 1 || failures%40 == 0 {
				r.cfg.Logger.Warn("polling the admin topology", "url", url, "err", err)
			}
		} else if leader != "" {
			if ts := r.active.Load(); ts != nil {
				now := time.Now()
				ts.rec.observeLeader(leader, now, now, now.Sub(r.t0), "admin")
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// fetchLeader reads the leader's id from the admin topology JSON. It
// accepts the shapes a topology document plausibly has: a top-level
// "leader" (string, or object with "id"), or a "clusters" list whose
// leader has "role": "leader".
func fetchLeader(ctx context.Context, client *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return leaderFromTopology(body)
}

func leaderFromTopology(body []byte) (string, error) {
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("decoding topology: %w", err)
	}
	switch l := doc["leader"].(type) {
	case string:
		return l, nil
	case map[string]any:
		if id, ok := l["id"].(string); ok {
			return id, nil
		}
	}
	if cs, ok := doc["clusters"].([]any); ok {
		for _, c := range cs {
			m, _ := c.(map[string]any)
			if role, _ := m["role"].(string); strings.EqualFold(role, "leader") {
				if id, ok := m["id"].(string); ok {
					return id, nil
				}
			}
		}
	}
	return "", nil
}

// HTTPPost returns a fault action that POSTs to url and fails unless the
// answer is 2xx: the sim and demo fault controls
// (/sim/{id}/replication/pause, …) and the admin API's failover.
func HTTPPost(url, body string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
		if err != nil {
			return err
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("POST %s: %w", url, err)
		}
		defer resp.Body.Close()
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("POST %s: %s: %s", url, resp.Status, strings.TrimSpace(string(msg)))
		}
		return nil
	}
}

// KillProcess returns a fault action that kills process pid the way a
// machine dies (SIGKILL on Unix): no chance to clean up. For a `sim`
// process that leads, the leader is gone.
func KillProcess(pid int) func(context.Context) error {
	return func(context.Context) error {
		p, err := os.FindProcess(pid)
		if err != nil {
			return err
		}
		return p.Kill()
	}
}

// progress prints a live line: the target being measured, elapsed time,
// operations and throughput over the last second.
func (r *runner) progress(ctx context.Context) {
	cfg := r.cfg
	t := time.NewTicker(time.Second)
	defer t.Stop()
	lastOps := map[*targetState]uint64{}
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			ts := r.active.Load()
			if ts == nil {
				continue
			}
			// Per target: in compare mode the counters of the others stand
			// still while they wait for their next round.
			ops := ts.rec.ops.Load()
			rate := float64(ops-lastOps[ts]) / now.Sub(last).Seconds()
			lastOps[ts], last = ops, now
			var errs uint64
			for i := range ts.rec.errs {
				errs += ts.rec.errs[i].Load()
			}
			elapsed := now.Sub(r.t0).Round(100 * time.Millisecond)
			total := ""
			if cfg.Duration > 0 {
				total = "/" + (cfg.Duration * time.Duration(len(r.targets))).String()
			}
			line := fmt.Sprintf("bench %s  %s%s  ops %d  %.0f ops/s  errors %d",
				ts.t.Name, elapsed, total, ops, rate, errs)
			if cfg.ProgressTTY {
				fmt.Fprintf(cfg.Progress, "\r\x1b[K%s", line)
			} else {
				fmt.Fprintln(cfg.Progress, line)
			}
		}
	}
}
