package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// This file maps the values of the `bench` command's flags to this
// package's types, so the command only parses flags and runs; errors about
// a flag are *UsageError values naming it.

// ConsistencyCostFromFlags builds the lag controls: each alternative's
// replication delay is set through its control URL (the simulator's fault
// controls), by default the --admin URL of `demo`, where they live.
func ConsistencyCostFromFlags(ctx context.Context, admin, alts, lags, levels, leader string) (ConsistencyCostOptions, error) {
	var o ConsistencyCostOptions
	var err error
	if o.Levels, o.Lags, err = ParseLevelsLags(levels, lags); err != nil {
		return o, err
	}
	o.Leader = leader
	byURL := map[string][]string{}
	var order []string
	add := func(url, id string) {
		if _, ok := byURL[url]; !ok {
			order = append(order, url)
		}
		byURL[url] = append(byURL[url], id)
	}
	if alts == "" {
		if admin == "" {
			return o, &UsageError{Flag: "admin", Msg: "consistency-cost needs --admin (or --alternatives ID=CONTROL_URL,...)"}
		}
		l, ids, err := AdminTopology(ctx, admin)
		if err != nil {
			return o, fmt.Errorf("finding the alternatives: %w", err)
		}
		if len(ids) == 0 {
			return o, errors.New("the admin topology lists no alternatives")
		}
		if o.Leader == "" {
			o.Leader = l
		}
		for _, id := range ids {
			add(admin, id)
		}
	} else {
		for _, s := range strings.Split(alts, ",") {
			id, url, found := strings.Cut(strings.TrimSpace(s), "=")
			if !found {
				url = admin
			}
			if id == "" || url == "" {
				return o, &UsageError{Flag: "alternatives", Msg: fmt.Sprintf("%q: want ID=CONTROL_URL, or ID with --admin", s)}
			}
			add(url, id)
		}
	}
	setters := make([]func(context.Context, time.Duration) error, 0, len(order))
	for _, u := range order {
		setters = append(setters, SimLagSetter(u, byURL[u]))
	}
	o.SetLag = func(ctx context.Context, d time.Duration) error {
		for _, set := range setters {
			if err := set(ctx, d); err != nil {
				return err
			}
		}
		return nil
	}
	return o, nil
}

// ParseLevelsLags reads the comma-separated --levels (consistency levels)
// and --lags (non-negative durations) of the consistency-cost scenario.
func ParseLevelsLags(levels, lags string) ([]Consistency, []time.Duration, error) {
	var ls []Consistency
	var ds []time.Duration
	for _, s := range strings.Split(lags, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil || d < 0 {
			return nil, nil, &UsageError{Flag: "lags", Msg: fmt.Sprintf("bad duration %q", s)}
		}
		ds = append(ds, d)
	}
	for _, s := range strings.Split(levels, ",") {
		l, err := ParseConsistency(strings.TrimSpace(s))
		if err != nil {
			return nil, nil, &UsageError{Flag: "levels", Msg: err.Error()}
		}
		ls = append(ls, l)
	}
	return ls, ds, nil
}

// ParseTarget reads "[NAME=]ADDR".
func ParseTarget(s string) (Target, error) {
	name, addr, found := strings.Cut(s, "=")
	if !found {
		name, addr = "", s
	}
	if addr == "" || strings.ContainsAny(addr, " \t") {
		return Target{}, fmt.Errorf("bad endpoint %q (want [NAME=]HOST:PORT)", s)
	}
	if found && name == "" {
		return Target{}, fmt.Errorf("empty name in %q", s)
	}
	return Target{Name: name, Addr: addr}, nil
}
