package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/identity/pki"
	"github.com/mesh-dev/mesh/install/certs"
	"github.com/mesh-dev/mesh/install/manifests"
)

// servingRenewBefore: install replaces a webhook serving certificate that
// expires sooner than this, well before the API server would refuse it.
const servingRenewBefore = 30 * 24 * time.Hour

// installPKI is the certificate material install renders, with a line per
// part saying where it came from.
type installPKI struct {
	identity *pki.Identity
	serving  *certs.Serving // the injector's
	tap      *certs.Serving // the tap API's
	notes    []pkiNote
}

// pkiNote is one line of install's output about certificates.
type pkiNote struct {
	warn bool
	text string
}

// fill puts the PEM encoding of p into v.
func (p *installPKI) fill(v *manifests.Values) error {
	issuerKey, err := p.identity.IssuerKeyPEM()
	if err != nil {
		return err
	}
	servingKey, err := p.serving.KeyPEM()
	if err != nil {
		return err
	}
	v.Identity = manifests.IdentityPEM{
		TrustAnchors: p.identity.TrustAnchorsPEM(),
		IssuerCert:   p.identity.IssuerCertPEM(),
		IssuerKey:    issuerKey,
	}
	v.Injector = manifests.ServingPEM{CA: p.serving.CAPEM(), Cert: p.serving.CertPEM(), Key: servingKey}
	tapKey, err := p.tap.KeyPEM()
	if err != nil {
		return err
	}
	v.Tap = manifests.ServingPEM{CA: p.tap.CAPEM(), Cert: p.tap.CertPEM(), Key: tapKey}
	return nil
}

// identityFiles are the --identity-*-file flags.
type identityFiles struct {
	TrustAnchors, IssuerCert, IssuerKey string
}

func (f identityFiles) any() bool {
	return f.TrustAnchors != "" || f.IssuerCert != "" || f.IssuerKey != ""
}

func (f identityFiles) validate() error {
	if f.any() && (f.TrustAnchors == "" || f.IssuerCert == "" || f.IssuerKey == "") {
		return errors.New("--identity-trust-anchors-file, --identity-issuer-certificate-file and --identity-issuer-key-file go together: give all three or none")
	}
	return nil
}

// load reads and validates the identity PKI from the files.
func (f identityFiles) load(td spiffeid.TrustDomain, now time.Time) (*pki.Identity, error) {
	read := func(flag, path string) ([]byte, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", flag, err)
		}
		return b, nil
	}
	anchors, err := read("identity-trust-anchors-file", f.TrustAnchors)
	if err != nil {
		return nil, err
	}
	cert, err := read("identity-issuer-certificate-file", f.IssuerCert)
	if err != nil {
		return nil, err
	}
	key, err := read("identity-issuer-key-file", f.IssuerKey)
	if err != nil {
		return nil, err
	}
	id, err := pki.ParseIdentity(td, anchors, cert, key)
	if err != nil {
		return nil, fmt.Errorf("identity files: %w", err)
	}
	if err := id.Validate(now); err != nil {
		return nil, fmt.Errorf("identity files: %w%s", err, identityHint(err))
	}
	return id, nil
}

// identityHint tells what to do about a validation error of the files.
func identityHint(err error) string {
	switch {
	case errors.Is(err, pki.ErrUntrusted):
		return "\nthe issuer certificate must be signed by a certificate of --identity-trust-anchors-file (put any intermediates after the issuer in its file)"
	case errors.Is(err, pki.ErrKeyMismatch):
		return "\n--identity-issuer-key-file must hold the private key of the first certificate in --identity-issuer-certificate-file"
	case errors.Is(err, pki.ErrNotCA):
		return "\nthe issuer must be a CA (basic constraints CA:TRUE, key usage keyCertSign), e.g. step certificate create ... --profile intermediate-ca"
	case errors.Is(err, pki.ErrExpired):
		return "\nissue a new certificate; check the clocks if it should be valid"
	case errors.Is(err, pki.ErrTrustDomain):
		return "\npass --identity-trust-domain with the trust domain the certificates were made for, or make certificates for this one"
	}
	return ""
}

// loadPKI picks the certificates install renders. Identity: the files when
// given, else what the cluster holds if it is still valid, else new. The
// webhook's and the tap API's: what the cluster holds if it is valid for
// its Service's name for servingRenewBefore more, else new. With k nil
// (dry run) nothing is read from a cluster.
func loadPKI(ctx context.Context, k *kube, namespace string, files identityFiles, td spiffeid.TrustDomain, now time.Time) (*installPKI, error) {
	p := &installPKI{}
	var err error
	switch {
	case files.any():
		if p.identity, err = files.load(td, now); err != nil {
			return nil, err
		}
		p.note(false, "identity: trust anchors and issuer from files (issuer valid until %s)", day(p.identity.Issuer().NotAfter))
	default:
		var why string
		if k != nil {
			p.identity, why, err = clusterIdentity(ctx, k, namespace, td, now)
			if err != nil {
				return nil, err
			}
		}
		switch {
		case p.identity != nil:
			p.note(false, "identity: kept the trust anchor and issuer in the cluster (issuer valid until %s)", day(p.identity.Issuer().NotAfter))
		default:
			if p.identity, err = pki.NewIdentity(td, now); err != nil {
				return nil, err
			}
			if why != "" {
				p.note(true, "identity: %s; generated a new trust anchor and issuer: restart meshed workloads once identity is enabled", why)
			} else {
				p.note(false, "identity: generated a trust anchor (valid until %s) and an issuer (valid until %s) for %s",
					day(p.identity.TrustAnchors[0].NotAfter), day(p.identity.Issuer().NotAfter), td.Name())
			}
		}
	}

	if p.serving, err = p.loadServing(ctx, k, namespace, injectorServing, now); err != nil {
		return nil, err
	}
	if p.tap, err = p.loadServing(ctx, k, namespace, tapServing, now); err != nil {
		return nil, err
	}
	return p, nil
}

