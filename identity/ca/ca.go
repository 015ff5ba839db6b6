// Package ca is the certificate authority of the identity service: it
// loads the issuer CA from the mounted mesh-identity-issuer Secret, follows
// the Secret as it is rotated, and signs workload X509-SVIDs from checked
// certificate signing requests (see ParseCSR).
//
// The issuer is an intermediate below the trust anchors `mesh install`
// generates (identity/pki) or the user brings; the anchors' keys never
// reach the cluster.
package ca

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mesh-dev/mesh/identity/pki"
)

// DefaultPollInterval is how often Run checks the issuer files. Kubelet
// takes up to a minute or so to update a Secret volume, so a few seconds
// more are not noticed, and hashing three small files costs nothing.
const DefaultPollInterval = 5 * time.Second

// Config configures a CA. Only Dir is required.
type Config struct {
	// Dir holds CertFile, KeyFile and AnchorsFile: the issuer Secret
	// mounted as a volume, or any directory with those files.
	Dir string
	// TrustDomain is the one the issuer signs IDs in; the zero value means
	// pki.DefaultTrustDomain.
	TrustDomain spiffeid.TrustDomain
	// Lifetime of the leaves Sign issues; 0 means DefaultLifetime. A leaf
	// never outlives the issuer chain whatever this says.
	Lifetime time.Duration
	// PollInterval is how often Run looks for new files; 0 means
	// DefaultPollInterval.
	PollInterval time.Duration
	// Clock tells the time; nil means time.Now.
	Clock func() time.Time
	// Log receives reloads and reload failures; nil discards them.
	Log *slog.Logger
	// Registerer receives the CA's metrics; nil registers none.
	Registerer prometheus.Registerer
}

// CA signs leaves with the current issuer and replaces the issuer when its
// files change. Its methods are safe for concurrent use.
type CA struct {
	cfg     Config
	metrics *metrics
	current atomic.Pointer[generation]

	mu      sync.Mutex // serializes loads; guards the fields below
	loaded  [sha256.Size]byte
	bad     [sha256.Size]byte // the last input that failed, already reported
	failed  bool              // the last load failed
	started bool              // a generation has been stored
}

// generation is one loaded issuer. replaced is closed when a newer one is
// stored, which wakes every watcher at once without a queue per watcher: a
// slow watcher skips straight to the newest issuer.
type generation struct {
	issuer   *Issuer
	replaced chan struct{}
}

// New loads the issuer from cfg.Dir and returns a CA signing with it. It
// fails when the files are missing or do not form a valid issuer for the
// trust domain, so a misconfigured controller stops at start with the
// reason instead of refusing every proxy later.
func New(cfg Config) (*CA, error) {
	if cfg.Dir == "" {
		return nil, errors.New("ca: no issuer directory configured")
	}
	if cfg.TrustDomain.IsZero() {
		td, err := spiffeid.TrustDomainFromString(pki.DefaultTrustDomain)
		if err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
		cfg.TrustDomain = td
	}
	if cfg.Lifetime <= 0 {
		cfg.Lifetime = DefaultLifetime
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c := &CA{cfg: cfg}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	// Registered only once the CA works, so that a caller may retry New
	// with the same registry.
	m, err := newMetrics(cfg.Registerer, c)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	c.metrics = m
	m.reload(true) // the first load, above
	return c, nil
}

// Run checks the issuer files every PollInterval until ctx is done, and
// returns nil then. A failed check is logged and counted by Reload; Run
// goes on with the current issuer.
func (c *CA) Run(ctx context.Context) error {
	t := time.NewTicker(c.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			_ = c.Reload()
		}
	}
}

// Reload reads the issuer files now and, when they changed and form a valid
// issuer, makes it the current one. When they are invalid it keeps the
// current issuer and returns the reason; the failure is logged and counted
// once per distinct content, though it is tried again on every call, since
// an issuer that is not valid yet becomes valid by itself.
func (c *CA) Reload() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, err := readFiles(c.cfg.Dir)
	var key [sha256.Size]byte
	if err != nil {
		// Nothing to hash: key on the reason, so a file that stays
		// missing is reported once.
		key = sha256.Sum256([]byte(err.Error()))
	} else {
		key = f.hash()
	}
	if c.started && key == c.loaded {
		c.failed = false // a bad update was reverted; report it if it comes back
		return nil
	}
	var iss *Issuer
	if err == nil {
		iss, err = c.parse(f)
	}
	if err != nil {
		err = fmt.Errorf("ca: load issuer from %s: %w", c.cfg.Dir, err)
		if !c.failed || key != c.bad {
			c.metrics.reload(false)
			if c.started {
				c.cfg.Log.Error("issuer not reloaded; still signing with the previous one", "err", err)
			}
		}
		c.bad, c.failed = key, true
		return err
	}
	c.loaded, c.failed = key, false
	c.metrics.reload(true) // before store wakes the watchers, who may look
	c.store(iss)
	return nil
}

func (c *CA) parse(f files) (*Issuer, error) {
	id, err := pki.ParseIdentity(c.cfg.TrustDomain, f.anchors, f.cert, f.key)
	if err != nil {
		return nil, err
	}
	return NewIssuer(id, c.cfg.Clock())
}

// store makes iss current and wakes the watchers of the previous one.
// Called with c.mu held.
func (c *CA) store(iss *Issuer) {
	old := c.current.Swap(&generation{issuer: iss, replaced: make(chan struct{})})
	if old != nil {
		close(old.replaced)
	}
	verb := "issuer loaded"
	if c.started {
		verb = "issuer reloaded"
	}
	c.started = true
	cert := iss.Certificate()
	c.cfg.Log.Info(verb, "dir", c.cfg.Dir, "trust_domain", iss.TrustDomain().Name(),
		"subject", cert.Subject.String(), "serial", cert.SerialNumber.Text(16),
		"not_after", iss.NotAfter().UTC(), "trust_anchors", len(iss.bundle.X509Authorities()))
	if left := iss.NotAfter().Sub(c.cfg.Clock()); left < c.cfg.Lifetime {
		c.cfg.Log.Warn("issuer expires before a full leaf lifetime; leaves are cut short until it is rotated",
			"not_after", iss.NotAfter().UTC(), "leaf_lifetime", c.cfg.Lifetime)
	}
}

// Issuer returns the current issuer and a channel that is closed when it is
// replaced.
func (c *CA) Issuer() (*Issuer, <-chan struct{}) {
	g := c.current.Load()
	return g.issuer, g.replaced
}

// Sign issues a leaf for a checked request with the current issuer, valid
// for Config.Lifetime from now (see Issuer.Sign).
func (c *CA) Sign(req *CSR) (*Leaf, error) {
	iss, _ := c.Issuer()
	return iss.Sign(req.PublicKey, req.ID, c.cfg.Clock(), c.cfg.Lifetime)
}

// TrustDomain returns the trust domain the CA signs in.
func (c *CA) TrustDomain() spiffeid.TrustDomain { return c.cfg.TrustDomain }
