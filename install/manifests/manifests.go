// Package manifests renders the Kubernetes objects of the mesh control plane
// from the templates embedded beside this file, in the order they must be
// applied: first the CustomResourceDefinitions of the policy API, which
// controller-gen generates from api/policy into crds/ (`make generate`),
// then the templates. The names, labels and annotations here are the
// contract the controller, the injector, `mesh check` and `mesh uninstall`
// rely on.
package manifests

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"regexp"
	"strings"
	"text/template"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/mesh-dev/mesh/internal/clusternet"
	"github.com/mesh-dev/mesh/internal/names"
)

// Defaults of `mesh install` (DESIGN.md "Fixed contract").
const (
	DefaultNamespace = names.DefaultControlPlaneNamespace
	DefaultRegistry  = "ghcr.io/mesh-dev"
)

// Labels and annotations.
const (
	// PartOfLabel marks every object install creates, with value PartOf, so
	// uninstall finds them all.
	PartOfLabel = "app.kubernetes.io/part-of"
	PartOf      = "mesh"
	// NameLabel names the component an object belongs to.
	NameLabel = "app.kubernetes.io/name"
	// VersionLabel on the controller Deployment is the control plane's version.
	VersionLabel = "app.kubernetes.io/version"
	// TrustDomainAnnotation on the issuer Secret and trust-roots ConfigMap
	// records the SPIFFE trust domain they were made for.
	TrustDomainAnnotation = "mesh.dev/identity-trust-domain"
	// InjectorTLSChecksumAnnotation on the controller's pod template changes
	// with the webhook serving certificate, rolling the pods on renewal.
	InjectorTLSChecksumAnnotation = "mesh.dev/injector-tls-checksum"
	// IdentityChecksumAnnotation on the controller's pod template changes
	// with the trust anchors, which the controller injects into new pods.
	IdentityChecksumAnnotation = "mesh.dev/identity-anchors-checksum"
)

// Object names.
const (
	// ControllerName names the Deployment, its ServiceAccount, the
	// ClusterRole, Role and their bindings, and the PodDisruptionBudget.
	ControllerName          = "mesh-controller"
	InjectorServiceName     = "mesh-injector"
	InjectorTLSSecretName   = "mesh-injector-tls"
	WebhookConfigName       = "mesh-proxy-injector"
	WebhookName             = "inject.mesh.dev"
	IssuerSecretName        = "mesh-identity-issuer"
	TrustRootsConfigMapName = "mesh-trust-roots"
	// TrustRootsKey is the key of the PEM trust bundle in the ConfigMap.
	TrustRootsKey = "ca-bundle.crt"
	// TapAPIServiceName registers the aggregated tap API (tap.mesh.dev)
	// with the API server, which calls Service TapServiceName (mesh-viz's
	// pods) and trusts TapTLSSecretName's certificate through its
	// caBundle. Users an admin binds to TapClusterRoleName may tap.
	TapAPIServiceName  = "v1alpha1.tap.mesh.dev"
	TapServiceName     = "mesh-viz"
	TapTLSSecretName   = "mesh-tap-tls"
	TapClusterRoleName = "mesh-tap"
)

// Images are "<registry>/<name>:<version>".
const (
	ProxyImageName      = "mesh-proxy"
	ControllerImageName = "mesh-controller"
)

// IdentityPEM is the identity PKI as it is stored in the cluster.
type IdentityPEM struct {
	TrustAnchors []byte // PEM certificates, the trust bundle
	IssuerCert   []byte // PEM issuer certificate and intermediates
	IssuerKey    []byte // PEM issuer private key
}

// ServingPEM is a serving certificate the API server calls (the
// webhook's, the tap API's) and its CA.
type ServingPEM struct {
	CA   []byte
	Cert []byte
	Key  []byte
}

