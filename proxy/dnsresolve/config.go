package dnsresolve

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/miekg/dns"
)

// Defaults for the zero values of Config.
const (
	DefaultResolvConf  = "/etc/resolv.conf"
	DefaultTimeout     = 5 * time.Second // RES_TIMEOUT of the libc resolver
	DefaultAttempts    = 2               // RES_DFLRETRY of the libc resolver
	DefaultMinTTL      = time.Second
	DefaultMaxTTL      = 5 * time.Minute
	DefaultNegativeTTL = 30 * time.Second
	DefaultCacheSize   = 4096
)

// Config configures a Resolver. The zero value reads the servers, search
// list and options from /etc/resolv.conf and uses the defaults above.
type Config struct {
	// Servers are the name servers to ask, as ip:port, tried in order. Empty
	// means the nameserver lines of ResolvConf on port 53, together with its
	// search list and its ndots, timeout and attempts options.
	Servers []string
	// ResolvConf is the resolv.conf(5) file read when Servers is empty. Empty
	// means DefaultResolvConf.
	ResolvConf string
	// Search is the search list for relative names. It is used only with
	// Servers; otherwise the search list comes from ResolvConf.
	Search []string
	// Ndots is the number of dots at or above which a relative name is
	// tried as is before the search list. It is used only with Servers, and
	// its zero value means every relative name is tried as is first;
	// otherwise ndots comes from ResolvConf (default 1).
	Ndots int
	// Timeout bounds one query to one server. Zero means the timeout option
	// of ResolvConf when Servers is empty, else DefaultTimeout.
	Timeout time.Duration
	// Attempts is how many times the server list is gone through before a
	// lookup fails. Zero means the attempts option of ResolvConf when Servers
	// is empty, else DefaultAttempts.
	Attempts int
	// MinTTL is the shortest time an answer is cached, so that a TTL of zero
	// does not turn every lookup into a query. Zero means DefaultMinTTL.
	MinTTL time.Duration
	// MaxTTL is the longest time an answer is cached, so that a moved name
	// is noticed even if its records say a day. Zero means DefaultMaxTTL.
	MaxTTL time.Duration
	// NegativeTTL caps how long a name that does not exist is cached; below
	// the cap the SOA minimum of the answer decides (RFC 2308 §5). Zero means
	// DefaultNegativeTTL.
	NegativeTTL time.Duration
	// CacheSize is how many names the cache holds. Zero means
	// DefaultCacheSize.
	CacheSize int
	// Now returns the current time, for tests. Nil means time.Now.
	Now func() time.Time
}

// settings is a Config with its defaults applied and resolv.conf read.
type settings struct {
	servers     []string
	search      []string
	ndots       int
	timeout     time.Duration
	attempts    int
	minTTL      time.Duration
	maxTTL      time.Duration
	negativeTTL time.Duration
	cacheSize   int
	now         func() time.Time
}

func (cfg Config) settings() (settings, error) {
	s := settings{
		search:      normalizeSearch(cfg.Search),
		ndots:       cfg.Ndots,
		timeout:     cfg.Timeout,
		attempts:    cfg.Attempts,
		minTTL:      orDefault(cfg.MinTTL, DefaultMinTTL),
		maxTTL:      orDefault(cfg.MaxTTL, DefaultMaxTTL),
		negativeTTL: orDefault(cfg.NegativeTTL, DefaultNegativeTTL),
		cacheSize:   orDefault(cfg.CacheSize, DefaultCacheSize),
		now:         cfg.Now,
	}
	if s.now == nil {
		s.now = time.Now
	}
	if len(cfg.Servers) == 0 {
		if err := s.readResolvConf(orDefault(cfg.ResolvConf, DefaultResolvConf)); err != nil {
			return settings{}, err
		}
	} else {
		for _, srv := range cfg.Servers {
			ap, err := netip.ParseAddrPort(srv)
			if err != nil {
				return settings{}, fmt.Errorf("dnsresolve: server %q: want ip:port: %w", srv, err)
			}
			s.servers = append(s.servers, ap.String())
		}
	}
	s.timeout = orDefault(s.timeout, DefaultTimeout)
	s.attempts = orDefault(s.attempts, DefaultAttempts)
	return s, s.check()
}

// readResolvConf fills in what resolv.conf(5) says. Timeout and attempts
// from Config win over the file's options.
func (s *settings) readResolvConf(path string) error {
	rc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return fmt.Errorf("dnsresolve: reading %s: %w", path, err)
	}
	for _, host := range rc.Servers {
		s.servers = append(s.servers, net.JoinHostPort(host, rc.Port))
	}
	if len(s.servers) == 0 {
		// resolv.conf(5): with no nameserver line, the server on the local
		// machine is used.
		s.servers = []string{net.JoinHostPort("127.0.0.1", rc.Port)}
	}
	s.search = normalizeSearch(rc.Search)
	s.ndots = rc.Ndots
	if s.timeout == 0 {
		s.timeout = time.Duration(rc.Timeout) * time.Second
	}
	if s.attempts == 0 {
		s.attempts = rc.Attempts
	}
	return nil
}

func (s *settings) check() error {
	var errs []error
	if s.ndots < 0 {
		errs = append(errs, fmt.Errorf("negative Ndots %d", s.ndots))
	}
	if s.timeout < 0 || s.attempts < 0 || s.cacheSize < 0 {
		errs = append(errs, fmt.Errorf("negative Timeout %v, Attempts %d or CacheSize %d", s.timeout, s.attempts, s.cacheSize))
	}
	if s.minTTL < 0 || s.minTTL > s.maxTTL || s.minTTL > s.negativeTTL {
		errs = append(errs, fmt.Errorf("MinTTL %v must be positive and at most MaxTTL %v and NegativeTTL %v",
			s.minTTL, s.maxTTL, s.negativeTTL))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dnsresolve: invalid config: %w", err)
	}
	return nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
