package nginxreload

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"testing"
)

func TestParseStat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		line    string
		want    stat
		wantErr bool
	}{
		{"worker", "4242 (nginx) S 4200 4200 4200 0 -1 4194624 77 0 0 0\n", stat{PID: 4242, PPID: 4200, Comm: "nginx", State: 'S'}, false},
		{"comm with spaces and parens", "7 (a) b (c) d) R 1 7 7 0", stat{PID: 7, PPID: 1, Comm: "a) b (c) d", State: 'R'}, false},
		{"zombie", "9 (nginx) Z 3 0", stat{PID: 9, PPID: 3, Comm: "nginx", State: 'Z'}, false},
		{"empty comm", "10 () S 2", stat{PID: 10, PPID: 2, Comm: "", State: 'S'}, false},
		{"no parens", "1 nginx S 0", stat{}, true},
		{"no pid", "(nginx) S 1", stat{}, true},
		{"bad pid", "x1 (nginx) S 1", stat{}, true},
		{"no ppid", "1 (nginx) S", stat{}, true},
		{"bad ppid", "1 (nginx) S one", stat{}, true},
		{"long state", "1 (nginx) SS 1", stat{}, true},
		{"empty", "", stat{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStat(tc.line)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("parseStat(%q) = %+v, %v; want %+v, error %v", tc.line, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// fakeProc writes <dir>/<pid>/stat for each line keyed by pid, plus entries
// that are not processes.
func fakeProc(t *testing.T, stats map[int]string) string {
	t.Helper()
	dir := t.TempDir()
	for pid, line := range stats {
		p := filepath.Join(dir, strconv.Itoa(pid))
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "stat"), []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"self", "sys", "0"} {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "uptime"), []byte("1 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestChildren(t *testing.T) {
	t.Parallel()
	dir := fakeProc(t, map[int]string{
		1:   "1 (init) S 0 1 1",
		100: "100 (nginx) S 1 100 100",
		120: "120 (nginx) S 100 100 100",
		101: "101 (nginx) S 100 100 100",
		102: "102 (nginx) Z 100 100 100",
		103: "103 (nginx) X 100 100 100",
		200: "200 (bash) S 1 200 200",
		201: "201 (cat (100)) S 200 200 200",
	})
	tests := []struct {
		ppid int
		want []int
	}{
		{100, []int{101, 120}},
		{1, []int{100, 200}},
		{200, []int{201}},
		{999, nil},
	}
	for _, tc := range tests {
		got, _, err := children(dir, tc.ppid)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("children(%d) = %v, %v; want %v", tc.ppid, got, err, tc.want)
		}
	}
	if alive(dir, 102) || alive(dir, 999) || !alive(dir, 100) {
		t.Errorf("alive(102, 999, 100) = %v, %v, %v; want false, false, true", alive(dir, 102), alive(dir, 999), alive(dir, 100))
	}
	if _, _, err := children(filepath.Join(dir, "missing"), 1); err == nil {
		t.Error("children(missing dir) succeeded; want error")
	}
}

func TestChildrenRealProc(t *testing.T) {
	t.Parallel()
	kids, _, err := children("/proc", os.Getppid())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, pid := range kids {
		found = found || pid == os.Getpid()
	}
	if !found {
		t.Fatalf("children(/proc, %d) = %v; want it to hold this process %d", os.Getppid(), kids, os.Getpid())
	}
}

func TestReadPID(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name, content string
		want          int
		wantErr       bool
	}{
		{"nginx form", "1234\n", 1234, false},
		{"no newline", "77", 77, false},
		{"empty", "", 0, true},
		{"zero", "0\n", 0, true},
		{"negative", "-5\n", 0, true},
		{"text", "nginx\n", 0, true},
	}
	for _, tc := range tests {
		p := filepath.Join(dir, tc.name)
		if err := os.WriteFile(p, []byte(tc.content), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := readPID(p)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("readPID(%q) = %d, %v; want %d, error %v", tc.content, got, err, tc.want, tc.wantErr)
		}
	}
	if _, err := readPID(filepath.Join(dir, "missing")); err == nil {
		t.Error("readPID(missing) succeeded; want error")
	}
}

func TestWithout(t *testing.T) {
	t.Parallel()
	tests := []struct{ a, b, want []int }{
		{[]int{1, 2, 3}, []int{2}, []int{1, 3}},
		{[]int{1, 2}, []int{1, 2}, nil},
		{nil, []int{1}, nil},
		{[]int{5, 9}, nil, []int{5, 9}},
	}
	for _, tc := range tests {
		if got := without(tc.a, tc.b); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("without(%v, %v) = %v; want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestErrorLogEmerg(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "error.log")
	write := func(s string, flag int) {
		t.Helper()
		f, err := os.OpenFile(p, flag|os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	write("2026/01/01 [emerg] 1#1: old failure\n", os.O_TRUNC)
	l := openErrorLog(p)
	steps := []struct {
		name  string
		write string
		flag  int
		want  []string
	}{
		{"nothing new", "", os.O_APPEND, nil},
		{"notice only", "x [notice] 1#1: signal 1 (SIGHUP) received\n", os.O_APPEND, nil},
		{"partial line waits", "y [emerg] 1#1: bind() to 127.0.0.1:1 failed", os.O_APPEND, nil},
		{"line completed", " (98: Address already in use)\nz [notice] ok\n", os.O_APPEND,
			[]string{"y [emerg] 1#1: bind() to 127.0.0.1:1 failed (98: Address already in use)"}},
		{"rotated", "r [emerg] new file\n", os.O_TRUNC, []string{"r [emerg] new file"}},
	}
	for _, s := range steps {
		write(s.write, s.flag)
		if got := l.emerg(); !reflect.DeepEqual(got, s.want) {
			t.Fatalf("%s: emerg() = %q; want %q", s.name, got, s.want)
		}
	}
	if got := openErrorLog(filepath.Join(t.TempDir(), "missing")).emerg(); got != nil {
		t.Fatalf("emerg() of a missing log = %q; want nil", got)
	}
}

func TestRetired(t *testing.T) {
	t.Parallel()
	dir := fakeProc(t, map[int]string{
		10: "10 (nginx) S 1",
		11: "11 (nginx) S 1",
		12: "12 (nginx) Z 1",
		13: "13 (nginx) S 1",
	})
	cmdlines := map[int]string{
		10: "nginx: worker process\x00\x00\x00",
		11: "nginx: worker process is shutting down\x00",
		12: "",
	}
	for pid, cl := range cmdlines {
		if err := os.WriteFile(filepath.Join(dir, strconv.Itoa(pid), "cmdline"), []byte(cl), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		pid  int
		want bool
	}{
		{10, false}, // still accepting
		{11, true},  // got the quit signal
		{12, true},  // zombie
		{13, true},  // cmdline gone: exiting
		{99, true},  // exited
	}
	for _, tc := range tests {
		if got := retired(dir, tc.pid); got != tc.want {
			t.Errorf("retired(%d) = %v; want %v", tc.pid, got, tc.want)
		}
	}
	if got := accepting(dir, []int{10, 11, 12, 99}); !reflect.DeepEqual(got, []int{10}) {
		t.Errorf("accepting = %v; want [10]", got)
	}
}

// TestListedChildren: where the kernel lists a process's children per
// thread, those lists are read instead of the whole table, and only live
// children that still have that parent count.
func TestListedChildren(t *testing.T) {
	t.Parallel()
	dir := fakeProc(t, map[int]string{
		300: "300 (nginx) S 1 300 300",
		301: "301 (nginx) S 300 300 300",
		302: "302 (nginx) Z 300 300 300",
		303: "303 (nginx) S 300 300 300",
		304: "304 (nginx) S 300 300 300",
		401: "401 (cat) S 1 401 401", // listed, but reparented since
	})
	lists := map[string]string{"300": "303 302 301 401 ", "310": "304\n"}
	for tid, list := range lists {
		p := filepath.Join(dir, "300", "task", tid)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "children"), []byte(list), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, ok := listedChildren(dir, 300)
	if want := []int{301, 303, 304}; !ok || !reflect.DeepEqual(got, want) {
		t.Errorf("listedChildren(300) = %v, %v; want %v, true", got, ok, want)
	}
	if got, _, err := children(dir, 300); err != nil || !reflect.DeepEqual(got, []int{301, 303, 304}) {
		t.Errorf("children(300) = %v, %v; want the listed ones", got, err)
	}
	if _, ok := listedChildren(dir, 401); ok {
		t.Error("listedChildren(401) without task lists: ok; want the table scan's fallback")
	}
	real, ok := listedChildren("/proc", os.Getppid())
	if ok && !slices.Contains(real, os.Getpid()) {
		t.Errorf("listedChildren(/proc, %d) = %v; want it to hold this process %d", os.Getppid(), real, os.Getpid())
	}
}
