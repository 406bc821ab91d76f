package worktree

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
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

// writeLocked replaces name inside root with data using git's lock file
// protocol (name.lock created exclusively, then renamed over name), so the
// agent's git sees either the old or the new file, and a lock its git holds
// makes this wait a little, then fail with ErrConcurrentUpdate. Nothing is
// written through a link: the lock is new and the rename replaces name.
func writeLocked(ctx context.Context, root *os.Root, name string, data []byte) error {
	name = filepath.FromSlash(name)
	if d := filepath.Dir(name); d != "." {
		if err := root.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	lock := name + ".lock"
	deadline := time.Now().Add(lockWait)
	delay := 5 * time.Millisecond
	var f *os.File
	for {
		var err error
		f, err = openChecked(root, lock, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) || time.Now().After(deadline) {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%w: %s.lock exists", ErrConcurrentUpdate, filepath.Base(name))
			}
			return err
		}
		t := time.NewTimer(delay) // waiting on another process's lock file; no event to wait on
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(delay*2, 100*time.Millisecond)
	}
	_, err := f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Rename(lock, name)
	}
	if err != nil {
		_ = root.Remove(lock)
	}
	return err
}
