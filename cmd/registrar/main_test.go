package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/client/pkg/v3/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/internal/etcdtest"
	"github.com/rollcall/rollcall/internal/proc"
	"github.com/rollcall/rollcall/internal/waitfor"
)

// The test binary is also the registrar (ROLLCALL_TEST_MAIN=1) and the app
// it runs (first argument "app").
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "app" {
		os.Exit(testApp(os.Args[2]))
	}
	if os.Getenv("ROLLCALL_TEST_MAIN") == "1" {
		main()
	}
	if fuzzing() {
		os.Exit(m.Run()) // the fuzzing engine's signal goroutine is no leak
	}
	testutil.MustTestMainWithLeakDetection(m)
}

// testApp listens on $PORT, writes its pid to out.pid, appends the signals
// it gets to out (one name a line) and exits 5 on SIGTERM.
func testApp(out string) int {
	if err := os.WriteFile(out+".pid", []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return 97
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGQUIT, syscall.SIGWINCH)
	l, err := net.Listen("tcp", net.JoinHostPort(os.Getenv("HOST_IP"), os.Getenv("PORT")))
	if err != nil {
		return 98
	}
	defer l.Close()
	for sig := range sigs {
		f, _ := os.OpenFile(out, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		fmt.Fprintln(f, sig)
		f.Close()
		if sig == syscall.SIGTERM {
			return 5
		}
	}
	return 0
}

func registrarCmd(t *testing.T, args ...string) (*exec.Cmd, *strings.Builder) {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "ROLLCALL_TEST_MAIN=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	return cmd, &stderr
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestMainUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"bad name", []string{"--app", "a b", "--env", "PRE", "--", "x"}, 2, "registrar: --app: invalid name"},
		{"bad range", []string{"--app", "a", "--env", "PRE", "--port-range", "5-1", "--", "x"}, 2, "registrar: invalid value"},
		{"missing command", []string{"--app", "a", "--env", "PRE"}, 2, "registrar: missing command"},
		{"help", []string{"--help"}, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cmd, stderr := registrarCmd(t, tc.args...)
			err := cmd.Run()
			if code := exitCode(err); code != tc.code {
				t.Fatalf("registrar %q exit = %d (%v); want %d", tc.args, code, err, tc.code)
			}
			if tc.want == "" {
				return
			}
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], tc.want) {
				t.Fatalf("registrar %q stderr = %q; want one line starting %q", tc.args, stderr.String(), tc.want)
			}
		})
	}
}

// startMain runs the registrar binary (app web in env, with extra flags) on
// a new etcd, wrapping the test app that records its signals in out, and
// returns once the instance is registered: the command, a client and the key.
func startMain(t *testing.T, env string, extra ...string) (*exec.Cmd, *clientv3.Client, *mvccpb.KeyValue, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts etcd and processes")
	}
	t.Parallel()
	s := etcdtest.Start(t)
	cli := s.Client(t)
	out := t.TempDir() + "/signals"
	args := append([]string{"--app", "web", "--env", env, "--endpoints", s.Endpoint, "--ip", "127.0.0.1", "--ttl", "2s"}, extra...)
	cmd, _ := registrarCmd(t, append(args, "--", os.Args[0], "app", out)...)
	cmd.Stdout, cmd.Stderr = t.Output(), t.Output()
	cmd.WaitDelay = time.Second // an app that outlived the registrar would hold the output open
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil { // not waited for by the test
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	var kv *mvccpb.KeyValue
	waitfor.Cond(t, 15*time.Second, "instance registered", func() error {
		resp, err := cli.Get(t.Context(), "/web_"+env+"/", clientv3.WithPrefix())
		if err != nil || len(resp.Kvs) != 1 {
			return fmt.Errorf("got %v, %v", resp, err)
		}
		kv = resp.Kvs[0]
		return nil
	})
	return cmd, cli, kv, out
}

// TestMainProcess runs the registrar as a real process: it catches
// SIGHUP, SIGUSR1, SIGUSR2, SIGQUIT, SIGWINCH and SIGTERM itself, forwards
// the first five, deregisters on the last, and exits with the app's code.
func TestMainProcess(t *testing.T) {
	cmd, cli, kv, out := startMain(t, "PRE", "--drain-timeout", "1s")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	key := string(kv.Key)
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGQUIT, syscall.SIGWINCH} {
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		waitfor.Cond(t, 5*time.Second, "app got "+sig.String(), func() error {
			b, _ := os.ReadFile(out)
			if !strings.Contains(string(b), sig.String()+"\n") {
				return fmt.Errorf("app got %q", b)
			}
			return nil
		})
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := exitCode(cmd.Wait()); code != 5 {
		t.Fatalf("registrar exit = %d; want the app's 5", code)
	}
	resp, err := cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("%s after stop = %v, %v; want gone", key, resp, err)
	}
}

// TestMainKilled kills a real registrar process (not PID 1) with SIGKILL:
// the app dies with it (the kernel's parent-death signal) and its port is
// free at once, so a supervisor restarting the registrar finds no stray copy.
func TestMainKilled(t *testing.T) {
	cmd, _, kv, out := startMain(t, "KILL")
	addr := string(kv.Value)
	b, err := os.ReadFile(out + ".pid")
	if err != nil {
		t.Fatal(err)
	}
	app, err := strconv.Atoi(string(b))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(app, syscall.SIGKILL) }) // only if it survived: a failure

	killed := time.Now()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Fatal("registrar exited 0 after SIGKILL")
	}
	// The signal is sent as the registrar dies: 500ms is ample, while an app
	// the kernel does not kill would run on for ever.
	waitfor.Cond(t, 500*time.Millisecond, fmt.Sprintf("app %d dies with its registrar", app), func() error {
		if proc.Alive(app) {
			return fmt.Errorf("app %d still running", app)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("port still taken: %w", err)
		}
		return l.Close()
	})
	t.Logf("app gone and %s free %v after kill -9 of the registrar", addr, time.Since(killed).Round(time.Millisecond))
}

// fuzzing reports whether the test binary runs with -test.fuzz.
func fuzzing() bool {
	flag.Parse()
	f := flag.Lookup("test.fuzz")
	return f != nil && f.Value.String() != ""
}
