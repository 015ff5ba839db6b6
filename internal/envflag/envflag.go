// Package envflag lets environment variables set flags, the way Kubernetes
// manifests configure a container: MESH_PROXY_LOG_LEVEL=debug is the same as
// --log-level=debug. A flag given on the command line wins over the
// environment.
package envflag

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"
)

// Name returns the variable that sets flag name: prefix + NAME with dashes
// as underscores, e.g. ("MESH_PROXY_", "log-level") -> MESH_PROXY_LOG_LEVEL.
func Name(prefix, flag string) string {
	return prefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// Apply sets every flag of fs not changed on the command line from its
// variable, if lookup finds one (pass os.LookupEnv). An invalid value is an
// error naming the variable.
func Apply(fs *pflag.FlagSet, prefix string, lookup func(string) (string, bool)) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		env := Name(prefix, f.Name)
		v, ok := lookup(env)
		if !ok {
			return
		}
		if setErr := fs.Set(f.Name, v); setErr != nil {
			err = fmt.Errorf("environment variable %s=%q: %w", env, v, setErr)
		}
	})
	return err
}
