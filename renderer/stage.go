package renderer

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/rollcall/rollcall/renderer/confd"
)

// fileState is a destination file as it is (or was) installed.
type fileState struct {
	exists   bool
	data     []byte
	mode     os.FileMode
	uid, gid int
}

// readState reads dest; a missing file is a zero fileState, not an error.
func readState(dest string) (fileState, error) {
	data, err := os.ReadFile(dest)
	if errors.Is(err, fs.ErrNotExist) {
		return fileState{}, nil
	}
	if err != nil {
		return fileState{}, fmt.Errorf("read %s: %w", dest, err)
	}
	fi, err := os.Stat(dest)
	if err != nil {
		return fileState{}, fmt.Errorf("stat %s: %w", dest, err)
	}
	st := fileState{exists: true, data: data, mode: fi.Mode().Perm(), uid: -1, gid: -1}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.uid, st.gid = int(sys.Uid), int(sys.Gid)
	}
	return st, nil
}

// target is the file a resource wants: its bytes, mode and owner. Unset mode
// keeps the installed file's (0644 for a new file); unset owner is the
// renderer's own user and group, as in confd.
func target(r *confd.Resource, data []byte, cur fileState) fileState {
	t := fileState{exists: true, data: data, mode: r.Mode.Perm(), uid: r.UID, gid: r.GID}
	if r.Mode == 0 {
		t.mode = 0o644
		if cur.exists {
			t.mode = cur.mode
		}
	}
	if t.uid < 0 {
		t.uid = os.Geteuid()
	}
	if t.gid < 0 {
		t.gid = os.Getegid()
	}
	return t
}

// same reports whether the installed file already is t: bytes, mode, owner.
func (s fileState) same(t fileState) bool {
	return s.exists && bytes.Equal(s.data, t.data) && s.mode == t.mode && s.uid == t.uid && s.gid == t.gid
}

// stageFile writes t to a temp file in dest's directory (so the rename is
// atomic) with t's mode and owner, synced to disk. It returns the temp path.
func stageFile(dest string, t fileState) (path string, err error) {
	dir, base := filepath.Split(dest)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".rollcall-*")
	if err != nil {
		return "", fmt.Errorf("stage %s: %w", dest, err)
	}
	defer func() {
		if err != nil { // a second Close after a failed one adds "file already closed"
			err = errors.Join(err, f.Close(), os.Remove(f.Name()))
		}
	}()
	if _, err := f.Write(t.data); err != nil {
		return "", fmt.Errorf("stage %s: %w", dest, err)
	}
	if err := f.Chmod(t.mode); err != nil {
		return "", fmt.Errorf("stage %s: %w", dest, err)
	}
	if t.uid >= 0 || t.gid >= 0 {
		if err := f.Chown(t.uid, t.gid); err != nil {
			return "", fmt.Errorf("stage %s: %w", dest, err)
		}
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("stage %s: %w", dest, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("stage %s: %w", dest, err)
	}
	return f.Name(), nil
}

// install renames the staged file over dest and syncs the directory.
func install(staged, dest string) error {
	if err := os.Rename(staged, dest); err != nil {
		return errors.Join(fmt.Errorf("install %s: %w", dest, err), os.Remove(staged))
	}
	return syncDir(filepath.Dir(dest))
}

// restore puts prev back at dest: its bytes, mode and owner, or no file.
func restore(dest string, prev fileState) error {
	if !prev.exists {
		if err := os.Remove(dest); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("restore %s: %w", dest, err)
		}
		return syncDir(filepath.Dir(dest))
	}
	if err := put(dest, prev); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}

// put stages t for dest and installs it, for the files written outside a
// batch's check (pushed peer sets, HAProxy's slots config, a restore).
func put(dest string, t fileState) error {
	staged, err := stageFile(dest, t)
	if err != nil {
		return err
	}
	return install(staged, dest)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	if err := errors.Join(d.Sync(), d.Close()); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// A pending mark, .<dest>.rollcall.pending next to dest, says that dest may
// have been installed without its check and reload having run: it is
// written (and synced) before an install and removed once the resource is
// applied. A renderer that finds one at start (it was killed in between)
// checks, installs and reloads that resource in its first pass, even when
// the output equals the file, before it acknowledges anything.
func pendingMark(dest string) string {
	dir, base := filepath.Split(dest)
	return filepath.Join(dir, "."+base+".rollcall.pending")
}

// markPending writes dest's pending mark.
func markPending(dest string) error {
	f, err := os.OpenFile(pendingMark(dest), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("mark %s pending: %w", dest, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("mark %s pending: %w", dest, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("mark %s pending: %w", dest, err)
	}
	return syncDir(filepath.Dir(dest))
}

// clearPending removes dest's pending mark.
func clearPending(dest string) error {
	if err := os.Remove(pendingMark(dest)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("clear %s pending: %w", dest, err)
	}
	return nil
}

// leftovers removes stage files a killed renderer left next to dest
// (.<dest>.rollcall-*) and reports whether dest's pending mark is there.
func leftovers(dest string) (pending bool, removed []string, err error) {
	dir, base := filepath.Split(dest)
	if dir == "" {
		dir = "."
	}
	stale, err := filepath.Glob(filepath.Join(dir, "."+globEscape(base)+".rollcall-*"))
	if err != nil {
		return false, nil, fmt.Errorf("stale stage files of %s: %w", dest, err)
	}
	for _, p := range stale {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, removed, fmt.Errorf("remove stale %s: %w", p, err)
		}
		removed = append(removed, p)
	}
	_, err = os.Stat(pendingMark(dest))
	switch {
	case err == nil:
		return true, removed, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, removed, nil
	}
	return false, removed, fmt.Errorf("pending mark of %s: %w", dest, err)
}

// instancesFile, .<dest>.rollcall.instances next to dest, remembers how
// many instances the installed file was rendered with, so the mass-removal
// guard (guard.go) compares a restarted renderer's first render — an
// emptied etcd, say — with what is installed. It is advisory: a lost or
// unreadable one only leaves that first render unguarded.
func instancesFile(dest string) string {
	dir, base := filepath.Split(dest)
	return filepath.Join(dir, "."+base+".rollcall.instances")
}

// writeInstances records n for dest (write and rename: never half a number).
func writeInstances(dest string, n int) error {
	p := instancesFile(dest)
	if err := os.WriteFile(p+".tmp", []byte(strconv.Itoa(n)+"\n"), 0o644); err != nil {
		return fmt.Errorf("record instances of %s: %w", dest, err)
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		return fmt.Errorf("record instances of %s: %w", dest, err)
	}
	return nil
}

// readInstances reads what writeInstances recorded for dest.
func readInstances(dest string) (int, bool) {
	b, err := os.ReadFile(instancesFile(dest))
	if err != nil {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return n, err == nil && n >= 0
}

// globEscape quotes filepath.Match's metacharacters.
func globEscape(s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', '\\':
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return string(b)
}
