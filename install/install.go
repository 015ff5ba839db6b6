// Package install gathers what puts mesh into a Kubernetes cluster. The work
// is in its subpackages: manifests renders the control plane's objects from
// embedded templates, certs makes and checks the identity and webhook
// certificates, inject is the pod mutation the proxy injector and
// `mesh inject --manual` share, image writes the image tarballs, and cluster
// runs the local test cluster.
package install
