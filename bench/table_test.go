package main

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rollcall/rollcall/haproxyapi"
)

func TestHistQuantile(t *testing.T) {
	const name = "h"
	before := map[string]float64{`h_bucket{le="0.01"}`: 1, `h_bucket{le="0.02"}`: 1, `h_bucket{le="+Inf"}`: 1}
	for _, tc := range []struct {
		name  string
		after map[string]float64
		q     float64
		want  float64 // NaN: no observations
		ok    bool
	}{
		{"absent", map[string]float64{"other": 1}, 0.5, math.NaN(), false},
		{"no new observations", before, 0.5, math.NaN(), true},
		{"all in the first bucket", map[string]float64{`h_bucket{le="0.01"}`: 11, `h_bucket{le="0.02"}`: 11, `h_bucket{le="+Inf"}`: 11}, 0.5, 0.005, true},
		{"interpolated in the second", map[string]float64{`h_bucket{le="0.01"}`: 1, `h_bucket{le="0.02"}`: 11, `h_bucket{le="+Inf"}`: 11}, 0.99, 0.0199, true},
		{"beyond the last bound", map[string]float64{`h_bucket{le="0.01"}`: 1, `h_bucket{le="0.02"}`: 1, `h_bucket{le="+Inf"}`: 11}, 0.5, 0.02, true},
		{"labelled series add up", map[string]float64{`h_bucket{kind="a",le="0.01"}`: 5, `h_bucket{kind="b",le="0.01"}`: 5,
			`h_bucket{kind="a",le="+Inf"}`: 5, `h_bucket{kind="b",le="+Inf"}`: 5}, 0.5, 0.005, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := before
			if tc.name == "labelled series add up" {
				b = nil
			}
			got, _, ok := histQuantile(b, tc.after, name, tc.q)
			if ok != tc.ok || (math.IsNaN(tc.want) != math.IsNaN(got)) || (!math.IsNaN(got) && math.Abs(got-tc.want) > 1e-9) {
				t.Errorf("histQuantile(%s, %v) = %v, %v; want %v, %v", tc.name, tc.q, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(101-i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {95, 95 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}} {
		if got := percentile(ds, tc.p); got != tc.want {
			t.Errorf("percentile(1..100 ms, %v) = %v; want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile(ds[:1], 99); got != 100*time.Millisecond {
		t.Errorf("percentile of one = %v; want it", got)
	}
}

func TestTableWorst(t *testing.T) {
	tb := newTable()
	tb.dur("lat", 3*time.Millisecond)
	tb.dur("lat", 9*time.Millisecond)
	tb.dur("lat", 5*time.Millisecond)
	tb.add("rate", rate, 300)
	tb.add("rate", rate, 100)
	tb.alt = true
	tb.dur("lat", 7*time.Millisecond)
	for _, tc := range []struct {
		row  string
		vals []float64
		want string
	}{
		{"lat", tb.index["lat"].vals, "5.0 ms | 9.0 ms | 3"},
		{"lat", tb.index["lat"].alt, "7.0 ms | 7.0 ms | 1"},
		{"rate", tb.index["rate"].vals, "200 /s | 100 /s | 2"},
	} {
		if got := tb.index[tc.row].summary(tc.vals); got != tc.want {
			t.Errorf("summary(%s %v) = %q; want %q", tc.row, tc.vals, got, tc.want)
		}
	}
}

func TestServing(t *testing.T) {
	// HAProxy 2.6's `show servers state`: a_env on the reload path (servers
	// named for their address, admin state 0); b_env's slots on the runtime
	// API's path: s1 ready after `disabled` in the config (admin state 4,
	// config maint, takes traffic), s2 ready, s3 draining (forced maint
	// with its address), s4 free, never assigned.
	const out = `1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 a_env 1 127.0.0.1-9002 127.0.0.1 2 0 1 1 5 6 3 4 6 0 0 0 - 9002 - 0 0 - - 0
3 a_env 2 127.0.0.1-9001 127.0.0.1 2 0 1 1 5 6 3 4 6 0 0 0 - 9001 - 0 0 - - 0
4 b_env 1 s1 127.0.0.1 2 4 1 1 1 1 0 2 6 0 0 0 - 9004 - 0 0 - - 0
4 b_env 2 s2 127.0.0.1 2 0 1 1 3 15 3 4 6 0 0 0 - 9003 - 0 0 - - 0
4 b_env 3 s3 127.0.0.1 0 1 1 1 13 1 0 0 14 0 0 0 - 9005 - 0 0 - - 0
4 b_env 4 s4 0.0.0.0 0 5 1 1 3 1 0 0 14 0 0 0 - 0 - 0 0 - - 0
5 c_env 1 s1 0.0.0.0 0 5 1 1 3 1 0 0 14 0 0 0 - 0 - 0 0 - - 0
`
	srvs, err := haproxyapi.ParseServersState(out)
	if err != nil {
		t.Fatal(err)
	}
	got := serving(srvs)
	want := map[string][]string{"a_env": {"127.0.0.1:9001", "127.0.0.1:9002"}, "b_env": {"127.0.0.1:9003", "127.0.0.1:9004"}}
	if len(got) != len(want) {
		t.Errorf("serving = %v; want %v", got, want)
	}
	for k, v := range want {
		if !slices.Equal(got[k], v) {
			t.Errorf("serving[%s] = %v; want %v", k, got[k], v)
		}
	}
}

func TestRenderedServers(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"rollcall.cfg": `frontend rollcall
    use_backend a_env if { path_beg /a_env/ }
backend a_env
    mode http
    server 10.0.0.2-80 10.0.0.2:80
    server 10.0.0.1-80 10.0.0.1:80 check
backend b_env
    # no instances
backend c_env
    server-template s 2 0.0.0.0:0 disabled
    server s1 10.0.0.3:80 disabled
    server s2 10.0.0.4:80 weight 1
`,
		"other.txt": "backend x_env\n    server y 10.9.9.9:80\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := renderedServers(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"a_env": {"10.0.0.1:80", "10.0.0.2:80"}, "c_env": {"10.0.0.4:80"}}
	if len(got) != len(want) {
		t.Errorf("renderedServers = %v; want %v", got, want)
	}
	for k, v := range want {
		if !slices.Equal(got[k], v) {
			t.Errorf("renderedServers[%s] = %v; want %v", k, got[k], v)
		}
	}
}

func TestCheckPush(t *testing.T) {
	hw := &hapWorld{hap: &haproxy{admin: "/w/haproxy/admin.sock", rendered: "/w/haproxy/rendered"}}
	for _, tc := range []struct {
		text string
		ok   bool
	}{
		{"[template]\nsrc = \"haproxy.tmpl\"\n", true}, // the reload path: no push
		{"push = \"haproxy:///w/haproxy/admin.sock?config=/w/haproxy/rendered/rollcall.cfg&template=t.tmpl\"\n", true},
		{"push = \"haproxy:///run/haproxy/admin.sock?config=/w/haproxy/rendered/rollcall.cfg&template=t.tmpl\"\n", false},
		{"push = \"haproxy:///w/haproxy/admin.sock?config=/w/haproxy/rollcall.cfg&template=t.tmpl\"\n", false},
		{"push = \"haproxy://127.0.0.1:9999?config=/w/haproxy/rendered/rollcall.cfg&template=t.tmpl\"\n", false},
		{"push = \"haproxy:///w/haproxy/admin.sock\"\n", false},
	} {
		if err := hw.checkPush(tc.text); (err == nil) != tc.ok {
			t.Errorf("checkPush(%q) = %v; want ok=%t", tc.text, err, tc.ok)
		}
	}
}
