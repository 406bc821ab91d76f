package bwrap

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOwnNeverReownsThroughALink: own re-owns what it checked, never a
// name twice: a sandbox on the same Dir may swap a symlink to a file
// outside over a name own has just found root-owned, or remove an entry or
// exchange a directory with a file or a symlink meanwhile. The file
// outside stays root's, a file hard-linked from outside Dir (an object git
// cloned from a mirror) is left alone, and the walk does not fail.
func TestOwnNeverReownsThroughALink(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("own re-owns only as root")
	}
	const uid, gid = DefaultUID + 63, DefaultGID + 63
	outside := filepath.Join(t.TempDir(), "object")
	if err := os.WriteFile(outside, []byte("blob"), 0o444); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Link(outside, filepath.Join(dir, "cloned-object")); err != nil { // skipped: it has another name
		t.Fatal(err)
	}
	symlink := filepath.Join(dir, "to-object") // re-owned itself, never its target
	if err := os.Symlink(outside, symlink); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	done := make(chan struct{}, 2)
	for r := range cap(done) { // the sandbox sharing dir
		go func() {
			defer func() { done <- struct{}{} }()
			n := strconv.Itoa(r)
			victim, link, fresh := filepath.Join(dir, "index"+n), filepath.Join(dir, "link"+n), filepath.Join(dir, "fresh"+n)
			for !stop.Load() {
				os.Symlink(outside, link)
				os.Rename(link, victim)
				os.WriteFile(fresh, nil, 0o644) // root-owned, one link: own re-owns it
				os.Rename(fresh, victim)
			}
		}()
	}
	// And a directory it keeps exchanging with a file and with a symlink.
	sub, file, link := filepath.Join(dir, "sub"), filepath.Join(dir, "file"), filepath.Join(dir, "link")
	if err := errors.Join(os.Mkdir(sub, 0o755), os.WriteFile(file, nil, 0o644), os.Symlink(outside, link)); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer func() { done <- struct{}{} }()
		for !stop.Load() {
			unix.Renameat2(unix.AT_FDCWD, sub, unix.AT_FDCWD, file, unix.RENAME_EXCHANGE)
			unix.Renameat2(unix.AT_FDCWD, sub, unix.AT_FDCWD, link, unix.RENAME_EXCHANGE)
		}
	}()
	defer func() {
		stop.Store(true)
		for range cap(done) + 1 {
			<-done
		}
	}()
	for i := range 20000 {
		unix.Chown(dir, 0, 0)
		if err := own(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Stat(outside, &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 0 {
			t.Fatalf("iteration %d: the file outside Dir was re-owned to uid %d", i, st.Uid)
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat(symlink, &st); err != nil || st.Uid != uid {
		t.Errorf("the symlink in Dir is owned by uid %d (%v), want %d", st.Uid, err, uid)
	}
}
