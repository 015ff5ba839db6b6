package dnsresolve

import (
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// dnsServer is an in-process authoritative DNS server on 127.0.0.1, serving
// UDP and TCP on one port, whose answers tests set. Safe for concurrent use.
type dnsServer struct {
	addr string

	mu          sync.Mutex
	records     map[string][]dns.RR // guarded by mu; by lower-case owner
	soa         *dns.SOA            // guarded by mu; authority of negative answers
	rcode       int                 // guarded by mu; when not 0, every answer has it
	truncateUDP bool                // guarded by mu
	hold        chan struct{}       // guarded by mu; answers wait while open
	log         []loggedQuery       // guarded by mu
}

// loggedQuery is one question the server received.
type loggedQuery struct {
	Name string // as asked
	Type string // "A", "AAAA"
	Net  string // "udp" or "tcp"
}

// startDNS starts a server that stops when the test ends. It answers
// NXDOMAIN for every name until records are set, with an SOA whose TTL and
// minimum are 60s.
func startDNS(t testing.TB) *dnsServer {
	t.Helper()
	pc, ln := listenUDPAndTCP(t)
	s := &dnsServer{addr: pc.LocalAddr().String(), records: map[string][]dns.RR{}}
	s.setSOA(60, 60)
	var wg sync.WaitGroup
	// Cleanups run last in, first out: this one runs after both shutdowns.
	t.Cleanup(wg.Wait)
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: s}, {Listener: ln, Handler: s}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		wg.Go(func() {
			if err := srv.ActivateAndServe(); err != nil {
				t.Errorf("DNS server: %v", err)
			}
		})
		<-started
		t.Cleanup(func() {
			if err := srv.Shutdown(); err != nil {
				t.Errorf("DNS server shutdown: %v", err)
			}
		})
	}
	return s
}

// listenUDPAndTCP binds UDP and TCP to the same port of 127.0.0.1, as a
// real server does, retrying when the kernel's UDP port is taken for TCP.
func listenUDPAndTCP(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		pc.Close()
	}
	t.Fatal("no port free for both UDP and TCP on 127.0.0.1")
	return nil, nil
}

// setRecords replaces every record with rrs, in zone file syntax.
func (s *dnsServer) setRecords(t testing.TB, rrs ...string) {
	t.Helper()
	records := map[string][]dns.RR{}
	for _, text := range rrs {
		rr, err := dns.NewRR(text)
		if err != nil {
			t.Fatalf("record %q: %v", text, err)
		}
		owner := strings.ToLower(rr.Header().Name)
		records[owner] = append(records[owner], rr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = records
}

// setSOA sets the SOA record sent with negative answers.
func (s *dnsServer) setSOA(ttl, minimum uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.soa = &dns.SOA{
		Hdr: dns.RR_Header{Name: "test.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
		Ns:  "ns.test.", Mbox: "admin.test.", Serial: 1,
		Refresh: 3600, Retry: 600, Expire: 86400, Minttl: minimum,
	}
}

// dropSOA makes negative answers carry no SOA.
func (s *dnsServer) dropSOA() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.soa = nil
}

// setRcode makes every answer carry rcode; dns.RcodeSuccess answers from
// the records again.
func (s *dnsServer) setRcode(rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rcode = rcode
}

// setTruncateUDP makes every UDP answer empty with the TC bit set.
func (s *dnsServer) setTruncateUDP(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.truncateUDP = on
}

// holdAnswers makes the server receive and log questions but not answer
// them until the returned func is called. The test's cleanup calls it too.
func (s *dnsServer) holdAnswers(t testing.TB) (release func()) {
	hold := make(chan struct{})
	s.mu.Lock()
	s.hold = hold
	s.mu.Unlock()
	var once sync.Once
	release = func() {
		once.Do(func() {
			s.mu.Lock()
			s.hold = nil
			s.mu.Unlock()
			close(hold)
		})
	}
	t.Cleanup(release)
	return release
}

// queries returns the questions received so far, in order.
func (s *dnsServer) queries() []loggedQuery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]loggedQuery(nil), s.log...)
}

// queriesOf returns the names asked with qtype, in order.
func (s *dnsServer) queriesOf(qtype string) []string {
	var names []string
	for _, q := range s.queries() {
		if q.Type == qtype {
			names = append(names, q.Name)
		}
	}
	return names
}

// ServeDNS answers like an authoritative server for the records: CNAMEs
// are followed within the zone, a name with no records is NXDOMAIN, one
// with records of other types only is NODATA.
func (s *dnsServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	q := req.Question[0]
	network := w.RemoteAddr().Network()
	s.mu.Lock()
	s.log = append(s.log, loggedQuery{Name: q.Name, Type: dns.TypeToString[q.Qtype], Net: network})
	hold, rcode, truncate, soa := s.hold, s.rcode, s.truncateUDP && network == "udp", s.soa
	records := s.records
	s.mu.Unlock()
	if hold != nil {
		<-hold
	}

	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	switch {
	case rcode != dns.RcodeSuccess:
		m.Rcode = rcode
	case truncate:
		m.Truncated = true
	default:
		m.Answer, m.Rcode = lookupZone(records, q)
		if len(m.Answer) == 0 || m.Rcode != dns.RcodeSuccess {
			if soa != nil {
				m.Ns = []dns.RR{soa}
			}
		}
	}
	_ = w.WriteMsg(m)
}

// lookupZone answers q from records, following CNAMEs.
func lookupZone(records map[string][]dns.RR, q dns.Question) ([]dns.RR, int) {
	var answer []dns.RR
	name := strings.ToLower(q.Name)
	for range 8 {
		rrs := records[name]
		if len(rrs) == 0 {
			return answer, dns.RcodeNameError
		}
		var target string
		for _, rr := range rrs {
			switch {
			case rr.Header().Rrtype == q.Qtype:
				answer = append(answer, rr)
			case rr.Header().Rrtype == dns.TypeCNAME:
				answer = append(answer, rr)
				target = strings.ToLower(rr.(*dns.CNAME).Target)
			}
		}
		if target == "" {
			break
		}
		name = target
	}
	return answer, dns.RcodeSuccess
}

// fakeClock is a clock tests move by hand. Safe for concurrent use.
type fakeClock struct {
	off atomic.Int64
}

var clockBase = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func (c *fakeClock) Now() time.Time          { return clockBase.Add(time.Duration(c.off.Load())) }
func (c *fakeClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// newTestResolver returns a Resolver asking only srv, with cfg's other
// fields, a 2s timeout and one attempt unless cfg says otherwise.
func newTestResolver(t testing.TB, cfg Config, servers ...string) *Resolver {
	t.Helper()
	cfg.Servers = servers
	cfg.Timeout = orDefault(cfg.Timeout, 2*time.Second)
	cfg.Attempts = orDefault(cfg.Attempts, 1)
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// freeAddr returns a 127.0.0.1 UDP address that nothing listens on.
func freeAddr(t testing.TB) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// waitFor polls cond until it holds, failing the test after 10s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func portOf(t testing.TB, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := strconv.Atoi(port); err != nil {
		t.Fatal(err)
	}
	return port
}
