package cli

import (
	"encoding/json"
	"fmt"
	"io"

	"sigs.k8s.io/yaml"

	"github.com/mesh-dev/mesh/install/manifests"
)

// checkOutput validates an -o flag.
func checkOutput(format string, allowed ...string) error {
	for _, a := range allowed {
		if format == a {
			return nil
		}
	}
	return fmt.Errorf("--output %q: want one of %v", format, allowed)
}

// writeManifests prints ms as YAML documents (with the templates'
// comments) or as one JSON v1 List, which kubectl apply -f reads too.
func writeManifests(w io.Writer, ms []manifests.Manifest, format string) error {
	if format == "json" {
		items := make([]any, len(ms))
		for i, m := range ms {
			items[i] = m.Object.Object
		}
		return writeJSON(w, map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
	}
	for _, m := range ms {
		if _, err := fmt.Fprintf(w, "---\n%s", m.YAML); err != nil {
			return err
		}
	}
	return nil
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// writeYAML prints v as YAML.
func writeYAML(w io.Writer, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// writeStructured prints v in format, "json" or "yaml".
func writeStructured(w io.Writer, v any, format string) error {
	if format == "json" {
		return writeJSON(w, v)
	}
	return writeYAML(w, v)
}
