package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/internal/etcdtest"
	"github.com/rollcall/rollcall/internal/nginxtest"
	"github.com/rollcall/rollcall/internal/proctest"
	"github.com/rollcall/rollcall/internal/waitfor"
)

// bins are the programs the demo runs, built once by TestMain as `make
// build` builds them (internal/proctest).
var bins proctest.Binaries

func TestMain(m *testing.M) { proctest.Main(m, &bins) }

func TestUpstreamServers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, conf string
		want       []string
	}{
		{"three", "upstream a_b {\n    server 127.0.0.1:20001;\n    server 127.0.0.1:20002;\n  server [::1]:20003;\n    keepalive 16;\n}\n",
			[]string{"127.0.0.1:20001", "127.0.0.1:20002", "[::1]:20003"}},
		{"zero instances", "upstream a_b {\n    # no instances\n    server 127.0.0.1:1 down;\n}\n", nil},
		{"comment", "# server 1.2.3.4:5;\nupstream a_b {\n    server 127.0.0.1:7;\n}\n", []string{"127.0.0.1:7"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "u.conf")
			if err := os.WriteFile(path, []byte(tc.conf), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := upstreamServers(path)
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("upstreamServers(%q) = %q, %v; want %q", tc.conf, got, err, tc.want)
			}
		})
	}
}

func TestParseMissingBinaries(t *testing.T) {
	t.Parallel()
	_, err := parse([]string{"--bin", t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "make build") {
		t.Errorf("parse with an empty --bin = %v; want an error saying to run make build", err)
	}
}

// demoCmd runs the built demo with its temp dirs under tmp, so the test can
// check that nothing is left behind.
func demoCmd(t *testing.T, tmp string, args ...string) *exec.Cmd {
	t.Helper()
	bins.Need(t)
	cmd := exec.Command(bins.Path("demo"), append([]string{"--bin", bins.Dir, "--repo", filepath.Join("..", "..")}, args...)...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	return cmd
}

// assertClean checks that the demo left no file under tmp and no process
// whose command line mentions tmp or the built binaries (the tests that run
// the demo are not parallel, so any such process is a leftover).
func assertClean(t *testing.T, tmp string) {
	t.Helper()
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("demo left %d entries in its temp dir, e.g. %s", len(left), left[0].Name())
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && (bytes.Contains(b, []byte(tmp)) || bytes.Contains(b, []byte(bins.Dir))) {
			t.Errorf("process left running: %s %q", p, bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
}

func TestDemo(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"nginx", nil, "demo OK: 3 backends registered, 1 removed under load, 0 failed requests"},
		// The reload path, also where nginx has the Lua module.
		{"nginx-no-lua", []string{"--no-lua"}, "demo OK: 3 backends registered, 1 removed under load, 0 failed requests"},
		{"no-nginx", []string{"--no-nginx"}, "demo OK (without nginx): 3 backends registered, 1 removed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if strings.HasPrefix(tc.name, "nginx") {
				nginxtest.Lookup(t)
			}
			tmp := t.TempDir()
			cmd := demoCmd(t, tmp, tc.args...)
			start := time.Now()
			out, err := cmd.CombinedOutput()
			took := time.Since(start)
			if err != nil || !bytes.Contains(out, []byte(tc.want)) {
				t.Fatalf("demo %v: %v after %v; want exit 0 and %q in:\n%s", tc.args, err, took, tc.want, out)
			}
			if took > time.Minute {
				t.Errorf("demo took %v; want under a minute", took)
			}
			assertClean(t, tmp)
		})
	}
}

// TestDemoInterrupt sends Ctrl-C's SIGINT while backends run, and in the
// middle of a drain under load: exit 130, every process stopped, the work
// dir removed.
func TestDemoInterrupt(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		after string // SIGINT once this output line shows
	}{
		{"starting", []string{"--no-nginx"}, "started 3 demo backends"},
		{"draining under load", nil, "SIGTERM to backend 1's registrar"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.args == nil {
				nginxtest.Lookup(t)
			}
			interrupt(t, tc.args, tc.after)
		})
	}
}

