package injector

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"runtime/debug"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/events"

	"github.com/mesh-dev/mesh/install/inject"
	"github.com/mesh-dev/mesh/internal/names"
)

// Event reasons, on the pod's owner (or namespace): the pod itself does not
// exist yet at admission.
const (
	ReasonInvalidAnnotation = "InvalidAnnotation"
	ReasonInjectionSkipped  = "InjectionSkipped"
)

// maxReviewBytes bounds a request body: the API server caps objects at
// 3 MiB, and a review carries the object plus little else.
const maxReviewBytes = 8 << 20

var podResource = metav1.GroupVersionResource{Version: "v1", Resource: "pods"}

// handler answers AdmissionReviews for pods. It is safe for concurrent use:
// the lister and recorder are, and it holds no state of its own.
type handler struct {
	inject     inject.Config
	namespaces corelisters.NamespaceLister
	events     events.EventRecorder // nil: no events
	metrics    *Metrics
	log        *slog.Logger
}

// ServeHTTP decodes an admission.k8s.io/v1 AdmissionReview and answers it.
// A body that is not one gets 400; anything going wrong past that allows
// the pod unchanged, since a broken injector must never stop workloads.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "the proxy injector takes POSTed AdmissionReviews", http.StatusMethodNotAllowed)
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		h.badRequest(w, http.StatusUnsupportedMediaType, fmt.Errorf("content type %q: want application/json", r.Header.Get("Content-Type")))
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxReviewBytes)).Decode(&review); err != nil {
		status := http.StatusBadRequest
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			status = http.StatusRequestEntityTooLarge
		}
		h.badRequest(w, status, fmt.Errorf("malformed AdmissionReview: %w", err))
		return
	}
	gvk := review.GroupVersionKind()
	if gvk != admissionv1.SchemeGroupVersion.WithKind("AdmissionReview") {
		h.badRequest(w, http.StatusBadRequest, fmt.Errorf("got %s %s: want an AdmissionReview of %s", gvk.Kind, gvk.GroupVersion(), admissionv1.SchemeGroupVersion))
		return
	}
	if review.Request == nil {
		h.badRequest(w, http.StatusBadRequest, errors.New("the AdmissionReview has no request"))
		return
	}
	resp := h.admit(review.Request)
	resp.UID = review.Request.UID
	out, err := json.Marshal(admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp})
	if err != nil { // cannot happen with these types; the API server applies its failurePolicy
		h.log.Error("encoding the admission response", "err", err)
		http.Error(w, "encoding the admission response failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(out)
}

func (h *handler) badRequest(w http.ResponseWriter, status int, err error) {
	h.log.Warn("bad admission request", "status", status, "err", err)
	h.metrics.injection(resultError, reasonBadRequest)
	http.Error(w, err.Error(), status)
}

// admit decides one request. Whatever happens, the pod is allowed.
func (h *handler) admit(req *admissionv1.AdmissionRequest) (resp *admissionv1.AdmissionResponse) {
	log := h.log.With("uid", req.UID, "namespace", req.Namespace)
	defer func() {
		if p := recover(); p != nil {
			log.Error("panic while injecting; the pod is admitted as it is", "panic", p, "stack", string(debug.Stack()))
			h.metrics.injection(resultError, reasonInternal)
			resp = &admissionv1.AdmissionResponse{Allowed: true}
		}
	}()
	resp = &admissionv1.AdmissionResponse{Allowed: true}
	if req.Resource != podResource || req.SubResource != "" || req.Operation != admissionv1.Create {
		// The webhook configuration should not send these; let them pass.
		log.Debug("not a pod creation; allowed", "resource", req.Resource, "operation", req.Operation)
		return resp
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		log.Error("cannot decode the pod; admitted as it is", "err", err)
		h.metrics.injection(resultError, reasonBadPod)
		return resp
	}
	// A pod created through a controller has no namespace in its body yet.
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace
	}
	log = log.With("pod", podName(&pod))
	ns := h.namespace(pod.Namespace, log)
	if ns.Labels[names.LabelWebhook] == names.WebhookIgnore {
		// The webhook configuration's namespaceSelector keeps these away;
		// one edited by hand, or written by an older install, may not.
		// The label wins over every annotation, with no warning or event.
		log.Debug("not injected: the namespace is labelled " + names.LabelWebhook + "=" + names.WebhookIgnore)
		h.metrics.injection(resultSkipped, reasonIgnored)
		return resp
	}

	cfg := h.inject
	cfg.Defaults, cfg.CNI = h.installSettings(log)
	mutated := pod.DeepCopy()
	res, err := inject.Pod(mutated, ns, cfg)
	if err != nil {
		log.Error("injector misconfigured; pod admitted as it is", "err", err)
		h.metrics.injection(resultError, reasonConfig)
		return resp
	}
	resp.Warnings = res.Warnings
	for _, d := range res.Details {
		h.metrics.warning(d.Annotation)
	}
	// Events are the webhook's only side effect; a dry run must have none
	// (the webhook is registered with sideEffects: NoneOnDryRun).
	if req.DryRun == nil || !*req.DryRun {
		h.record(&pod, ns, res)
	}
	if !res.Injected {
		log.Debug("not injected", "reason", res.Reason, "warnings", res.Warnings)
		h.metrics.injection(resultSkipped, string(res.Skip))
		return resp
	}
	patch, err := inject.Patch(&pod, mutated)
	if err != nil {
		log.Error("computing the patch; pod admitted as it is", "err", err)
		h.metrics.injection(resultError, reasonInternal)
		return resp
	}
	resp.Patch = patch
	resp.PatchType = new(admissionv1.PatchTypeJSONPatch)
	log.Info("injected", "warnings", res.Warnings)
	h.metrics.injection(resultInjected, "")
	return resp
}

