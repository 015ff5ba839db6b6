package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Sentinel errors of ParseCSR, for errors.Is. Each is wrapped with the
// detail a caller should show to whoever sent the CSR.
var (
	// ErrMalformedCSR: the bytes are not one DER PKCS #10 request.
	ErrMalformedCSR = errors.New("malformed certificate signing request")
	// ErrCSRSignature: the request is not signed by the key it carries, so
	// its sender has not proven it holds the private key.
	ErrCSRSignature = errors.New("certificate signing request signature is invalid")
	// ErrCSRKey: the request's key is not of the one type leaves may have.
	ErrCSRKey = errors.New("certificate signing request key is not ECDSA P-256")
	// ErrCSRSAN: the request's subject alternative names are not exactly
	// one SPIFFE ID URI.
	ErrCSRSAN = errors.New("certificate signing request must name exactly one SPIFFE ID and nothing else")
)

// MaxCSRSize bounds the DER a caller may hand ParseCSR. A P-256 request
// with one URI is a few hundred bytes; the bound keeps hostile input from
// costing more than a page of parsing.
const MaxCSRSize = 16 << 10

// oidSubjectAltName is the subjectAltName extension, RFC 5280 4.2.1.6.
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// tagURI is the context-specific tag of uniformResourceIdentifier in a
// GeneralName, RFC 5280 4.2.1.6.
const tagURI = 6

// CSR is a checked certificate signing request: the SPIFFE ID it asks for
// and the key the leaf will certify. Nothing else from the request reaches
// a certificate.
type CSR struct {
	ID        spiffeid.ID
	PublicKey *ecdsa.PublicKey
}

// ParseCSR parses a DER PKCS #10 request from an untrusted caller and checks
// that it is signed by its own key, that the key is ECDSA P-256, and that
// its only subject alternative name is one spiffe:// URI (X509-SVID 2: a
// leaf has exactly one URI SAN). DNS names, IP addresses, e-mail addresses,
// other URIs and name forms Go does not decode are all refused, so a
// request never looks like more than it is.
//
// The subject (a CN included) and any other requested extension are
// ignored, not refused: the leaf is built from the CA's template and the ID
// alone, and peers authorize on the URI SAN only, so a CN copied from a
// request would be an unchecked claim. Clients that set a CN for their own
// logs keep working.
//
// Only P-256 is accepted because every mesh proxy generates P-256 keys: one
// key type keeps handshake cost uniform and the set of peers each proxy
// must interoperate with small. Widening it is a change here alone.
//
// Errors wrap ErrMalformedCSR, ErrCSRSignature, ErrCSRKey or ErrCSRSAN.
func ParseCSR(der []byte) (*CSR, error) {
	switch {
	case len(der) == 0:
		return nil, fmt.Errorf("%w: empty", ErrMalformedCSR)
	case len(der) > MaxCSRSize:
		return nil, fmt.Errorf("%w: %d bytes, at most %d allowed", ErrMalformedCSR, len(der), MaxCSRSize)
	}
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: not a DER PKCS #10 request: %s", ErrMalformedCSR, shorten(err.Error()))
	}
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCSRSignature, err)
	}
	pub, ok := req.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: got %s", ErrCSRKey, req.PublicKeyAlgorithm)
	}
	if pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: got curve %s", ErrCSRKey, pub.Curve.Params().Name)
	}
	id, err := csrID(req)
	if err != nil {
		return nil, err
	}
	return &CSR{ID: id, PublicKey: pub}, nil
}

// csrID returns the one SPIFFE ID req asks for.
func csrID(req *x509.CertificateRequest) (spiffeid.ID, error) {
	switch {
	case len(req.DNSNames) > 0:
		return spiffeid.ID{}, fmt.Errorf("%w: it also asks for DNS names %q", ErrCSRSAN, req.DNSNames)
	case len(req.IPAddresses) > 0:
		return spiffeid.ID{}, fmt.Errorf("%w: it also asks for IP addresses %v", ErrCSRSAN, req.IPAddresses)
	case len(req.EmailAddresses) > 0:
		return spiffeid.ID{}, fmt.Errorf("%w: it also asks for e-mail addresses %q", ErrCSRSAN, req.EmailAddresses)
	case len(req.URIs) == 0:
		return spiffeid.ID{}, fmt.Errorf("%w: it has no URI SAN", ErrCSRSAN)
	case len(req.URIs) > 1:
		return spiffeid.ID{}, fmt.Errorf("%w: it has %d URI SANs", ErrCSRSAN, len(req.URIs))
	}
	// Go decodes only the name forms above; an otherName or a
	// directoryName next to the URI would pass unseen, so count the raw
	// GeneralNames too.
	if err := checkRawSANs(req); err != nil {
		return spiffeid.ID{}, err
	}
	id, err := spiffeid.FromURI(req.URIs[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: URI SAN %q: %v", ErrCSRSAN, req.URIs[0], err)
	}
	return id, nil
}

// checkRawSANs checks that req carries one subjectAltName extension holding
// one GeneralName, a URI.
func checkRawSANs(req *x509.CertificateRequest) error {
	var names []asn1.RawValue
	found := 0
	for _, ext := range req.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		found++
		rest, err := asn1.Unmarshal(ext.Value, &names)
		if err != nil || len(rest) > 0 {
			return fmt.Errorf("%w: unreadable subjectAltName extension", ErrCSRSAN)
		}
	}
	if found != 1 {
		return fmt.Errorf("%w: it has %d subjectAltName extensions", ErrCSRSAN, found)
	}
	switch {
	case len(names) != 1:
		return fmt.Errorf("%w: it has %d names, some of a form other than DNS, IP, e-mail or URI", ErrCSRSAN, len(names))
	case names[0].Class != asn1.ClassContextSpecific || names[0].Tag != tagURI:
		return fmt.Errorf("%w: its name is not a URI", ErrCSRSAN)
	}
	return nil
}

// shorten cuts a parser's message, which for ASN.1 structure errors dumps
// Go struct tags, to what fits on a line of a caller's log.
func shorten(s string) string {
	const limit = 100
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "..."
}
