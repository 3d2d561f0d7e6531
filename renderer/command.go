package renderer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"text/template"
	"time"
)

// CheckError is a check_cmd or reload_cmd that failed; Output is what the
// command printed (nginx's message), so logs and metrics can carry it.
type CheckError struct {
	Resource string // resource file, or several joined by ","
	Kind     string // "check" or "reload"
	Cmd      string // the command as run
	Output   string
	Err      error
}

func (e *CheckError) Error() string {
	out := strings.TrimSpace(e.Output)
	if out == "" {
		return fmt.Sprintf("%s %s: %q: %v", e.Kind, e.Resource, e.Cmd, e.Err)
	}
	return fmt.Sprintf("%s %s: %q: %v: %s", e.Kind, e.Resource, e.Cmd, e.Err, out)
}

func (e *CheckError) Unwrap() error { return e.Err }

// usesSrc reports whether a command refers to {{.src}} (confd's rule: such a
// check_cmd checks the staged file before it is installed).
func usesSrc(cmd string) bool {
	t, err := template.New("cmd").Option("missingkey=error").Parse(cmd)
	if err != nil {
		return strings.Contains(cmd, ".src")
	}
	var b strings.Builder
	if err := t.Execute(&b, map[string]string{"src": "\x00", "dest": ""}); err != nil {
		return strings.Contains(cmd, ".src")
	}
	return strings.Contains(b.String(), "\x00")
}

// expandCmd substitutes {{.src}} and {{.dest}} and nothing else: never etcd
// data. Paths are shell-quoted when they need it.
func expandCmd(cmd, src, dest string) (string, error) {
	t, err := template.New("cmd").Option("missingkey=error").Parse(cmd)
	if err != nil {
		return "", fmt.Errorf("command %q: %w", cmd, err)
	}
	var b strings.Builder
	if err := t.Execute(&b, map[string]string{"src": shellQuote(src), "dest": shellQuote(dest)}); err != nil {
		return "", fmt.Errorf("command %q: %w", cmd, err)
	}
	return b.String(), nil
}

func shellQuote(s string) string {
	safe := s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+:,@%=", r))
	}) < 0
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// errTimedOut marks a command killed at its timeout.
var errTimedOut = errors.New("timed out")

// runCommand runs cmd with /bin/sh -c in its own process group, bounded by
// timeout: SIGTERM to the group at the deadline, SIGKILL 5s later. It returns
// the combined output.
func runCommand(ctx context.Context, cmd string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := exec.CommandContext(ctx, "/bin/sh", "-c", cmd)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGTERM) }
	c.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	if err != nil && ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("%w after %v: %w", errTimedOut, timeout, err)
	}
	return out.String(), err
}
