package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ErrNoNetwork: the conf dir holds no network configuration yet, typically
// because the cluster's network plugin has not written its own. The
// installer waits for one.
var ErrNoNetwork = errors.New("no CNI network configuration (.conflist, .conf or .json) in the conf dir yet")

// FirstConfFile is the file the runtime uses: the first, by name, of the
// conf dir's .conflist, .conf and .json files, as libcni's ConfFiles and
// containerd's CRI plugin choose it.
func FirstConfFile(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	for _, e := range entries { // ReadDir sorts by name
		switch filepath.Ext(e.Name()) {
		case ".conflist", ".conf", ".json":
			if !e.IsDir() { // symlinks count, as in libcni
				return filepath.Join(dir, e.Name()), nil
			}
		}
	}
	return "", ErrNoNetwork
}

// InsertPlugin returns the network configuration in data with entry as the
// last plugin of its chain, and whether that changed anything. data is a
// conflist, or a single plugin's .conf, which becomes a conflist of it
// and entry. An earlier entry of the same type is replaced, so inserting
// again is a no-op and a changed entry moves to the end.
func InsertPlugin(data []byte, entry map[string]any) ([]byte, bool, error) {
	conf, err := asConflist(data)
	if err != nil {
		return nil, false, err
	}
	plugins, _ := conf["plugins"].([]any)
	kept := withoutType(plugins, entry["type"])
	ours := maps.Clone(entry)
	ours["type"] = entry["type"]
	// The entry is chained, so it takes the list's cniVersion; a chain
	// with mixed versions is rejected by libcni.
	delete(ours, "cniVersion")
	conf["plugins"] = append(kept, ours)
	out, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return nil, false, err
	}
	out = append(out, '\n')
	changed := !jsonEqual(data, out)
	return out, changed, nil
}

// RemovePlugin returns the conflist in data without entries of type
// pluginType, and whether there were any.
func RemovePlugin(data []byte, pluginType string) ([]byte, bool, error) {
	var conf map[string]any
	if err := json.Unmarshal(data, &conf); err != nil {
		return nil, false, fmt.Errorf("network configuration: %w", err)
	}
	plugins, ok := conf["plugins"].([]any)
	if !ok {
		return data, false, nil
	}
	kept := withoutType(plugins, pluginType)
	if len(kept) == len(plugins) {
		return data, false, nil
	}
	conf["plugins"] = kept
	out, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return nil, false, err
	}
	return append(out, '\n'), true, nil
}

// asConflist parses a conflist, or turns a single plugin's configuration
// into one: its name and cniVersion move to the list.
func asConflist(data []byte) (map[string]any, error) {
	var conf map[string]any
	if err := json.Unmarshal(data, &conf); err != nil {
		return nil, fmt.Errorf("network configuration: %w", err)
	}
	if _, ok := conf["plugins"]; ok {
		if _, ok := conf["plugins"].([]any); !ok {
			return nil, errors.New("network configuration: plugins is not a list")
		}
		return conf, nil
	}
	if _, ok := conf["type"].(string); !ok {
		return nil, errors.New("network configuration: neither a conflist (plugins) nor a plugin (type)")
	}
	list := map[string]any{"name": conf["name"], "cniVersion": conf["cniVersion"]}
	delete(conf, "name")
	delete(conf, "cniVersion")
	list["plugins"] = []any{conf}
	return list, nil
}

func withoutType(plugins []any, pluginType any) []any {
	return slices.DeleteFunc(slices.Clone(plugins), func(p any) bool {
		m, ok := p.(map[string]any)
		return ok && m["type"] == pluginType
	})
}

// jsonEqual compares two JSON documents as values, so reformatting alone
// does not count as a change.
func jsonEqual(a, b []byte) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return string(ja) == string(jb)
}

// conflistName is where a converted .conf is written: the same name with
// the .conflist extension, so it keeps its place in the runtime's order.
func conflistName(path string) string {
	if filepath.Ext(path) == ".conflist" {
		return path
	}
	return strings.TrimSuffix(path, filepath.Ext(path)) + ".conflist"
}

// copyFileAtomic replaces path with what r reads in one rename, so the
// runtime never reads a half-written file.
func copyFileAtomic(path string, r io.Reader, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename, a no-op
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// writeFileAtomic is copyFileAtomic of data.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	return copyFileAtomic(path, bytes.NewReader(data), perm)
}
