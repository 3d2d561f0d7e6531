package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/nginxtest"
	"github.com/rollcall/rollcall/nginxreload"
)

func TestParse(t *testing.T) {
	t.Parallel()
	nginx := nginxtest.Lookup(t)
	tests := []struct {
		name    string
		args    []string
		want    nginxreload.Config
		wantErr string
	}{
		{"defaults", nil, nginxreload.Config{Nginx: nginx, PIDFile: "/run/nginx.pid", Timeout: 10 * time.Second}, ""},
		{"all flags", []string{"--nginx", nginx, "--pid", "/p", "--timeout", "3s", "--error-log", "/e", "--", "-p", "/x", "-c", "/x/n.conf"},
			nginxreload.Config{Nginx: nginx, PIDFile: "/p", Timeout: 3 * time.Second, ErrorLog: "/e", Args: []string{"-p", "/x", "-c", "/x/n.conf"}}, ""},
		{"signal", []string{"--signal", "--pid", "/p"}, nginxreload.Config{PIDFile: "/p", Timeout: 10 * time.Second}, ""},
		{"signal with nginx args", []string{"--signal", "--", "-p", "/x"}, nginxreload.Config{}, "--signal takes no nginx arguments"},
		{"zero timeout", []string{"--timeout", "0s"}, nginxreload.Config{}, "--timeout must be positive"},
		{"bad timeout", []string{"--timeout", "soon"}, nginxreload.Config{}, "invalid value"},
		{"unknown flag", []string{"--reload"}, nginxreload.Config{}, "not defined"},
		{"missing nginx", []string{"--nginx", "/nonexistent/nginx"}, nginxreload.Config{}, "--nginx"},
		{"args without --", []string{"-p", "/x"}, nginxreload.Config{}, "not defined"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parse(tc.args, &bytes.Buffer{})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parse(%q) error = %v; want one containing %q", tc.args, err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("parse(%q) = %+v, %v; want %+v", tc.args, got, err, tc.want)
			}
		})
	}
}

func TestRunExitCodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nginx")
	}
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	busy := fmt.Sprintf("server { listen %s; }", l.Addr())
	tests := []struct {
		name     string
		http     string
		want     int
		wantText string
	}{
		{"applied", "", 0, ""},
		{"port in use", busy, 1, "nginx kept the old config"},
		{"syntax error", "server {", 1, "-s reload: exit status 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := nginxtest.Start(t, nginxtest.Config{})
			if err := s.WriteConf(nginxtest.Config{HTTP: tc.http}); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"--nginx", s.Bin, "--pid", filepath.Join(s.Prefix, "nginx.pid"),
				"--error-log", filepath.Join(s.Prefix, "error.log"), "--timeout", "5s", "--"}, s.Args()...)
			var stderr bytes.Buffer
			if got := run(context.Background(), args, &stderr); got != tc.want || !strings.Contains(stderr.String(), tc.wantText) {
				t.Fatalf("run(%q) = %d, stderr %q; want %d and %q", args, got, stderr.String(), tc.want, tc.wantText)
			}
		})
	}
	var stderr bytes.Buffer
	if got := run(context.Background(), []string{"--timeout", "-1s"}, &stderr); got != 2 {
		t.Fatalf("run(--timeout -1s) = %d; want 2 (usage)", got)
	}
	if got := run(context.Background(), []string{"-h"}, &stderr); got != 0 || !strings.Contains(stderr.String(), "usage: nginx-reload") {
		t.Fatalf("run(-h) = %d, %q; want 0 and usage", got, stderr.String())
	}
}