// Values are the inputs of the templates. The zero value of each PEM field
// renders empty data, which is enough for callers that only need the
// objects' kinds and names.
type Values struct {
	// Namespace is the control-plane namespace.
	Namespace string
	// Registry prefixes the image names, e.g. "ghcr.io/mesh-dev".
	Registry string
	// Version tags the images and labels the controller.
	Version string
	// HA runs two controllers with a PodDisruptionBudget and makes the
	// webhook fail closed.
	HA bool
	// TrustDomain is the SPIFFE trust domain the identity PKI serves.
	TrustDomain string
	Identity    IdentityPEM
	Injector    ServingPEM
	// Tap is the tap API's serving certificate, for TapServiceName.
	Tap ServingPEM
	// DefaultInboundPolicy is the controller's --default-inbound-policy,
	// one of names.DefaultInboundPolicies: what proxies allow on ports no
	// Server selects unless the pod or its namespace says otherwise. ""
	// means names.DefaultInboundPolicy (all-unauthenticated).
	DefaultInboundPolicy string
	// ClusterNetworks is the controller's --cluster-networks, which it
	// gives every proxy it injects; empty means
	// clusternet.Default().
	ClusterNetworks []netip.Prefix
	// Proxy and Tracing are the install's defaults for every injected
	// proxy, written on the control-plane namespace (ProxyAnnotations);
	// Tracing.Jaeger deploys Jaeger (60-jaeger.yaml). Their zero values
	// set nothing and deploy nothing.
	Proxy   ProxyDefaults
	Tracing Tracing
	// CNI is the CNI mode: the mesh CNI plugin's DaemonSet (55-cni.yaml)
	// and the control-plane namespace's names.AnnotationCNI, which tells
	// the injector. The zero value is off.
	CNI CNI
}

// withDefaults fills the zero fields that have a default.
func (v Values) withDefaults() Values {
	if v.DefaultInboundPolicy == "" {
		v.DefaultInboundPolicy = names.DefaultInboundPolicy
	}
	if len(v.ClusterNetworks) == 0 {
		v.ClusterNetworks = clusternet.Default()
	}
	v.CNI = v.CNI.withDefaults()
	return v
}

// ProxyImage is the sidecar image reference the injector uses.
func (v Values) ProxyImage() string { return v.Registry + "/" + ProxyImageName + ":" + v.Version }

// ControllerImage is the controller image reference.
func (v Values) ControllerImage() string {
	return v.Registry + "/" + ControllerImageName + ":" + v.Version
}

// Replicas is the controller's replica count.
func (v Values) Replicas() int {
	if v.HA {
		return 2
	}
	return 1
}

// FailurePolicy is the webhook's: a lone controller must not block pod
// creation when it is down; with HA, pods must not start unmeshed.
func (v Values) FailurePolicy() string {
	if v.HA {
		return "Fail"
	}
	return "Ignore"
}

// InjectorChecksum identifies the serving certificate material.
func (v Values) InjectorChecksum() string {
	h := sha256.New()
	for _, b := range [][]byte{v.Injector.CA, v.Injector.Cert, v.Injector.Key} {
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// IdentityChecksum identifies the trust anchors: the controller injects
// them into new pods and reads them at start, so a change rolls it.
func (v Values) IdentityChecksum() string {
	sum := sha256.Sum256(v.Identity.TrustAnchors)
	return hex.EncodeToString(sum[:])
}

// tagPattern is the OCI distribution spec's tag grammar.
var tagPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// Validate reports values the templates cannot render into valid objects.
func (v Values) Validate() error {
	var errs []error
	if msgs := validation.IsDNS1123Label(v.Namespace); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("namespace %q: %s", v.Namespace, strings.Join(msgs, "; ")))
	}
	if v.Registry == "" || strings.HasPrefix(v.Registry, "/") || strings.HasSuffix(v.Registry, "/") ||
		strings.ContainsAny(v.Registry, " \t\n@") {
		errs = append(errs, fmt.Errorf("registry %q: want a host and optional path, like %q", v.Registry, DefaultRegistry))
	}
	if !tagPattern.MatchString(v.Version) {
		errs = append(errs, fmt.Errorf("version %q is not a valid image tag", v.Version))
	} else if msgs := validation.IsValidLabelValue(v.Version); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("version %q: %s", v.Version, strings.Join(msgs, "; ")))
	}
	if v.TrustDomain == "" {
		errs = append(errs, errors.New("empty trust domain"))
	}
	if v.DefaultInboundPolicy != "" {
		// Exactly a name: the controller's flag is parsed the same way.
		if p, err := names.ParseDefaultInboundPolicy(v.DefaultInboundPolicy); err != nil || p != v.DefaultInboundPolicy {
			errs = append(errs, fmt.Errorf("default inbound policy %q: want one of %s", v.DefaultInboundPolicy, strings.Join(names.DefaultInboundPolicies, ", ")))
		}
	}
	for _, p := range v.ClusterNetworks {
		if !p.IsValid() || p != p.Masked() {
			errs = append(errs, fmt.Errorf("cluster network %s: want a CIDR without host bits, like 10.0.0.0/8", p))
		}
	}
	if err := v.validateProxyDefaults(); err != nil {
		errs = append(errs, err)
	}
	if err := v.CNI.validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Manifest is one rendered object.
type Manifest struct {
	// Object is the decoded object, ready for server-side apply.
	Object *unstructured.Unstructured
	// YAML is the rendered text, comments included.
	YAML []byte
}

