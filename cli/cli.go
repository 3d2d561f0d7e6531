// Package cli holds what the two commands share at their command line: the
// usage error that makes a command exit 2, and the names of the log levels.
// The registrar imports it, so it imports nothing but the standard library.
package cli

import (
	"fmt"
	"log/slog"
	"strings"
)

// UsageError is a bad flag, environment variable, config file or setting:
// the command prints it and exits 2.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a *UsageError with a formatted message (%w wraps).
func Usagef(format string, args ...any) *UsageError {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// ParseLevel reads a --log-level: debug, info, warn (or warning), error, and
// confd's (logrus's) fatal and panic, which mean error here; "" is info.
// Case does not matter, and slog's own forms ("info+2") work too.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "":
		return slog.LevelInfo, nil
	case "warning":
		return slog.LevelWarn, nil
	case "fatal", "panic":
		return slog.LevelError, nil
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("unknown level %q: want debug, info, warn or error", s)
	}
	return l, nil
}
