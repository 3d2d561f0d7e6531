package haproxyapi

import (
	"strings"
	"testing"
)

// Answers of HAProxy 2.6.12 (Debian 12) to the commands this package sends.
const (
	stateHead   = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n"
	stateAnswer = stateHead +
		"3 a_x 1 s1 127.0.0.1 2 0 1 1 3 15 3 4 6 0 0 0 - 18091 - 0 0 - - 0\n" +
		"3 a_x 2 s2 127.0.0.1 2 4 1 1 1 1 0 2 6 0 0 0 - 18092 - 0 0 - - 0\n" +
		"3 a_x 3 s3 0.0.0.0 0 5 1 1 3 1 0 0 14 0 0 0 - 0 - 0 0 - - 0\n" +
		"3 a_x 4 s4 ::1 0 1 1 1 13 1 0 0 14 0 0 0 - 18093 - 0 0 - - 0\n" +
		"4 other 1 web1 10.0.0.1 2 0 1 1 3 15 3 4 6 0 0 0 - 80 - 0 0 - - 0\n\n"
	statAnswer = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,status,\n" +
		"f,FRONTEND,,,0,1,262120,4,OPEN,\n" +
		"a_x,s1,0,0,3,1,,2,UP,\n" +
		"a_x,s2,0,0,0,1,,2,UP 1/3,\n" +
		"a_x,BACKEND,0,0,3,1,26212,4,UP,\n\n"
)

func TestParseServersState(t *testing.T) {
	srvs, err := ParseServersState(stateAnswer)
	if err != nil {
		t.Fatal(err)
	}
	l := FromServers(srvs, func(b string) bool { return b == "a_x" })
	if got, want := l.String(), "a_x: 127.0.0.1:18091 127.0.0.1:18092 . -[::1]:18093;"; got != want {
		t.Errorf("layout = %s; want %s", got, want)
	}
	for _, bad := range []string{"", "No such backend.\n", "1\n3 a_x 1 s1 127.0.0.1 x 0\n", stateHead + "3 a_x 1 s1 127.0.0.1 2 0 1 1 3 15 3 4 6 0 0 0 - 99999 - 0 0 - - 0\n"} {
		if _, err := ParseServersState(bad); err == nil {
			t.Errorf("ParseServersState(%q): no error", bad)
		}
	}
}

func TestParseSessions(t *testing.T) {
	got, err := ParseSessions(statAnswer)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["a_x/s1"] != 3 || got["a_x/s2"] != 0 {
		t.Errorf("ParseSessions = %v; want a_x/s1=3 a_x/s2=0", got)
	}
	for _, bad := range []string{"", "Unknown command\n", "# pxname,svname\n", "# pxname,svname,scur\na,b\n", "# pxname,svname,scur\na,b,-1\n"} {
		if _, err := ParseSessions(bad); err == nil {
			t.Errorf("ParseSessions(%q): no error", bad)
		}
	}
}

func TestParseURL(t *testing.T) {
	tests := []struct {
		in, network, addr string
		ok                bool
	}{
		{"haproxy:///run/haproxy/admin.sock", "unix", "/run/haproxy/admin.sock", true},
		{"haproxy:///run/haproxy/admin.sock?config=/etc/haproxy/rollcall/rollcall.cfg&template=t.tmpl", "unix", "/run/haproxy/admin.sock", true},
		{"haproxy://127.0.0.1:9999", "tcp", "127.0.0.1:9999", true},
		{"haproxy://[::1]:9999", "tcp", "[::1]:9999", true},
		{"haproxy://10.0.0.1:9999", "", "", false},
		{"haproxy://example.com:9999", "", "", false},
		{"haproxy://", "", "", false},
		{"haproxy:///", "", "", false},
		{"http://127.0.0.1:9999", "", "", false},
		{"haproxy://u@127.0.0.1:9999", "", "", false},
	}
	for _, tc := range tests {
		c, _, err := ParseURL(tc.in)
		if (err == nil) != tc.ok || c.Network != tc.network || c.Address != tc.addr {
			t.Errorf("ParseURL(%q) = %+v, %v; want %s %s ok=%t", tc.in, c, err, tc.network, tc.addr, tc.ok)
		}
	}
}

// FuzzParseServersState: any answer parses or fails, never panics, and a
// parsed address is one the registry grammar accepts.
func FuzzParseServersState(f *testing.F) {
	f.Add(stateAnswer)
	f.Add("1\n")
	f.Add("No such backend.\n")
	f.Fuzz(func(t *testing.T, out string) {
		srvs, err := ParseServersState(out)
		if err != nil {
			return
		}
		for _, s := range srvs {
			if s.Addr.IsValid() && (s.Addr.Port() == 0 || s.Addr.Addr().IsUnspecified()) {
				t.Errorf("%q: address %s", out, s.Addr)
			}
		}
		FromServers(srvs, func(string) bool { return true })
	})
}

// FuzzParseSessions: any answer parses or fails, never panics, no negative count.
func FuzzParseSessions(f *testing.F) {
	f.Add(statAnswer)
	f.Add("# pxname,svname,scur\n")
	f.Fuzz(func(t *testing.T, out string) {
		got, err := ParseSessions(out)
		if err != nil {
			return
		}
		for k, v := range got {
			if v < 0 || !strings.Contains(k, "/") {
				t.Errorf("%q: %s=%d", out, k, v)
			}
		}
	})
}