// Name is "kind/name", as `kubectl` would print it, for messages.
func (m Manifest) Name() string {
	return strings.ToLower(m.Object.GetKind()) + "/" + m.Object.GetName()
}

// CRDKind is the kind of the policy API's and the Gateway API's definitions.
const CRDKind = "CustomResourceDefinition"

// IsCRD reports whether m is a CustomResourceDefinition: one of the policy
// API's, which install applies and waits for first, or of the Gateway
// API's (GatewayAPICRDs).
func (m Manifest) IsCRD() bool {
	return m.Object.GetKind() == CRDKind && m.Object.GetAPIVersion() == "apiextensions.k8s.io/v1"
}

//go:embed *.yaml
var files embed.FS

// crdFiles are controller-gen's output, applied as they are but for the
// PartOfLabel, which uninstall finds them by.
//
//go:embed crds/*.yaml
var crdFiles embed.FS

var templates = template.Must(template.New("").
	Option("missingkey=error").
	Funcs(template.FuncMap{
		"b64":    func(b []byte) string { return base64.StdEncoding.EncodeToString(b) },
		"string": func(b []byte) string { return string(b) },
		"quote":  quote,
		"indent": indent,
		"cidrs":  clusternet.Format,
	}).
	ParseFS(files, "*.yaml"))

// quote returns s as a double-quoted YAML (JSON) string.
func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// indent prefixes every non-empty line of s with n spaces, for block scalars.
func indent(n int, s string) string {
	pad := strings.Repeat(" ", n)
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = pad + l
		}
	}
	return strings.Join(lines, "\n")
}

// Render returns the control plane's objects in the order they are applied:
// the policy CRDs, namespace, RBAC, identity, controller, webhook
// configuration.
func Render(v Values) ([]Manifest, error) {
	if err := v.Validate(); err != nil {
		return nil, fmt.Errorf("render manifests: %w", err)
	}
	v = v.withDefaults()
	out, err := CRDs()
	if err != nil {
		return nil, err
	}
	names, err := fs.Glob(files, "*.yaml") // sorted: the file names' prefixes give the order
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		var b bytes.Buffer
		if err := templates.ExecuteTemplate(&b, name, v); err != nil {
			return nil, fmt.Errorf("render %s: %w", name, err)
		}
		docs, err := split(b.Bytes())
		if err != nil {
			return nil, fmt.Errorf("render %s: %w", name, err)
		}
		out = append(out, docs...)
	}
	return out, nil
}

// CRDs returns the policy API's CustomResourceDefinitions, sorted by file
// name, each labelled PartOfLabel=PartOf.
func CRDs() ([]Manifest, error) {
	out, err := loadCRDs(crdFiles, "crds/*.yaml", "# Generated by controller-gen from api/policy/v1alpha1 (make generate), labelled by mesh install.\n")
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("no CustomResourceDefinitions embedded: run make generate")
	}
	return out, nil
}

// loadCRDs decodes the CustomResourceDefinitions of the files of fsys
// that pattern matches, in file-name order, labels each
// PartOfLabel=PartOf and re-renders its YAML under header.
func loadCRDs(fsys fs.FS, pattern, header string) ([]Manifest, error) {
	names, err := fs.Glob(fsys, pattern)
	if err != nil {
		return nil, err
	}
	var out []Manifest
	for _, name := range names {
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		docs, err := split(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		for _, m := range docs {
			if !m.IsCRD() {
				return nil, fmt.Errorf("%s: %s is not a CustomResourceDefinition", name, m.Name())
			}
			labels := m.Object.GetLabels()
			if labels == nil {
				labels = map[string]string{}
			}
			labels[PartOfLabel] = PartOf
			m.Object.SetLabels(labels)
			y, err := yaml.Marshal(m.Object.Object)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			m.YAML = append([]byte(header), y...)
			out = append(out, m)
		}
	}
	return out, nil
}

// separator is a YAML document separator line.
var separator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// split decodes the YAML documents of one rendered file, dropping those
// that hold only comments (a template whose condition was false).
func split(data []byte) ([]Manifest, error) {
	var out []Manifest
	for i, doc := range separator.Split(string(data), -1) {
		// Keep a final line break: it ends the last block scalar's value.
		doc = strings.TrimSpace(doc) + "\n"
		j, err := yaml.YAMLToJSONStrict([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		if string(j) == "null" {
			continue
		}
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(j); err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		if obj.GetName() == "" {
			return nil, fmt.Errorf("document %d: %s without a name", i+1, obj.GetKind())
		}
		out = append(out, Manifest{Object: obj, YAML: []byte(doc)})
	}
	return out, nil
}
