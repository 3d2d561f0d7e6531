package haproxyapi

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"text/template"

	"github.com/rollcall/rollcall/registry"
)

// ConfigBackend is one backend as the config template sees it.
type ConfigBackend struct {
	Name    string         // <app>_<env>, checked with registry.ParseService
	Servers []ConfigServer // its slots, s1..sN
}

// ConfigServer is one slot: `server {{.Name}} {{.Addr}}` plus ` disabled`
// when not Ready.
type ConfigServer struct {
	Name  string // s1, s2, ...
	Addr  string // canonical ip:port ([v6]:port); 0.0.0.0:0 for a slot never used
	Ready bool
}

// ConfigData is what the config template executes with.
type ConfigData struct {
	Backends []ConfigBackend // sorted by name
}

// Data turns a layout into the template's data: the whole state, so
// HAProxy started or reloaded from the rendered file serves exactly the
// planned servers, in the same slots.
func Data(l Layout) (ConfigData, error) {
	var d ConfigData
	for _, name := range slices.Sorted(maps.Keys(l)) {
		if _, _, err := registry.ParseService(name); err != nil {
			return ConfigData{}, fmt.Errorf("backend %q: %w", name, err)
		}
		b := ConfigBackend{Name: name}
		for i, s := range l[name] {
			addr := "0.0.0.0:0"
			if s.Addr.IsValid() {
				a, err := registry.ParseAddr(s.Addr.String())
				if err != nil {
					return ConfigData{}, fmt.Errorf("backend %s: %w", name, err)
				}
				addr = a.String()
			}
			b.Servers = append(b.Servers, ConfigServer{Name: SlotName(i), Addr: addr, Ready: s.Ready})
		}
		d.Backends = append(d.Backends, b)
	}
	return d, nil
}

// RenderConfig executes the config template text (named name in errors)
// with l's data.
func RenderConfig(name, text string, l Layout) ([]byte, error) {
	t, err := template.New(name).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, err
	}
	d, err := Data(l)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, d); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
