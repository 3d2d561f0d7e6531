package registry

import (
	"fmt"
	"strings"
)

// ParseService splits a service dir name "<app>_<env>" and checks both
// names with ValidName (which admits no "_", so the split is unambiguous).
func ParseService(name string) (app, env string, err error) {
	app, env, ok := strings.Cut(name, "_")
	if !ok {
		return "", "", fmt.Errorf("parse service %q: want <app>_<env>", short(name))
	}
	if ValidName(app) != nil || ValidName(env) != nil {
		return "", "", fmt.Errorf("parse service %q: want <app>_<env>, each [A-Za-z0-9][A-Za-z0-9.-]*", short(name))
	}
	return app, env, nil
}
