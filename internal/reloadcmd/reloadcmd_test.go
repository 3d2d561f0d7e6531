package reloadcmd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestRunStatus(t *testing.T) {
	parse := func(args []string, stderr io.Writer) (string, error) {
		fs := FlagSet("x-reload", "[flags]", stderr)
		fail := fs.Bool("fail", false, "make the reload fail")
		if err := fs.Parse(args); err != nil {
			return "", err
		}
		if fs.NArg() > 0 {
			return "", errors.New("unexpected arguments")
		}
		return map[bool]string{true: "fail"}[*fail], nil
	}
	reload := func(_ context.Context, c string) error {
		if c == "fail" {
			return errors.New("kept the old config")
		}
		return nil
	}
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{nil, 0, ""},
		{[]string{"--help"}, 0, "usage: x-reload [flags]"},
		{[]string{"extra"}, 2, "x-reload: unexpected arguments"},
		{[]string{"--bogus"}, 2, "flag provided but not defined"},
		{[]string{"--fail"}, 1, "x-reload: kept the old config"},
	} {
		var stderr bytes.Buffer
		code := Run(context.Background(), "x-reload", tc.args, &stderr, parse, reload)
		if code != tc.code || !strings.Contains(stderr.String(), tc.msg) || tc.msg == "" && stderr.Len() > 0 {
			t.Errorf("Run(%q) = %d, %q; want %d and %q", tc.args, code, stderr.String(), tc.code, tc.msg)
		}
	}
}