// servingCert names a serving certificate install makes for a Service the
// API server calls, for messages and to find it in the cluster.
type servingCert struct {
	// label starts install's note; what names the certificate.
	label, what     string
	secret, service string
}

var (
	injectorServing = servingCert{label: "injector", what: "webhook serving certificate",
		secret: manifests.InjectorTLSSecretName, service: manifests.InjectorServiceName}
	tapServing = servingCert{label: "tap API", what: "tap API serving certificate",
		secret: manifests.TapTLSSecretName, service: manifests.TapServiceName}
)

// loadServing keeps the certificate of s the cluster holds when it is
// valid for servingRenewBefore more, else makes a new one. With k nil
// (dry run) it always makes one.
func (p *installPKI) loadServing(ctx context.Context, k *kube, namespace string, s servingCert, now time.Time) (*certs.Serving, error) {
	names := certs.ServiceDNSNames(s.service, namespace)
	var why string
	if k != nil {
		kept, reason, err := clusterServing(ctx, k, namespace, s, names[0], now)
		if err != nil {
			return nil, err
		}
		if kept != nil {
			p.note(false, "%s: kept the %s in the cluster (valid until %s)", s.label, s.what, day(kept.Cert.NotAfter))
			return kept, nil
		}
		why = reason
	}
	serving, err := certs.NewServing(names, now)
	if err != nil {
		return nil, err
	}
	if why != "" {
		p.note(false, "%s: %s; generated a new %s", s.label, why, s.what)
	} else {
		p.note(false, "%s: generated a %s for %s", s.label, s.what, names[0])
	}
	return serving, nil
}

func (p *installPKI) note(warn bool, format string, args ...any) {
	p.notes = append(p.notes, pkiNote{warn: warn, text: fmt.Sprintf(format, args...)})
}

// clusterIdentity reads the identity PKI back from the cluster. It returns
// nil and no reason when there is none, nil and the reason when it is
// unusable, and an error only when it could not be read.
func clusterIdentity(ctx context.Context, k *kube, namespace string, td spiffeid.TrustDomain, now time.Time) (*pki.Identity, string, error) {
	secret, err := k.client.CoreV1().Secrets(namespace).Get(ctx, manifests.IssuerSecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("read the existing identity issuer: %w", err)
	}
	anchors := secret.Data["ca.crt"]
	cm, err := k.client.CoreV1().ConfigMaps(namespace).Get(ctx, manifests.TrustRootsConfigMapName, metav1.GetOptions{})
	switch {
	case err == nil && cm.Data[manifests.TrustRootsKey] != "":
		anchors = []byte(cm.Data[manifests.TrustRootsKey])
	case err != nil && !apierrors.IsNotFound(err):
		return nil, "", fmt.Errorf("read the existing trust roots: %w", err)
	}
	id, err := pki.ParseIdentity(td, anchors, secret.Data["tls.crt"], secret.Data["tls.key"])
	if err == nil {
		err = id.Validate(now)
	}
	switch {
	case errors.Is(err, pki.ErrTrustDomain):
		old := secret.Annotations[manifests.TrustDomainAnnotation]
		if old == "" {
			old = "another"
		}
		return nil, fmt.Sprintf("the trust domain changes from %s to %s", old, td.Name()), nil
	case err != nil:
		return nil, "the existing issuer is unusable (" + err.Error() + ")", nil
	}
	return id, "", nil
}

// clusterServing reads the serving certificate of sc back from the
// cluster, like clusterIdentity.
func clusterServing(ctx context.Context, k *kube, namespace string, sc servingCert, dnsName string, now time.Time) (*certs.Serving, string, error) {
	secret, err := k.client.CoreV1().Secrets(namespace).Get(ctx, sc.secret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("read the existing %s: %w", sc.what, err)
	}
	s, err := certs.ParseServing(secret.Data["ca.crt"], secret.Data["tls.crt"], secret.Data["tls.key"])
	if err == nil {
		err = s.Validate(dnsName, now)
	}
	switch {
	case err != nil:
		return nil, "the existing serving certificate is unusable (" + err.Error() + ")", nil
	case pki.ExpiresWithin(s.Cert, now, servingRenewBefore):
		return nil, "the serving certificate expires on " + day(s.Cert.NotAfter), nil
	}
	return s, "", nil
}

// day formats a certificate date.
func day(t time.Time) string { return t.UTC().Format(time.DateOnly) }
