package policy

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	at "github.com/mesh-dev/mesh/proxy/authz/authztest"
)

// getView is GET /policy on e's handler.
func getView(t *testing.T, e *Enforcer) PolicyView {
	t.Helper()
	rec := httptest.NewRecorder()
	e.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/policy", nil))
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET /policy: %d %s, want 200 application/json", rec.Code, rec.Header().Get("Content-Type"))
	}
	var v PolicyView
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("GET /policy: %v in %s", err, rec.Body)
	}
	return v
}

// TestHandler: /policy says no policy was received until the first, then
// shows the one in force, and the next one once it replaced it.
func TestHandler(t *testing.T) {
	h := start(t, time.Second)
	v := getView(t, h.e)
	if v.Received || v.Policy != nil || v.ReceivedAt != nil || v.Namespace != "shop" || v.Pod != "api-0" {
		t.Errorf("before a policy: %+v, want shop/api-0 with none received", v)
	}
	h.set(t, at.AllowAll())
	v = getView(t, h.e)
	if !v.Received || v.Policy == nil || v.Policy.DefaultPolicy != "all-unauthenticated" {
		t.Fatalf("after all-unauthenticated: %+v", v)
	}
	if v.ReceivedAt == nil || time.Since(*v.ReceivedAt) > time.Minute || time.Until(*v.ReceivedAt) > 0 {
		t.Errorf("received_at %v, want the moment the policy came", v.ReceivedAt)
	}
	h.set(t, at.Large(2, 2, 8080))
	v = getView(t, h.e)
	if v.Policy.Revision != "large-2x2" || len(v.Policy.Servers) != 2 || v.Policy.Servers[0].Port != 8080 {
		t.Errorf("after an update: %+v, want revision large-2x2 with servers on 8080 and 8081", v.Policy)
	}
}

// TestHandlerNil: a proxy without an Enforcer serves no /policy.
func TestHandlerNil(t *testing.T) {
	var e *Enforcer
	if e.Handler() != nil {
		t.Error("a nil Enforcer's Handler is not nil")
	}
}
