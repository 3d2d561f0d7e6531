// Package confd loads and renders confd-compatible template resources.
//
// A resource is a *.toml file anywhere under conf.d/ (searched recursively,
// as confd does) with confd v0.16's [template] table (src, dest, keys,
// prefix, owner, group, uid, gid, mode, check_cmd, reload_cmd, plus
// rollcall's wait), read as confd reads it: an unknown field loads with a
// warning naming it (Resource.Warnings), mode is strconv.ParseUint base 0.
// Its template is Go text/template with confd's functions:
// memkv v0.1.1's store functions (exists, get, gets, getv, getvs, ls, lsdir)
// over keys relative to the prefix, exactly as confd's etcdv3 backend fills
// the store (gets and getvs of a literal "<dir>/*" read a per-render index
// of the same store: glob.go), and confd's helpers (base, dir, split, join,
// json, ...). On top,
// rollcall's typed functions (services, service, instances) hand templates
// registry data already parsed with registry.ParseInstance, so a registered
// value can never become config text.
//
// Load and LoadDir (and Loader's, for -sync-only) parse; Render executes over a snapshot of etcd pairs and
// does no I/O of its own. Staging, checking, installing and reloading belong
// to package renderer.
package confd
