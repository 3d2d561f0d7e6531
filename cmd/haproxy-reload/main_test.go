package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--timeout", "0s"}, 2, "--timeout must be positive"},
		{[]string{"--resend", "-1s"}, 2, "--resend must be positive"},
		{[]string{"extra"}, 2, "unexpected arguments"},
		{[]string{"--bogus"}, 2, "flag provided but not defined"},
		{[]string{"--help"}, 0, "usage: haproxy-reload"},
		{[]string{"--master-socket", "/nonexistent/master.sock", "--timeout", "100ms"}, 1, "/nonexistent/master.sock"},
	} {
		var stderr bytes.Buffer
		if code := run(context.Background(), tc.args, &stderr); code != tc.code || !strings.Contains(stderr.String(), tc.msg) {
			t.Errorf("haproxy-reload %q = %d, %q; want %d and %q", tc.args, code, stderr.String(), tc.code, tc.msg)
		}
	}
}
