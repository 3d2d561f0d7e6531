package renderer

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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
	p, err := stageFile(dest, prev)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return install(p, dest)
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
