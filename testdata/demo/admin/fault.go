package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/mesh-dev/mesh/testdata/demo/fault"
)

// maxFaultBody bounds a PUT /fault body; a fault is a few dozen bytes.
const maxFaultBody = 4 << 10

// faultAPI serves /fault, the fault of a running component, as JSON:
//
//	GET /fault
//	  200 {"fail_rate":0.5,"latency":"50ms","fail_status":503}
//	PUT /fault  {"fail_rate":0.5,"latency":"50ms","fail_status":503}
//	  200 with the fault now in force, in the same form
//	  400 text/plain naming what is wrong; the fault in force is unchanged
//
// The body is one JSON object whatever the Content-Type (curl -d works);
// form values are rejected. A PUT sets the fields it names and keeps the
// others, so {"fail_rate":1} makes every request fail with the status and
// latency already in force, and {"fail_rate":0,"latency":"0s"} stops all
// injection. fail_rate is a number from 0 to 1; latency a Go duration
// string ("50ms", "1.5s", "0s"); fail_status the HTTP status of a failed
// request, 400 to 599 or 0 for 500, used by the HTTP servers (echo, web,
// orders) only. Unknown fields are rejected, so a typo is an error rather
// than a silent no-op. Safe for concurrent use: concurrent PUTs apply one
// after the other.
type faultAPI struct {
	faults *fault.Switch
}

func (a faultAPI) get(w http.ResponseWriter, _ *http.Request) {
	writeFault(w, a.faults.Load())
}

func (a faultAPI) put(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFaultBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			err = fmt.Errorf("body larger than %d bytes", maxFaultBody)
		}
		http.Error(w, "reading fault: "+err.Error(), http.StatusBadRequest)
		return
	}
	f, err := a.faults.Update(func(cur fault.Fault) (fault.Fault, error) { return decodeFault(cur, body) })
	if err != nil {
		http.Error(w, "invalid fault: "+err.Error(), http.StatusBadRequest)
		return
	}
	writeFault(w, f)
}

// faultJSON is the wire form of a fault.Fault. It always has every field,
// so what GET answers, PUT back, restores the fault exactly.
type faultJSON struct {
	FailRate   float64  `json:"fail_rate"`
	Latency    duration `json:"latency"`
	FailStatus int      `json:"fail_status"`
}

// decodeFault returns cur with the fields a PUT /fault body names set from
// it. It does not validate the result (Switch.Update does).
func decodeFault(cur fault.Fault, body []byte) (fault.Fault, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return fault.Fault{}, errors.New(`want a JSON object such as {"fail_rate":0.5,"latency":"50ms","fail_status":503}`)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	// Decoding into cur's form leaves the fields the body omits as they are.
	j := faultJSON{FailRate: cur.FailRate, Latency: duration(cur.Latency), FailStatus: cur.FailStatus}
	if err := dec.Decode(&j); err != nil {
		return fault.Fault{}, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fault.Fault{}, errors.New("data after the JSON object")
	}
	return fault.Fault{FailRate: j.FailRate, Latency: time.Duration(j.Latency), FailStatus: j.FailStatus}, nil
}

func writeFault(w http.ResponseWriter, f fault.Fault) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(faultJSON{FailRate: f.FailRate, Latency: duration(f.Latency), FailStatus: f.FailStatus})
}

// duration is a time.Duration that is a string in JSON: "50ms".
type duration time.Duration

func (d duration) MarshalJSON() ([]byte, error) {
	return strconv.AppendQuote(nil, time.Duration(d).String()), nil
}

func (d *duration) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil // as for the other fields: keep the value in force
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf(`latency must be a duration string such as "50ms", got %s`, b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("latency: %w", err)
	}
	*d = duration(v)
	return nil
}
