package renderer

import "testing"

// TestReloadsNginx: the documented rule for reload_cmds the renderer
// confirms itself.
func TestReloadsNginx(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cmd  string
		want bool
	}{
		{"nginx -s reload", true},
		{"/usr/sbin/nginx -s reload", true},
		{"/usr/sbin/nginx -sreload", true},
		{"nginx -p /srv/gw -c /srv/gw/nginx.conf -s reload", true},
		{"sudo nginx -s reload", true},
		{"sudo -n /usr/sbin/nginx -s reload", true},
		{"sudo -u www-data nginx -s reload", true},
		{"/usr/sbin/nginx -t && /usr/sbin/nginx -s reload", true},
		{"nginx -s reload || true", true},
		{"systemctl reload nginx", true},
		{"/bin/systemctl reload nginx.service", true},
		{"systemctl --no-block reload-or-restart nginx", true},
		{"service nginx reload", true},
		{"/usr/sbin/service nginx reload", true},
		{"/etc/init.d/nginx reload", true},
		{"'/usr/sbin/nginx' -s 'reload'", true},
		{"nginx-reload --pid /run/nginx.pid", false},
		{"/usr/local/bin/nginx-reload --pid /run/nginx.pid --error-log /var/log/nginx/error.log", false},
		{"nginx -s stop", false},
		{"nginx -t", false},
		{"systemctl reload haproxy", false},
		{"systemctl restart nginx", false},
		{"service haproxy reload", false},
		{"/etc/init.d/haproxy reload", false},
		{"echo nginx -s reload", false},
		{"", false},
	}
	for _, tc := range tests {
		if got := reloadsNginx(tc.cmd); got != tc.want {
			t.Errorf("reloadsNginx(%q) = %v; want %v", tc.cmd, got, tc.want)
		}
	}
}

// TestReloadsHAProxy: the reload_cmds the renderer confirms as HAProxy
// reloads through the master CLI.
func TestReloadsHAProxy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cmd  string
		want bool
	}{
		{"systemctl reload haproxy", true},
		{"/bin/systemctl reload haproxy.service", true},
		{"sudo systemctl --no-block reload-or-restart haproxy", true},
		{"service haproxy reload", true},
		{"/etc/init.d/haproxy reload", true},
		{"haproxy -c -f /etc/haproxy/haproxy.cfg && systemctl reload haproxy", true},
		{"/usr/local/bin/haproxy-reload --master-socket /run/haproxy-master.sock", false},
		{"systemctl restart haproxy", false},
		{"systemctl reload nginx", false},
		{"service haproxy status", false},
		{"nginx -s reload", false},
		{"echo systemctl reload haproxy", false},
		{"", false},
	}
	for _, tc := range tests {
		if got := reloadsHAProxy(tc.cmd); got != tc.want {
			t.Errorf("reloadsHAProxy(%q) = %v; want %v", tc.cmd, got, tc.want)
		}
	}
}
