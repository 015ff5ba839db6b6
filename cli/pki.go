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

	"github.com/mesh-dev/mesh/install/certs"
	"github.com/mesh-dev/mesh/install/manifests"
)

// servingRenewBefore: install replaces a webhook serving certificate that
// expires sooner than this, well before the API server would refuse it.
const servingRenewBefore = 30 * 24 * time.Hour

// pki is the certificate material install renders, with a line per part
// saying where it came from.
type pki struct {
	identity *certs.Identity
	serving  *certs.Serving
	notes    []pkiNote
}

// pkiNote is one line of install's output about certificates.
type pkiNote struct {
	warn bool
	text string
}

// fill puts the PEM encoding of p into v.
func (p *pki) fill(v *manifests.Values) error {
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
func (f identityFiles) load(td spiffeid.TrustDomain, now time.Time) (*certs.Identity, error) {
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
	id, err := certs.ParseIdentity(td, anchors, cert, key)
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
	case errors.Is(err, certs.ErrUntrusted):
		return "\nthe issuer certificate must be signed by a certificate of --identity-trust-anchors-file (put any intermediates after the issuer in its file)"
	case errors.Is(err, certs.ErrKeyMismatch):
		return "\n--identity-issuer-key-file must hold the private key of the first certificate in --identity-issuer-certificate-file"
	case errors.Is(err, certs.ErrNotCA):
		return "\nthe issuer must be a CA (basic constraints CA:TRUE, key usage keyCertSign), e.g. step certificate create ... --profile intermediate-ca"
	case errors.Is(err, certs.ErrExpired):
		return "\nissue a new certificate; check the clocks if it should be valid"
	case errors.Is(err, certs.ErrTrustDomain):
		return "\npass --identity-trust-domain with the trust domain the certificates were made for, or make certificates for this one"
	}
	return ""
}

// loadPKI picks the certificates install renders. Identity: the files when
// given, else what the cluster holds if it is still valid, else new. The
// webhook's: what the cluster holds if it is valid for the injector's name
// for servingRenewBefore more, else new. With k nil (dry run) nothing is
// read from a cluster.
func loadPKI(ctx context.Context, k *kube, namespace string, files identityFiles, td spiffeid.TrustDomain, now time.Time) (*pki, error) {
	p := &pki{}
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
			if p.identity, err = certs.NewIdentity(td, now); err != nil {
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

	names := certs.ServiceDNSNames(manifests.InjectorServiceName, namespace)
	var why string
	if k != nil {
		if p.serving, why, err = clusterServing(ctx, k, namespace, names[0], now); err != nil {
			return nil, err
		}
	}
	switch {
	case p.serving != nil:
		p.note(false, "injector: kept the webhook serving certificate in the cluster (valid until %s)", day(p.serving.Cert.NotAfter))
	default:
		if p.serving, err = certs.NewServing(names, now); err != nil {
			return nil, err
		}
		text := "injector: generated a webhook serving certificate for " + names[0]
		if why != "" {
			text = "injector: " + why + "; generated a new webhook serving certificate"
		}
		p.note(false, "%s", text)
	}
	return p, nil
}

func (p *pki) note(warn bool, format string, args ...any) {
	p.notes = append(p.notes, pkiNote{warn: warn, text: fmt.Sprintf(format, args...)})
}

// clusterIdentity reads the identity PKI back from the cluster. It returns
// nil and no reason when there is none, nil and the reason when it is
// unusable, and an error only when it could not be read.
func clusterIdentity(ctx context.Context, k *kube, namespace string, td spiffeid.TrustDomain, now time.Time) (*certs.Identity, string, error) {
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
	id, err := certs.ParseIdentity(td, anchors, secret.Data["tls.crt"], secret.Data["tls.key"])
	if err == nil {
		err = id.Validate(now)
	}
	switch {
	case errors.Is(err, certs.ErrTrustDomain):
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

// clusterServing reads the webhook serving certificate back from the
// cluster, like clusterIdentity.
func clusterServing(ctx context.Context, k *kube, namespace, dnsName string, now time.Time) (*certs.Serving, string, error) {
	secret, err := k.client.CoreV1().Secrets(namespace).Get(ctx, manifests.InjectorTLSSecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("read the existing webhook serving certificate: %w", err)
	}
	s, err := certs.ParseServing(secret.Data["ca.crt"], secret.Data["tls.crt"], secret.Data["tls.key"])
	if err == nil {
		err = s.Validate(dnsName, now)
	}
	switch {
	case err != nil:
		return nil, "the existing serving certificate is unusable (" + err.Error() + ")", nil
	case certs.ExpiresWithin(s.Cert, now, servingRenewBefore):
		return nil, "the serving certificate expires on " + day(s.Cert.NotAfter), nil
	}
	return s, "", nil
}

// day formats a certificate date.
func day(t time.Time) string { return t.UTC().Format(time.DateOnly) }
