package names

import (
	"errors"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestParseDefaultInboundPolicy(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "all-unauthenticated", want: PolicyAllUnauthenticated},
		{in: "all-authenticated", want: PolicyAllAuthenticated},
		{in: "cluster-authenticated", want: PolicyClusterAuthenticated},
		{in: "cluster-unauthenticated", want: PolicyClusterUnauthenticated},
		{in: "deny", want: PolicyDeny},
		{in: "audit", want: PolicyAudit},
		{in: " deny\n", want: PolicyDeny},
		{in: "", wantErr: true},
		{in: "Deny", wantErr: true},
		{in: "allow", wantErr: true},
		{in: "all-unauthenticated,deny", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseDefaultInboundPolicy(tc.in)
			if tc.wantErr {
				if !errors.Is(err, ErrDefaultInboundPolicy) {
					t.Fatalf("ParseDefaultInboundPolicy(%q) = %q, %v; want ErrDefaultInboundPolicy", tc.in, got, err)
				}
				// The error is the whole help: every valid name is in it.
				for _, name := range DefaultInboundPolicies {
					if !strings.Contains(err.Error(), name) {
						t.Errorf("error %q does not list %s", err, name)
					}
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseDefaultInboundPolicy(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
	if DefaultInboundPolicies[0] != DefaultInboundPolicy || len(DefaultInboundPolicies) != 6 {
		t.Errorf("DefaultInboundPolicies = %q: want the six of DESIGN.md, the default first", DefaultInboundPolicies)
	}
}

// TestParseDefaultInboundPolicyCutsLongValues: an annotation value can be
// 256 KiB; the error that quotes it goes into webhook warnings and events,
// so it carries only its start.
func TestParseDefaultInboundPolicyCutsLongValues(t *testing.T) {
	_, err := ParseDefaultInboundPolicy(strings.Repeat("x", 1<<16))
	if err == nil {
		t.Fatal("a long value was accepted")
	}
	if want := strconv.Quote(strings.Repeat("x", 64)) + "..."; !strings.Contains(err.Error(), want) || len(err.Error()) > 400 {
		t.Errorf("error of %d bytes %.100q..., want it to quote the first 64 characters only", len(err.Error()), err)
	}
}

// FuzzParseDefaultInboundPolicy: whatever a pod's annotation says, the
// parse either names one of the policies or wraps ErrDefaultInboundPolicy.
func FuzzParseDefaultInboundPolicy(f *testing.F) {
	for _, s := range DefaultInboundPolicies {
		f.Add(s)
	}
	f.Add(" deny\t")      // surrounding spaces are trimmed
	f.Add("DENY")         // case matters
	f.Add("deny,audit")   // one name, not a list
	f.Add("\xff\xfedeny") // not UTF-8
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseDefaultInboundPolicy(s)
		if err != nil {
			if !errors.Is(err, ErrDefaultInboundPolicy) {
				t.Fatalf("error %v does not wrap ErrDefaultInboundPolicy", err)
			}
			return
		}
		if got != strings.TrimSpace(s) {
			t.Fatalf("ParseDefaultInboundPolicy(%q) = %q, want the trimmed input", s, got)
		}
	})
}

// TestImportsStandardLibraryOnly keeps the package a leaf (DESIGN.md "Where
// it goes"): the proxy, the controller and identity/ import it, so any
// import of ours here could make a cycle or drag install/ into the proxy,
// and any other module would go into every binary.
func TestImportsStandardLibraryOnly(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			// Standard library paths have no dot in their first element.
			if first, _, _ := strings.Cut(path, "/"); strings.Contains(first, ".") {
				t.Errorf("%s imports %s: package names must import the standard library only", name, path)
			}
		}
	}
}

// TestDefaultAddrs: the addresses injected proxies dial are absolute DNS
// names of the control plane's namespace, on the ports the controller
// serves.
func TestDefaultAddrs(t *testing.T) {
	if got, want := DefaultDestinationAddr("mesh"), "mesh-controller.mesh.svc.cluster.local.:8086"; got != want {
		t.Errorf("DefaultDestinationAddr = %q, want %q", got, want)
	}
	if got, want := DefaultIdentityAddr("mesh"), "mesh-identity.mesh.svc.cluster.local.:8080"; got != want {
		t.Errorf("DefaultIdentityAddr = %q, want %q", got, want)
	}
}
