package worktree

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
)

// ErrConcurrentUpdate is returned when a ref or the index changed (or was
// locked by the agent's git) while this package was updating it.
var ErrConcurrentUpdate = errors.New("worktree: concurrent update of the task clone")

// lockWait bounds how long we wait for a lock the agent's git holds.
const lockWait = 2 * time.Second

// createLock creates path+".lock" exclusively, the way git locks refs and
// the index, waiting a little for a lock git holds.
func createLock(path string) (*os.File, error) {
	deadline := time.Now().Add(lockWait)
	delay := 5 * time.Millisecond
	for {
		f, err := os.OpenFile(path+".lock", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, fs.ErrExist) || time.Now().After(deadline) {
			if errors.Is(err, fs.ErrExist) {
				return nil, fmt.Errorf("%w: %s.lock exists", ErrConcurrentUpdate, filepath.Base(path))
			}
			return nil, err
		}
		time.Sleep(delay) // waiting on another process's lock file; no event to wait on
		delay = min(delay*2, 100*time.Millisecond)
	}
}

// commitLock writes data to an open lock file and renames it over path.
func commitLock(f *os.File, path string, data []byte) error {
	_, err := f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		_ = os.Remove(f.Name())
	}
	return err
}

// readRef returns a ref's hash from its loose file or packed-refs; zero
// when it does not exist.
func readRef(gitDir string, name plumbing.ReferenceName) (plumbing.Hash, error) {
	b, err := os.ReadFile(filepath.Join(gitDir, filepath.FromSlash(name.String())))
	if err == nil {
		s := strings.TrimSpace(string(b))
		if !hexSHA.MatchString(s) {
			return plumbing.ZeroHash, fmt.Errorf("worktree: ref %s is not a hash", name)
		}
		return plumbing.NewHash(s), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return plumbing.ZeroHash, err
	}
	pb, err := os.ReadFile(filepath.Join(gitDir, "packed-refs"))
	if errors.Is(err, fs.ErrNotExist) {
		return plumbing.ZeroHash, nil
	}
	if err != nil {
		return plumbing.ZeroHash, err
	}
	sc := bufio.NewScanner(bytes.NewReader(pb))
	for sc.Scan() {
		l := sc.Text()
		if len(l) > 41 && l[40] == ' ' && l[41:] == name.String() {
			return plumbing.NewHash(l[:40]), nil
		}
	}
	return plumbing.ZeroHash, nil
}

// updateRef sets a ref with git's lock-and-rename protocol, failing with
// ErrConcurrentUpdate when its value is no longer old.
func updateRef(gitDir string, name plumbing.ReferenceName, h, old plumbing.Hash) error {
	p := filepath.Join(gitDir, filepath.FromSlash(name.String()))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := createLock(p)
	if err != nil {
		return err
	}
	cur, err := readRef(gitDir, name)
	if err != nil || cur != old {
		f.Close()
		_ = os.Remove(f.Name())
		if err != nil {
			return err
		}
		return fmt.Errorf("%w: %s moved from %s to %s", ErrConcurrentUpdate, name, old, cur)
	}
	return commitLock(f, p, []byte(h.String()+"\n"))
}

// setHeadSymbolic points HEAD at a branch.
func setHeadSymbolic(gitDir string, branch plumbing.ReferenceName) error {
	p := filepath.Join(gitDir, "HEAD")
	want := "ref: " + branch.String() + "\n"
	if b, err := os.ReadFile(p); err == nil && string(b) == want {
		return nil
	}
	f, err := createLock(p)
	if err != nil {
		return err
	}
	return commitLock(f, p, []byte(want))
}
