package nginxreload

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// stat is the part of /proc/<pid>/stat this package needs.
type stat struct {
	PID, PPID int
	Comm      string
	State     byte
}

// parseStat parses one /proc/<pid>/stat line. The comm field is in
// parentheses and may itself hold spaces and parentheses, so the fields after
// it are found from the last ')'.
func parseStat(line string) (stat, error) {
	open := strings.IndexByte(line, '(')
	closing := strings.LastIndexByte(line, ')')
	if open < 1 || closing < open {
		return stat{}, fmt.Errorf("parse stat %q: no (comm)", line)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line[:open]))
	if err != nil {
		return stat{}, fmt.Errorf("parse stat %q: pid: %w", line, err)
	}
	rest := strings.Fields(line[closing+1:])
	if len(rest) < 2 || len(rest[0]) != 1 {
		return stat{}, fmt.Errorf("parse stat %q: want state and ppid after comm", line)
	}
	ppid, err := strconv.Atoi(rest[1])
	if err != nil {
		return stat{}, fmt.Errorf("parse stat %q: ppid: %w", line, err)
	}
	return stat{PID: pid, PPID: ppid, Comm: line[open+1 : closing], State: rest[0][0]}, nil
}

// readStat reads <procDir>/<pid>/stat.
func readStat(procDir string, pid int) (stat, error) {
	b, err := os.ReadFile(filepath.Join(procDir, strconv.Itoa(pid), "stat"))
	if err != nil {
		return stat{}, err
	}
	return parseStat(string(b))
}

// alive reports whether pid exists under procDir and is not a zombie.
func alive(procDir string, pid int) bool {
	s, err := readStat(procDir, pid)
	return err == nil && s.State != 'Z' && s.State != 'X'
}

// retired reports whether an old nginx child no longer accepts connections:
// it exited, or it is a worker that got the master's quit signal and retitled
// itself "worker process is shutting down" (nginx closes its listening sockets
// right then).
func retired(procDir string, pid int) bool {
	if !alive(procDir, pid) {
		return true
	}
	b, err := os.ReadFile(filepath.Join(procDir, strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH)
	}
	return strings.Contains(string(b), "shutting down")
}

// children returns the sorted pids of the live (non-zombie) processes whose
// parent is ppid. Processes that exit during the scan are skipped. The
// kernel's list of ppid's children is read when it has one (listed), the
// whole process table otherwise.
func children(procDir string, ppid int) (pids []int, listed bool, err error) {
	if pids, ok := listedChildren(procDir, ppid); ok {
		return pids, true, nil
	}
	pids, err = scanChildren(procDir, ppid)
	return pids, false, err
}

// scanChildren is children from the whole process table.
func scanChildren(procDir string, ppid int) ([]int, error) {
	entries, err := os.ReadDir(procDir)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		s, err := readStat(procDir, pid)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			continue // exited meanwhile
		}
		if err != nil {
			return nil, err
		}
		if s.PPID == ppid && s.State != 'Z' && s.State != 'X' {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return pids, nil
}

// listedChildren reads ppid's children from the kernel's lists of each of
// its threads' children (CONFIG_PROC_CHILDREN; the nginx master has one
// thread), keeping the live ones; ok is false when there are no lists.
func listedChildren(procDir string, ppid int) (pids []int, ok bool) {
	tasks := filepath.Join(procDir, strconv.Itoa(ppid), "task")
	entries, err := os.ReadDir(tasks)
	if err != nil {
		return nil, false
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(tasks, e.Name(), "children"))
		if err != nil {
			return nil, false
		}
		for _, f := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				return nil, false
			}
			if childOf(procDir, pid, ppid) {
				pids = append(pids, pid)
			}
		}
	}
	slices.Sort(pids)
	return pids, len(entries) > 0
}

// childOf reports whether pid is a live (non-zombie) child of ppid.
func childOf(procDir string, pid, ppid int) bool {
	s, err := readStat(procDir, pid)
	return err == nil && s.PPID == ppid && s.State != 'Z' && s.State != 'X'
}

// readPID reads a pid file as nginx writes it: a decimal number and a newline.
func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("read pid file %s: not a pid: %q", path, b)
	}
	return pid, nil
}