func interrupt(t *testing.T, args []string, after string) {
	tmp := t.TempDir()
	cmd := demoCmd(t, tmp, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	sc := bufio.NewScanner(stdout)
	var seen []string
	for sc.Scan() {
		seen = append(seen, sc.Text())
		if strings.Contains(sc.Text(), after) {
			break
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, stdout)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("demo still running 30s after SIGINT; output:\n%s", strings.Join(seen, "\n"))
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Errorf("demo after SIGINT: %v; want exit status 130\nstdout:\n%s\nstderr:\n%s", err, strings.Join(seen, "\n"), &stderr)
	}
	assertClean(t, tmp)
}

// readmeAndBinaries is README.md, for tests that also run the built
// binaries (skipped in -short mode).
func readmeAndBinaries(t *testing.T) []byte {
	t.Helper()
	bins.Need(t)
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return readme
}

// TestReadmeFlags keeps README.md's flag tables true: every flag the built
// registrar and renderer accept is in the README as `--name`.
func TestReadmeFlags(t *testing.T) {
	readme := readmeAndBinaries(t)
	flagRE := regexp.MustCompile(`(?m)^\s+--?([a-z][a-z0-9-]*)\b`)
	for _, prog := range []string{"registrar", "renderer"} {
		out, _ := exec.Command(bins.Path(prog), "--help").CombinedOutput()
		flags := flagRE.FindAllSubmatch(out, -1)
		if len(flags) < 10 {
			t.Fatalf("%s --help lists %d flags; want the usage text:\n%s", prog, len(flags), out)
		}
		for _, f := range flags {
			if name := "`--" + string(f[1]) + "`"; !bytes.Contains(readme, []byte(name)) {
				t.Errorf("README.md does not document %s's %s", prog, name)
			}
		}
	}
}

// TestReadmeDockerfile keeps README.md's Dockerfile and `docker run` line
// true: the ENTRYPOINT's registrar command line, with the image's ENV and the
// run's -e variables, registers the app in a real etcd, and a SIGTERM (docker
// stop) deregisters it and exits 0 within the run's --stop-timeout. Only the
// app after "--" (java) becomes demo-backend, ETCD_ENDPOINTS the test's etcd,
// and REGISTRAR_IP 127.0.0.1 (a test host may have no primary IPv4).
func TestReadmeDockerfile(t *testing.T) {
	readme := readmeAndBinaries(t)
	_, dockerfile, ok := strings.Cut(string(readme), "```dockerfile\n")
	dockerfile, _, _ = strings.Cut(dockerfile, "```")
	if !ok {
		t.Fatal("README.md has no ```dockerfile block")
	}
	var entrypoint []string
	env := map[string]string{}
	for _, l := range strings.Split(dockerfile, "\n") {
		if j, ok := strings.CutPrefix(l, "ENTRYPOINT "); ok {
			if err := json.Unmarshal([]byte(j), &entrypoint); err != nil {
				t.Fatalf("ENTRYPOINT %s: %v", j, err)
			}
		}
		if kv, ok := strings.CutPrefix(l, "ENV "); ok {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
	}
	run := regexp.MustCompile("(?m)^docker run .*$").FindString(string(readme))
	for _, m := range regexp.MustCompile(`-e (\w+)=(\S+)`).FindAllStringSubmatch(run, -1) {
		env[m[1]] = m[2]
	}
	stopTimeout := regexp.MustCompile(`--stop-timeout (\d+)`).FindStringSubmatch(run)
	dash := slices.Index(entrypoint, "--")
	if len(entrypoint) < 2 || entrypoint[0] != "registrar" || dash < 0 || stopTimeout == nil {
		t.Fatalf("README: want ENTRYPOINT [\"registrar\", ..., \"--\", app...] and docker run --stop-timeout N -e ...; got %q and %q", entrypoint, run)
	}
	if env["ETCD_ENDPOINTS"] == "" || env["REGISTRAR_ENV"] == "" || env["REGISTRAR_APP"] == "" {
		t.Fatalf("README: the image and run set %v; want REGISTRAR_APP, REGISTRAR_ENV and ETCD_ENDPOINTS", env)
	}

	etcd := etcdtest.Start(t)
	cli := etcd.Client(t)
	env["ETCD_ENDPOINTS"] = etcd.Endpoint
	env["REGISTRAR_IP"] = "127.0.0.1"
	args := append(slices.Clone(entrypoint[1:dash+1]), bins.Path("demo-backend"))
	cmd := exec.Command(bins.Path("registrar"), args...)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(os.Environ(), cmd.Env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second // the app, in a process group of its own, may hold the output open
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})
	dir := "/" + env["REGISTRAR_APP"] + "_" + env["REGISTRAR_ENV"] + "/"
	waitfor.Cond(t, 20*time.Second, "the ENTRYPOINT registers under "+dir, func() error {
		select {
		case <-exited:
			t.Fatalf("registrar %q exited: %v\n%s", args, waitErr, &out)
		default:
		}
		resp, err := cli.Get(t.Context(), dir, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err == nil && resp.Count != 1 {
			err = fmt.Errorf("%d keys under %s", resp.Count, dir)
		}
		return err
	})

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	limit, _ := time.ParseDuration(stopTimeout[1] + "s")
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("registrar after SIGTERM: %v; want exit 0\n%s", waitErr, &out)
		}
	case <-time.After(limit):
		t.Fatalf("registrar still running %v after SIGTERM (docker run --stop-timeout %s)\n%s", limit, stopTimeout[1], &out)
	}
	resp, err := cli.Get(t.Context(), dir, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Errorf("after docker stop: %v keys under %s (%v); want 0", resp, dir, err)
	}
}
