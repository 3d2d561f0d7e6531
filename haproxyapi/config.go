package haproxyapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
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
			if a, err := registry.ParseAddr(s.Addr.String()); err == nil {
				addr = a.String()
			} else if s.Ready {
				return ConfigData{}, fmt.Errorf("backend %s: %w", name, err)
			} // a slot in maint whose address (read back from HAProxy) is not one of ours: blank
			b.Servers = append(b.Servers, ConfigServer{Name: SlotName(i), Addr: addr, Ready: s.Ready})
		}
		d.Backends = append(d.Backends, b)
	}
	return d, nil
}

// shapePrefix starts the first line of a rendered config: the hash of the
// config with every slot blank, so the config's structure (template text,
// backends, slot counts) is compared without its servers.
const shapePrefix = "# rollcall-shape "

// RenderConfig executes the config template text (named name in errors)
// with l's data, under a first line holding its shape (Shape).
func RenderConfig(name, text string, l Layout) ([]byte, error) {
	t, err := template.New(name).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, err
	}
	blank := Layout{}
	for b, slots := range l {
		blank[b] = make([]Slot, len(slots))
	}
	shape, err := execute(t, blank)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(shape)
	body, err := execute(t, l)
	if err != nil {
		return nil, err
	}
	return append([]byte(shapePrefix+hex.EncodeToString(sum[:12])+"\n"), body...), nil
}

func execute(t *template.Template, l Layout) ([]byte, error) {
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

// Shape returns the shape a rendered config records on its first line; ""
// for any other file. Two configs of equal shape differ only in their
// servers' addresses and states: the runtime API applies that difference,
// anything else needs a reload.
func Shape(config []byte) string {
	line, _, _ := bytes.Cut(config, []byte("\n"))
	s, _ := bytes.CutPrefix(line, []byte(shapePrefix))
	if len(s) == len(line) {
		return ""
	}
	return string(s)
}
