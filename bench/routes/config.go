package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// benchConfig is what the benchmark's flags set.
type benchConfig struct {
	// Proxy is the mesh-proxy binary to measure (make build's).
	Proxy string
	// Duration is the length of one row: one load against one Service.
	Duration time.Duration
	// Warmup is the length of the same load against each Service once
	// before the first round, which is not measured.
	Warmup time.Duration
	// Rounds is how many times every row runs. The ratios are the median
	// of the rounds' ratios, so the noise of a busy machine falls on a
	// few rounds, not on the result.
	Rounds int
	// Loads are the client loads, each run against every Service in every
	// round: http1 (wrk, HTTP/1.1 keep-alive) and h2c (h2load, HTTP/2
	// with prior knowledge).
	Loads []loadName
	// Write is a markdown file whose bench-routes block is replaced with
	// the results; "" writes none.
	Write string
	// Args is the command line, for the report.
	Args []string
}

func defaultBenchConfig() benchConfig {
	return benchConfig{
		Proxy:    "bin/mesh-proxy",
		Duration: 5 * time.Second,
		Warmup:   2 * time.Second,
		Rounds:   8,
		Loads:    []loadName{http1, h2c},
	}
}

// parseBenchFlags maps args to a benchConfig.
func parseBenchFlags(args []string) (benchConfig, error) {
	cfg := defaultBenchConfig()
	fs := pflag.NewFlagSet("routes", pflag.ContinueOnError)
	loads := make([]string, len(cfg.Loads))
	for i, l := range cfg.Loads {
		loads[i] = string(l)
	}
	fs.StringVar(&cfg.Proxy, "proxy", cfg.Proxy, "mesh-proxy binary to measure")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "length of each row: one load against one Service (whole seconds)")
	fs.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "load against each Service before the first round, not measured (whole seconds)")
	fs.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "how many times every row runs; ratios are the median of the rounds'")
	fs.StringSliceVar(&loads, "loads", loads, "client loads, comma-separated: http1 (wrk), h2c (h2load)")
	fs.StringVar(&cfg.Write, "write", cfg.Write, "markdown file whose bench-routes block to rewrite with the results")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return benchConfig{}, err
		}
		return benchConfig{}, usageError{err}
	}
	if fs.NArg() > 0 {
		return benchConfig{}, usageError{fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))}
	}
	cfg.Loads = cfg.Loads[:0]
	for _, l := range loads {
		cfg.Loads = append(cfg.Loads, loadName(l))
	}
	cfg.Args = args
	if err := cfg.validate(); err != nil {
		return benchConfig{}, usageError{err}
	}
	return cfg, nil
}

func (c benchConfig) validate() error {
	switch {
	case c.Proxy == "":
		return errors.New("--proxy must name the mesh-proxy binary")
	case c.Duration < time.Second || c.Duration%time.Second != 0:
		return fmt.Errorf("--duration %v: want whole seconds, at least 1s (wrk -d, h2load -D)", c.Duration)
	case c.Warmup < 0 || c.Warmup%time.Second != 0:
		return fmt.Errorf("--warmup %v: want whole seconds, 0 or more", c.Warmup)
	case c.Rounds < 1:
		return fmt.Errorf("--rounds %d: want at least 1", c.Rounds)
	case len(c.Loads) == 0:
		return errors.New("--loads: want http1, h2c or both")
	}
	for _, l := range c.Loads {
		if l != http1 && l != h2c {
			return fmt.Errorf("--loads: unknown load %q: want http1 or h2c", l)
		}
	}
	if len(slices.Compact(slices.Sorted(slices.Values(c.Loads)))) != len(c.Loads) {
		return fmt.Errorf("--loads %v: a load appears twice", c.Loads)
	}
	return nil
}
