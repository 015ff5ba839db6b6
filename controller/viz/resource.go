package viz

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/mesh-dev/mesh/internal/workload"
)

// Kinds of vizv1.Resource.
const (
	kindDeployment  = workload.KindDeployment
	kindStatefulSet = "statefulset"
	kindDaemonSet   = "daemonset"
	kindJob         = "job"
	kindReplicaSet  = workload.KindReplicaSet
	kindPod         = workload.KindPod
	kindService     = "service"
	kindNamespace   = "namespace"
)

// kinds maps kubectl's names of a kind, lower case, to the kind. The API
// documents deploy, pod, svc and ns; the other workload kinds work the
// same way as deploy.
var kinds = map[string]string{
	"deploy": kindDeployment, "deployment": kindDeployment, "deployments": kindDeployment,
	"sts": kindStatefulSet, "statefulset": kindStatefulSet, "statefulsets": kindStatefulSet,
	"ds": kindDaemonSet, "daemonset": kindDaemonSet, "daemonsets": kindDaemonSet,
	"job": kindJob, "jobs": kindJob,
	"rs": kindReplicaSet, "replicaset": kindReplicaSet, "replicasets": kindReplicaSet,
	"po": kindPod, "pod": kindPod, "pods": kindPod,
	"svc": kindService, "service": kindService, "services": kindService,
	"ns": kindNamespace, "namespace": kindNamespace, "namespaces": kindNamespace,
}

// kindsHelp says what kinds parseKind takes, for error messages.
const kindsHelp = "deploy, pod, svc or ns (also sts, ds, job, rs, and kubectl's long names)"

// isWorkload reports whether kind names pods' owners.
func isWorkload(kind string) bool {
	switch kind {
	case kindDeployment, kindStatefulSet, kindDaemonSet, kindJob, kindReplicaSet:
		return true
	}
	return false
}

// parseKind returns the kind s names.
func parseKind(s string) (string, error) {
	if k, ok := kinds[strings.ToLower(s)]; ok {
		return k, nil
	}
	return "", fmt.Errorf("unknown kind %q: use %s", s, kindsHelp)
}

// ref is a parsed KIND/NAME.
type ref struct {
	Kind, Name string
}

func (r ref) String() string { return r.Kind + "/" + r.Name }

// parseRef parses kubectl's KIND/NAME ("deploy/web", "po/web-1").
func parseRef(s string) (ref, error) {
	kind, name, ok := strings.Cut(s, "/")
	if !ok || name == "" {
		return ref{}, fmt.Errorf("%q is not KIND/NAME, like deploy/web", s)
	}
	k, err := parseKind(kind)
	if err != nil {
		return ref{}, err
	}
	if err := checkName(name); err != nil {
		return ref{}, err
	}
	return ref{Kind: k, Name: name}, nil
}

// checkName refuses what cannot be an object's name, so the message says
// so instead of "not found".
func checkName(name string) error {
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return fmt.Errorf("%q is not a valid name: %s", name, strings.Join(msgs, "; "))
	}
	return nil
}

// checkNamespace refuses what cannot be a namespace's name.
func checkNamespace(ns string) error {
	if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
		return fmt.Errorf("%q is not a valid namespace: %s", ns, strings.Join(msgs, "; "))
	}
	return nil
}