// namespace returns the pod's namespace from the informer cache. A miss
// (the cache lags a namespace created a moment ago) counts as a namespace
// without annotations: the request must not wait on the API server.
func (h *handler) namespace(name string, log *slog.Logger) *corev1.Namespace {
	ns, err := h.namespaces.Get(name)
	if err != nil {
		if !apierrors.IsNotFound(err) {
			log.Error("namespace lookup", "err", err)
		} else {
			log.Warn("namespace not in the cache yet; its annotations are not seen")
		}
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	}
	return ns
}

// installSettings returns the install's proxy defaults and its CNI mode:
// the annotations of the control-plane namespace, where `mesh install`
// writes them (--proxy-log-level, --tracing-collector ..., and
// names.AnnotationCNI for --cni). Read on every request from the cache, so
// `kubectl annotate namespace` there changes the next pod's proxy without
// a restart, and an install that switches to or from CNI mode changes how
// the next pod is injected without restarting the controller. A miss means
// no defaults and no CNI mode, with a warning in the log: the namespace
// holds this very process, so the cache lags it only at start.
func (h *handler) installSettings(log *slog.Logger) (defaults map[string]string, cni bool) {
	name := h.inject.ControlPlaneNamespace
	if name == "" {
		name = names.DefaultControlPlaneNamespace
	}
	ns, err := h.namespaces.Get(name)
	if err != nil {
		log.Warn("control-plane namespace not in the cache; the install's proxy defaults are not applied", "control_plane_namespace", name, "err", err)
		return nil, false
	}
	// The cache's map, read only: inject.Pod never writes to it.
	return ns.Annotations, ns.Annotations[names.AnnotationCNI] == names.Enabled
}

// record turns the warnings into Warning events on the pod's owner, or on
// its namespace when it has none, so that `kubectl describe` and `kubectl
// events` show them where the user looks.
func (h *handler) record(pod *corev1.Pod, ns *corev1.Namespace, res inject.Result) {
	if h.events == nil || len(res.Details) == 0 {
		return
	}
	regarding := eventTarget(pod, ns)
	for _, d := range res.Details {
		reason := ReasonInvalidAnnotation
		if d.Annotation == "" {
			reason = ReasonInjectionSkipped
		}
		h.events.Eventf(regarding, nil, corev1.EventTypeWarning, reason, "Inject", "pod %s: %s", podName(pod), d.Message)
	}
}

func eventTarget(pod *corev1.Pod, ns *corev1.Namespace) runtime.Object {
	owner := metav1.GetControllerOf(pod)
	if owner == nil && len(pod.OwnerReferences) > 0 {
		owner = &pod.OwnerReferences[0]
	}
	if owner != nil {
		return &corev1.ObjectReference{
			APIVersion: owner.APIVersion, Kind: owner.Kind,
			Namespace: pod.Namespace, Name: owner.Name, UID: owner.UID,
		}
	}
	return &corev1.ObjectReference{APIVersion: "v1", Kind: "Namespace", Name: ns.Name, UID: ns.UID}
}

// podName names a pod being created: controllers leave the name to be
// generated, so only the prefix is known.
func podName(pod *corev1.Pod) string {
	if pod.Name != "" {
		return pod.Name
	}
	return pod.GenerateName + "<generated>"
}
