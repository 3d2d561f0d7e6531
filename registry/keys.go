package registry

import (
	"slices"
	"strings"
)

// The reserved subtrees under a registry prefix: bookkeeping, never an app
// (app names start with [A-Za-z0-9], so no service dir is named like them).
const (
	portsDir     = "_ports"
	renderersDir = "_renderers"
)

// Reserved reports whether key lies in one of the reserved subtrees directly
// under the registry prefix: <prefix>/_ports/... (port claims) or
// <prefix>/_renderers/... (renderer acks), or is one of those dirs itself.
// A "_ports" or "_renderers" segment anywhere else ("/cfg/_ports/x" with
// prefix "") is an ordinary key.
func Reserved(prefix, key string) bool {
	// key must start with CleanPrefix(prefix)+"/", checked without building
	// it: this runs for every key of every render.
	rest, ok := strings.CutPrefix(key, "/")
	if p := strings.Trim(prefix, "/"); ok && p != "" {
		rest, ok = strings.CutPrefix(rest, p)
		if ok {
			rest, ok = strings.CutPrefix(rest, "/")
		}
	}
	if !ok {
		return false
	}
	top, _, _ := strings.Cut(rest, "/")
	return top == portsDir || top == renderersDir
}

// IsInstanceKey reports whether key has the instance form
// "<prefix>/<app>_<env>/<ip>-<port>", for any prefix: its last segment is a
// canonical instance name and the one before it a service name. Only such
// keys carry an address that a template may turn into config.
func IsInstanceKey(key string) bool {
	i := strings.LastIndexByte(key, '/')
	if i < 0 {
		return false
	}
	j := strings.LastIndexByte(key[:i], '/')
	if j < 0 {
		return false
	}
	if _, _, err := ParseService(key[j+1 : i]); err != nil {
		return false
	}
	_, err := ParseInstanceName(key[i+1:])
	return err == nil
}

// Collapse sorts prefixes, drops duplicates and every prefix another one
// covers (Covers), so that each key is under at most one of the result.
func Collapse(prefixes []string) []string {
	ps := slices.Clone(prefixes)
	slices.Sort(ps)
	ps = slices.Compact(ps)
	out := ps[:0]
	for _, p := range ps {
		if !slices.ContainsFunc(ps, func(q string) bool { return q != p && Covers(q, p) }) {
			out = append(out, p)
		}
	}
	return slices.Clip(out)
}

// AckDirs are the RenderersDir of every prefix an ack covering key can live
// under: the root and each ancestor dir of key, from the root down. A
// renderer acknowledges under its global prefix (the root without one) and
// watches only below it, so every renderer whose watched keys cover key
// acknowledges in one of these, whatever prefixes the registrar and the
// renderer's resources use; whether it covers key is then its Ack's to say.
func AckDirs(key string) []string {
	dirs := []string{RenderersDir("")}
	segs := strings.Split(strings.Trim(key, "/"), "/")
	for i := 1; i < len(segs); i++ {
		dirs = append(dirs, RenderersDir(strings.Join(segs[:i], "/")))
	}
	return dirs
}
