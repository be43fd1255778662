package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime/debug"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/app"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/config"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/telemetry"
)

// runServe runs the proxy from a config file until ctx is cancelled, then
// drains for drain.grace_period.
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file (YAML); default $"+config.EnvConfig)
	listen := fs.String("listen", "", "gRPC listen address (overrides listen)")
	adminListen := fs.String("admin-listen", "", "admin HTTP listen address (overrides admin_listen)")
	check := fs.Bool("check", false, "validate the config, print the effective config and exit")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (overrides log.level)")
	logFormat := fs.String("log-format", "", "text or json (overrides log.format)")
	setUsage(fs, "serve [--config FILE] [--check] [--listen ADDR] [--admin-listen ADDR]",
		"Runs the proxy in front of the clusters of the config file (default $"+config.EnvConfig+")\n"+
			"until SIGINT/SIGTERM, then drains for drain.grace_period. --check validates the\n"+
			"config, prints the effective config (secrets redacted) and exits.")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	file, err := config.ResolvePath(*path)
	if err != nil {
		fmt.Fprintf(stderr, "serve: %v\n", err)
		return 2
	}
	cfg, err := config.Load(file)
	if err != nil {
		fmt.Fprintf(stderr, "serve: %v\n", err)
		return 2
	}
	overrideListen(cfg, *listen, *adminListen)
	if *logLevel != "" {
		cfg.Log.Level = *logLevel
	}
	if *logFormat != "" {
		cfg.Log.Format = *logFormat
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "serve: %v\n", err)
		return 2
	}
	if *check {
		fmt.Fprintf(stdout, "# %s: ok\n%s", file, cfg.String())
		return 0
	}
	logger, err := telemetry.NewLogger(stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		fmt.Fprintf(stderr, "serve: %v\n", err)
		return 2
	}
	applyRuntime(cfg.Runtime, logger)
	return runApp(ctx, app.Options{Config: cfg, Logger: logger}, stdout, nil)
}

// applyRuntime sets the garbage collector from the runtime section, except
// what the GOGC and GOMEMLIMIT environment variables set already (the Go
// runtime read them at start), and logs what is in force.
func applyRuntime(rt config.Runtime, logger *slog.Logger) {
	gcFrom, limitFrom := "GOGC", "GOMEMLIMIT"
	if _, ok := os.LookupEnv("GOGC"); !ok {
		debug.SetGCPercent(rt.GCPercent)
		gcFrom = "runtime.gc_percent"
	}
	if _, ok := os.LookupEnv("GOMEMLIMIT"); !ok && rt.MemoryLimit > 0 {
		debug.SetMemoryLimit(rt.MemoryLimit)
		limitFrom = "runtime.memory_limit"
	}
	gc := debug.SetGCPercent(-1)
	debug.SetGCPercent(gc)
	limit := debug.SetMemoryLimit(-1) // a negative limit only reads it
	attrs := []any{"gc_percent", gc, "gc_percent_from", gcFrom}
	if limit != math.MaxInt64 {
		attrs = append(attrs, "memory_limit", limit, "memory_limit_from", limitFrom)
	}
	logger.Info("garbage collector", attrs...)
}

func overrideListen(cfg *config.Config, listen, adminListen string) {
	if listen != "" {
		cfg.Listen = listen
	}
	if adminListen != "" {
		cfg.AdminListen = adminListen
	}
}

// runApp starts the proxy, prints where it listens (and, when hints is
// set, the lines it prints with the addresses the proxy got: demo), waits
// for ctx (a signal) or a server failure, then drains.
func runApp(ctx context.Context, opts app.Options, stdout io.Writer, hints func(addr, adminAddr string)) int {
	logger := opts.Logger
	a, err := app.New(ctx, opts)
	if err != nil {
		logger.Error("cannot build the proxy", "err", err)
		return 1
	}
	if err := a.Start(); err != nil {
		logger.Error("cannot start the proxy", "err", err)
		return 1
	}
	fmt.Fprintf(stdout, "milvus-ha-proxy listening on %s (gRPC), admin on http://%s\n", a.Addr(), a.AdminAddr())
	if hints != nil {
		hints(a.Addr(), a.AdminAddr())
	}
	code := 0
	select {
	case <-ctx.Done():
		logger.Info("signal received: draining", "grace_period", opts.Config.Drain.GracePeriod.Std().String())
	case err := <-a.Errors():
		logger.Error("server stopped", "err", err)
		code = 1
	}
	dctx, cancel := context.WithTimeout(context.Background(), opts.Config.Drain.GracePeriod.Std())
	defer cancel()
	if err := a.Shutdown(dctx); err != nil {
		logger.Warn("drain ended with errors", "err", err)
	}
	logger.Info("stopped", slog.Int("exit", code))
	return code
}
