package renderer

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"

	"github.com/rollcall/rollcall/nginxreload"
)

// Values of Config.NginxConfirm.
const (
	ConfirmAuto = "auto" // confirm the reload_cmds reloadsNginx recognises
	ConfirmAll  = "all"  // every reload_cmd reloads this nginx: confirm each
	ConfirmNone = "none" // trust the exit status (a reload_cmd that confirms by itself, or no nginx)
)

// reloadsNginx reports whether a reload_cmd reloads nginx without
// confirming that nginx applied the configuration, so that the renderer
// must confirm it. The rule (renderer/README.md): split at ; & | and
// newlines, one of the simple commands, after an optional sudo, env
// assignments or `exec`, is
//
//	nginx ... -s reload                      (any path; "-sreload" too)
//	systemctl ... reload|reload-or-restart|try-reload-or-restart nginx[.service]
//	service nginx reload
//	/etc/init.d/nginx reload
//
// `nginx-reload` is none of these: it confirms by itself.
func reloadsNginx(cmd string) bool {
	for _, part := range strings.FieldsFunc(cmd, func(r rune) bool { return strings.ContainsRune(";&|\n", r) }) {
		if nginxReloadWords(words(part)) {
			return true
		}
	}
	return false
}

// words splits a simple command at blanks, dropping plain quotes, and
// skips a leading sudo, exec or env and VAR=value assignments.
func words(s string) []string {
	ws := strings.Fields(s)
	for i, w := range ws {
		ws[i] = strings.Trim(w, `'"`)
	}
	for len(ws) > 0 {
		switch w := ws[0]; {
		case w == "sudo" || w == "exec" || w == "env" || w == "command":
			ws = ws[1:]
		case (w == "-u" || w == "-g") && len(ws) > 2: // sudo -u USER
			ws = ws[2:]
		case strings.HasPrefix(w, "-") && len(ws) > 1: // sudo's or env's options
			ws = ws[1:]
		case strings.Contains(w, "=") && !strings.HasPrefix(w, "/"):
			ws = ws[1:]
		default:
			return ws
		}
	}
	return ws
}

func nginxReloadWords(ws []string) bool {
	if len(ws) == 0 {
		return false
	}
	if filepath.Base(ws[0]) == "nginx" && ws[0] != "/etc/init.d/nginx" {
		args := ws[1:]
		i := slices.Index(args, "-s")
		return slices.Contains(args, "-sreload") || i >= 0 && i+1 < len(args) && args[i+1] == "reload"
	}
	return serviceReloadWords(ws, "nginx")
}

// reloadsHAProxy reports whether a reload_cmd reloads HAProxy through its
// service manager without confirming it (splitting and skipping as
// reloadsNginx):
//
//	systemctl ... reload|reload-or-restart|try-reload-or-restart haproxy[.service]
//	service haproxy reload
//	/etc/init.d/haproxy reload
//
// `haproxy-reload` is none of these: it confirms by itself.
func reloadsHAProxy(cmd string) bool {
	for _, part := range strings.FieldsFunc(cmd, func(r rune) bool { return strings.ContainsRune(";&|\n", r) }) {
		if serviceReloadWords(words(part), "haproxy") {
			return true
		}
	}
	return false
}

// serviceReloadWords reports whether a simple command reloads service name
// through systemctl, service or its init script.
func serviceReloadWords(ws []string, name string) bool {
	if len(ws) == 0 {
		return false
	}
	args := ws[1:]
	switch prog := filepath.Base(ws[0]); {
	case ws[0] == "/etc/init.d/"+name:
		return slices.Contains(args, "reload")
	case prog == "systemctl":
		verb := slices.IndexFunc(args, func(a string) bool {
			return a == "reload" || a == "reload-or-restart" || a == "try-reload-or-restart"
		})
		return verb >= 0 && slices.ContainsFunc(args[verb+1:], func(a string) bool { return a == name || a == name+".service" })
	case prog == "service":
		return len(args) >= 2 && args[0] == name && args[1] == "reload"
	}
	return false
}

// confirms reports whether the renderer must confirm cmd itself.
func (r *Renderer) confirms(cmd string) bool {
	switch r.cfg.NginxConfirm {
	case ConfirmAll:
		return true
	case ConfirmNone:
		return false
	}
	return reloadsNginx(cmd)
}

// reload runs one reload_cmd. When the command reloads nginx without
// confirming it, the renderer observes the nginx master's workers first and,
// once the command succeeded, waits (bounded) for the new worker generation
// and for the old workers to retire, as nginx-reload does: a reload nginx
// refused (its [emerg] line quoted) or never applied is a failed reload.
func (r *Renderer) reload(ctx context.Context, cmd string) (string, error) {
	if r.cfg.NginxConfirm == ConfirmAuto && reloadsHAProxy(cmd) {
		return r.reloadHAProxy(ctx, cmd)
	}
	if !r.confirms(cmd) {
		return r.runCmd(ctx, "reload", cmd)
	}
	gen, err := nginxreload.Observe(nginxreload.Config{
		PIDFile:  r.cfg.NginxPID,
		ErrorLog: r.cfg.NginxErrorLog,
		Timeout:  min(nginxreload.DefaultTimeout, r.cfg.CommandTimeout),
	})
	if err != nil {
		return "", fmt.Errorf("confirm nginx reload: %w (set --nginx-pid, or --nginx-confirm=none for a reload_cmd that confirms by itself)", err)
	}
	out, err := r.runCmd(ctx, "reload", cmd)
	if err != nil {
		return out, err
	}
	res, err := gen.Wait(ctx)
	if err != nil {
		return out, fmt.Errorf("confirm nginx reload: %w", err)
	}
	if res.QuitErr != nil { // the master quits them 100 ms after the new ones started
		level := slog.LevelDebug // the same reason every reload: said once
		if r.quitWarn.CompareAndSwap(false, true) {
			level = slog.LevelWarn
		}
		r.log.Log(ctx, level, "nginx reload: old workers left to the master, which quits them 100 ms later (run the renderer as root or as nginx's user)", "cmd", cmd, "err", res.QuitErr)
	}
	r.log.Debug("nginx reload confirmed", "cmd", cmd, "pid", res.Master, "took", res.Took)
	return out, nil
}

// reloadHAProxy runs a reload_cmd that reloads HAProxy without confirming
// it, and confirms it through the master CLI (--haproxy-master-socket): a
// new worker generation must run. A reload HAProxy refused or dropped (sent
// while its master re-executed) is a failed reload, retried like any other.
func (r *Renderer) reloadHAProxy(ctx context.Context, cmd string) (string, error) {
	gen, err := nginxreload.ObserveHAProxy(ctx, nginxreload.HAProxyConfig{
		MasterSocket: r.cfg.HAProxyMasterSocket,
		Timeout:      min(nginxreload.DefaultTimeout, r.cfg.CommandTimeout),
	})
	if err != nil {
		return "", fmt.Errorf("confirm haproxy reload: %w (set --haproxy-master-socket, or use haproxy-reload as reload_cmd)", err)
	}
	out, err := r.runCmd(ctx, "reload", cmd)
	if err != nil {
		return out, err
	}
	res, err := gen.Wait(ctx)
	if err != nil {
		return out, fmt.Errorf("confirm haproxy reload: %w", err)
	}
	r.log.Debug("haproxy reload confirmed", "cmd", cmd, "pid", res.Master, "took", res.Took)
	return out, nil
}
