package haproxyapi

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Server is one line of `show servers state`.
type Server struct {
	Backend string
	Name    string
	Addr    netip.AddrPort // invalid when HAProxy holds no usable address
	Op      int            // srv_op_state: 0 stopped, 1 starting, 2 running, 3 stopping
	Admin   int            // srv_admin_state bits; adminForcedMaint is `state maint`
}

// adminForcedMaint is SRV_ADMF_FMAINT: set by `set server ... state maint`
// and by `disabled` in the config, cleared by `state ready`. (A server
// disabled in the config keeps SRV_ADMF_CMAINT, 0x04, after `state ready`
// while taking traffic, so only this bit says maint.)
const adminForcedMaint = 0x01

// Maint reports whether s is in maintenance (takes no new traffic).
func (s Server) Maint() bool { return s.Admin&adminForcedMaint != 0 }

// The fields of a `show servers state` line this package reads (format 1:
// be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ...
// srv_port is the 19th).
const (
	fBackend = 1
	fName    = 3
	fAddr    = 4
	fOp      = 5
	fAdmin   = 6
	fPort    = 18
	nFields  = 19
)

// ParseServersState parses the answer to `show servers state`: a version
// line "1", a "#" header, one line per server. Anything else is an error
// (HAProxy answering with an error message, or a format it changed).
func ParseServersState(out string) ([]Server, error) {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 || strings.TrimSpace(lines[0]) != "1" {
		return nil, fmt.Errorf("show servers state: want format version 1, got %q", clip(lines[0]))
	}
	var srvs []Server
	for i, line := range lines[1:] {
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		s, err := parseServerLine(line)
		if err != nil {
			return nil, fmt.Errorf("show servers state: line %d: %w", i+2, err)
		}
		srvs = append(srvs, s)
	}
	return srvs, nil
}

func parseServerLine(line string) (Server, error) {
	f := strings.Fields(line)
	if len(f) < nFields {
		return Server{}, fmt.Errorf("%d fields, want at least %d: %q", len(f), nFields, clip(line))
	}
	op, err1 := strconv.Atoi(f[fOp])
	admin, err2 := strconv.Atoi(f[fAdmin])
	port, err3 := strconv.ParseUint(f[fPort], 10, 16)
	if err1 != nil || err2 != nil || err3 != nil || op < 0 || admin < 0 {
		return Server{}, fmt.Errorf("bad state, admin state or port in %q", clip(line))
	}
	s := Server{Backend: f[fBackend], Name: f[fName], Op: op, Admin: admin}
	if ip, err := netip.ParseAddr(f[fAddr]); err == nil && !ip.IsUnspecified() && port != 0 {
		s.Addr = netip.AddrPortFrom(ip, uint16(port))
	}
	return s, nil
}

// ParseSessions reads the current sessions (scur) of every server from the
// CSV answer to `show stat`, as "<backend>/<server>" → count.
func ParseSessions(csv string) (map[string]int, error) {
	lines := strings.Split(strings.TrimRight(csv, "\n"), "\n")
	head, ok := strings.CutPrefix(lines[0], "# ")
	if !ok {
		return nil, fmt.Errorf("show stat: want a \"# pxname,...\" header, got %q", clip(lines[0]))
	}
	cols := strings.Split(head, ",")
	px, sv, cur := -1, -1, -1
	for i, c := range cols {
		switch c {
		case "pxname":
			px = i
		case "svname":
			sv = i
		case "scur":
			cur = i
		}
	}
	if px < 0 || sv < 0 || cur < 0 {
		return nil, fmt.Errorf("show stat: header lacks pxname, svname or scur: %q", clip(head))
	}
	n := max(px, sv, cur)
	got := map[string]int{}
	for i, line := range lines[1:] {
		if line == "" {
			continue
		}
		f := strings.Split(line, ",")
		if len(f) <= n {
			return nil, fmt.Errorf("show stat: line %d: %d fields, want more than %d", i+2, len(f), n)
		}
		if f[sv] == "FRONTEND" || f[sv] == "BACKEND" {
			continue
		}
		c, err := strconv.Atoi(f[cur])
		if err != nil || c < 0 {
			return nil, fmt.Errorf("show stat: line %d: scur %q", i+2, clip(f[cur]))
		}
		got[f[px]+"/"+f[sv]] = c
	}
	return got, nil
}

// clip keeps error messages about HAProxy's answers short.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
