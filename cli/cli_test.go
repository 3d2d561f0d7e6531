package cli

import (
	"errors"
	"io/fs"
	"log/slog"
	"testing"
)

func TestParseLevel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want slog.Level
		ok   bool
	}{
		{"", slog.LevelInfo, true},
		{"debug", slog.LevelDebug, true},
		{"DEBUG", slog.LevelDebug, true},
		{"info", slog.LevelInfo, true},
		{"warn", slog.LevelWarn, true},
		{"warning", slog.LevelWarn, true},
		{"Warning", slog.LevelWarn, true},
		{"error", slog.LevelError, true},
		{"fatal", slog.LevelError, true}, // confd's levels above error
		{"panic", slog.LevelError, true},
		{"info+2", slog.LevelInfo + 2, true},
		{"loud", 0, false},
		{"trace", 0, false},
		{" info", 0, false},
	}
	for _, tc := range tests {
		got, err := ParseLevel(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestUsagef(t *testing.T) {
	t.Parallel()
	err := error(Usagef("config %s: %w", "x.toml", fs.ErrNotExist))
	var ue *UsageError
	if !errors.As(err, &ue) || !errors.Is(err, fs.ErrNotExist) || err.Error() != "config x.toml: file does not exist" {
		t.Errorf("Usagef = %v; want a *UsageError wrapping fs.ErrNotExist", err)
	}
}
