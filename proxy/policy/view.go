package policy

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/mesh-dev/mesh/proxy/authz"
)

// PolicyView is GET /policy on the admin port: the pod the proxy watches
// the policy of, and the policy in force.
type PolicyView struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	// Received: the proxy holds a policy from the controller. Before the
	// first, it refuses inbound connections once the grace ends.
	Received bool `json:"received"`
	// ReceivedAt is when the policy in force came; nil before the first.
	ReceivedAt *time.Time `json:"received_at,omitempty"`
	// Policy is what the proxy enforces; nil before the first policy.
	Policy *authz.View `json:"policy"`
}

// Handler returns the handler of GET /policy, nil for a nil Enforcer (a
// proxy that enforces no policy), so that the admin server serves no
// /policy rather than an empty one.
func (e *Enforcer) Handler() http.Handler {
	if e == nil {
		return nil
	}
	return http.HandlerFunc(e.serveView)
}

func (e *Enforcer) serveView(w http.ResponseWriter, _ *http.Request) {
	v := PolicyView{Namespace: e.cfg.Namespace, Pod: e.cfg.Pod}
	if p := e.cur.Load(); p != nil {
		view := p.View()
		v.Received, v.Policy = true, &view
		if at := e.received.Load(); at != nil {
			t := at.UTC()
			v.ReceivedAt = &t
		}
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
