package server

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
)

// The listeners of a server started without listener flags.
const (
	DefaultHTTPPort = 8080
	DefaultGRPCPort = 7070
)

// ParseFlags maps the flags of the suite's manifests to a Config.
// SERVICE_VERSION and CLUSTER in the environment are the defaults of
// --version and --cluster. With no --port, --grpc or --tcp at all the
// server listens on DefaultHTTPPort and DefaultGRPCPort: the manifests
// start the consumer namespace's echo-v1 with no arguments, only to exec
// the client in it, and it must keep running.
func ParseFlags(args []string, stderr io.Writer) (Config, error) {
	var cfg Config
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ports := func(name, usage string, dst *[]int) {
		fs.Func(name, usage+" (repeatable)", func(s string) error {
			p, err := strconv.Atoi(s)
			if err != nil || p < 0 || p > 65535 {
				return fmt.Errorf("%q is not a port", s)
			}
			*dst = append(*dst, p)
			return nil
		})
	}
	ports("port", "HTTP/1.1 and h2c `port`", &cfg.HTTPPorts)
	ports("grpc", "gRPC `port`", &cfg.GRPCPorts)
	ports("tcp", "TCP echo `port`", &cfg.TCPPorts)
	ports("tls", "a --port that serves TLS instead", &cfg.TLSPorts)
	fs.StringVar(&cfg.CertFile, "crt", "", "PEM certificate `file` of the TLS ports; none means self-signed")
	fs.StringVar(&cfg.KeyFile, "key", "", "PEM key `file` of the TLS ports")
	fs.StringVar(&cfg.Version, "version", os.Getenv("SERVICE_VERSION"), "reported as ServiceVersion")
	fs.StringVar(&cfg.Cluster, "cluster", os.Getenv("CLUSTER"), "reported as Cluster")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("echo: unexpected arguments %q", fs.Args())
	}
	if len(cfg.HTTPPorts)+len(cfg.GRPCPorts)+len(cfg.TCPPorts) == 0 {
		cfg.HTTPPorts = []int{DefaultHTTPPort}
		cfg.GRPCPorts = []int{DefaultGRPCPort}
	}
	return cfg, nil
}
