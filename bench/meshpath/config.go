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
	// Proxy is the mesh-proxy binary both pods run (make build's).
	Proxy string
	// Duration and Warmup are the length of a max-throughput row and of
	// the same load before it, which is not measured.
	Duration, Warmup time.Duration
	// RateDuration is the length of a fixed-rate row; Warmup runs before
	// it at the same rate. Its p99.9 rests on RateDuration x rate / 1000
	// requests slower than it.
	RateDuration time.Duration
	// Rates are the fixed rates, requests per second.
	Rates []int
	// Conns is how many keep-alive connections the client holds, in
	// every row (wrk -c, and the fixed-rate generator's pool).
	Conns int
	// Write is a markdown file whose bench-meshpath block is replaced with
	// the results; "" writes none.
	Write string
	// Args is the command line, for the report.
	Args []string
}

func defaultBenchConfig() benchConfig {
	return benchConfig{
		Proxy:        "bin/mesh-proxy",
		Duration:     10 * time.Second,
		Warmup:       2 * time.Second,
		RateDuration: 20 * time.Second,
		Rates:        []int{1000, 5000},
		Conns:        32,
	}
}

// parseBenchFlags maps args to a benchConfig.
func parseBenchFlags(args []string) (benchConfig, error) {
	cfg := defaultBenchConfig()
	fs := pflag.NewFlagSet("meshpath", pflag.ContinueOnError)
	fs.StringVar(&cfg.Proxy, "proxy", cfg.Proxy, "mesh-proxy binary both pods run")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "length of each max-throughput row (wrk)")
	fs.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "load before each row with the same command, not measured")
	fs.DurationVar(&cfg.RateDuration, "rate-duration", cfg.RateDuration, "length of each fixed-rate row")
	fs.IntSliceVar(&cfg.Rates, "rates", cfg.Rates, "fixed rates in requests per second, comma-separated")
	fs.IntVar(&cfg.Conns, "conns", cfg.Conns, "keep-alive connections of the client in every row")
	fs.StringVar(&cfg.Write, "write", cfg.Write, "markdown file whose bench-meshpath block to rewrite with the results")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return benchConfig{}, err
		}
		return benchConfig{}, usageError{err}
	}
	if fs.NArg() > 0 {
		return benchConfig{}, usageError{fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))}
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
	case c.Duration < time.Second || c.RateDuration < time.Second:
		return fmt.Errorf("--duration %v and --rate-duration %v: want at least 1s (wrk counts whole seconds)", c.Duration, c.RateDuration)
	case c.Duration%time.Second != 0:
		return fmt.Errorf("--duration %v: want whole seconds (wrk -d)", c.Duration)
	case c.Warmup < 0 || c.Warmup%time.Second != 0:
		return fmt.Errorf("--warmup %v: want whole seconds, 0 or more", c.Warmup)
	case len(c.Rates) == 0:
		return errors.New("--rates: want at least one rate")
	case c.Conns < 1 || c.Conns > 1000:
		return fmt.Errorf("--conns %d: want 1 to 1000", c.Conns)
	}
	for _, r := range c.Rates {
		if r < 1 || r > 100000 {
			return fmt.Errorf("--rates: %d requests per second: want 1 to 100000", r)
		}
	}
	if len(slices.Compact(slices.Sorted(slices.Values(c.Rates)))) != len(c.Rates) {
		return fmt.Errorf("--rates %v: a rate appears twice", c.Rates)
	}
	return nil
}
