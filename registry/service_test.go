package registry

import "testing"

func TestParseService(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, app, env string
		ok             bool
	}{
		{"search_PRE", "search", "PRE", true},
		{"my-app.v2_prod-1", "my-app.v2", "prod-1", true},
		{Service("a", "b"), "a", "b", true},
		{"search", "", "", false},
		{"_ports", "", "", false},
		{"_renderers", "", "", false},
		{"a_b_c", "", "", false},
		{"a_", "", "", false},
		{"_b", "", "", false},
		{"-a_b", "", "", false},
		{"a_b c", "", "", false},
		{"a_b;", "", "", false},
		{"", "", "", false},
	}
	for _, tc := range tests {
		app, env, err := ParseService(tc.name)
		if (err == nil) != tc.ok || app != tc.app || env != tc.env {
			t.Errorf("ParseService(%q) = %q, %q, %v; want %q, %q, ok=%v", tc.name, app, env, err, tc.app, tc.env, tc.ok)
		}
	}
}
