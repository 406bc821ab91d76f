package bwrap

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// TestBindMkdirFollowsNoSymlink: a missing ancestor of a ReadOnlyInDir
// path is created beneath Dir, never through a symlink that a sandbox on
// the same Dir swaps in above it after the check (here .git, exchanged
// again and again with a symlink to a directory outside).
func TestBindMkdirFollowsNoSymlink(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	git, alt := filepath.Join(dir, ".git"), filepath.Join(dir, "alt")
	if err := os.Mkdir(git, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, alt); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() {
			unix.Renameat2(unix.AT_FDCWD, git, unix.AT_FDCWD, alt, unix.RENAME_EXCHANGE)
		}
	}()
	defer func() { stop.Store(true); <-done }()
	dirfds := map[string]int{}
	defer func() {
		for _, fd := range dirfds {
			unix.Close(fd)
		}
	}()
	created := 0
	for i := range 20000 {
		fd, err := bindReq{dir: dir, rel: ".git/objects", mkdir: true}.open(dirfds, -1, -1)
		if err == nil {
			unix.Close(fd)
			created++
		}
		if _, err := os.Lstat(filepath.Join(outside, "objects")); err == nil {
			t.Fatalf("iteration %d: a directory was created outside Dir through the symlink", i)
		}
		// Remove what was created beneath Dir, wherever .git now is.
		os.Remove(filepath.Join(dir, ".git", "objects"))
		os.Remove(filepath.Join(dir, "alt", "objects"))
	}
	if created == 0 {
		t.Error("never created .git/objects beneath Dir: the test checks nothing")
	}
}
