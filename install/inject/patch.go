package inject

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Patch returns the RFC 6902 JSON patch that turns orig into mutated, as a
// mutating admission webhook answers; "[]" when they are the same.
//
// The patch is minimal where injection changes a pod: new map entries are
// added one by one and elements inserted into a list (the sidecar put
// before the pod's own init containers) are added at their index, so the
// pod's own containers are never rewritten and any field of them that this
// build's API types do not know survives. Generic diff libraries match
// list elements by index instead and rewrite every element after an
// insertion.
func Patch(orig, mutated *corev1.Pod) ([]byte, error) {
	a, err := toJSONValue(orig)
	if err != nil {
		return nil, fmt.Errorf("inject: patch: %w", err)
	}
	b, err := toJSONValue(mutated)
	if err != nil {
		return nil, fmt.Errorf("inject: patch: %w", err)
	}
	ops := []operation{}
	if err := diff(a, b, "", &ops); err != nil {
		return nil, fmt.Errorf("inject: patch: %w", err)
	}
	out, err := json.Marshal(ops)
	if err != nil {
		return nil, fmt.Errorf("inject: patch: %w", err)
	}
	return out, nil
}

// operation is one RFC 6902 operation; Value is absent for "remove".
type operation struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	Value json.RawMessage `json:"value,omitempty"`
}

// toJSONValue is v as encoding/json decodes it into any, with numbers kept
// exact.
func toJSONValue(v any) (any, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var out any
	err = dec.Decode(&out)
	return out, err
}

// diff appends to ops what turns a into b at path (a JSON pointer, RFC 6901).
func diff(a, b any, path string, ops *[]operation) error {
	if reflect.DeepEqual(a, b) {
		return nil
	}
	switch a := a.(type) {
	case map[string]any:
		if b, ok := b.(map[string]any); ok {
			return diffObjects(a, b, path, ops)
		}
	case []any:
		if b, ok := b.([]any); ok {
			return diffArrays(a, b, path, ops)
		}
	}
	return add(ops, "replace", path, b)
}

func diffObjects(a, b map[string]any, path string, ops *[]operation) error {
	for _, k := range slices.Sorted(maps.Keys(a)) {
		p := path + "/" + escape(k)
		bv, ok := b[k]
		if !ok {
			*ops = append(*ops, operation{Op: "remove", Path: p})
			continue
		}
		if err := diff(a[k], bv, p, ops); err != nil {
			return err
		}
	}
	for _, k := range slices.Sorted(maps.Keys(b)) {
		if _, ok := a[k]; !ok {
			if err := add(ops, "add", path+"/"+escape(k), b[k]); err != nil {
				return err
			}
		}
	}
	return nil
}

// diffArrays keeps the common head and tail of a and b and patches only the
// middle: insertions and removals by index, same-length changes element by
// element, anything else by replacing the array.
func diffArrays(a, b []any, path string, ops *[]operation) error {
	head := 0
	for head < len(a) && head < len(b) && reflect.DeepEqual(a[head], b[head]) {
		head++
	}
	tail := 0
	for tail < len(a)-head && tail < len(b)-head && reflect.DeepEqual(a[len(a)-1-tail], b[len(b)-1-tail]) {
		tail++
	}
	midA, midB := a[head:len(a)-tail], b[head:len(b)-tail]
	switch {
	case len(midA) == 0:
		for i, v := range midB {
			if err := add(ops, "add", path+"/"+strconv.Itoa(head+i), v); err != nil {
				return err
			}
		}
	case len(midB) == 0:
		for range midA {
			*ops = append(*ops, operation{Op: "remove", Path: path + "/" + strconv.Itoa(head)})
		}
	case len(midA) == len(midB):
		for i := range midA {
			if err := diff(midA[i], midB[i], path+"/"+strconv.Itoa(head+i), ops); err != nil {
				return err
			}
		}
	default:
		return add(ops, "replace", path, b)
	}
	return nil
}

func add(ops *[]operation, op, path string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	*ops = append(*ops, operation{Op: op, Path: path, Value: raw})
	return nil
}

// escape makes k one reference token of a JSON pointer (RFC 6901 §3).
func escape(k string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(k)
}
