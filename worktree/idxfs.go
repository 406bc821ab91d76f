package worktree

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/go-git/go-billy/v5"
)

// go-git decodes a pack index four bytes per read call: on a plain file
// that is a system call each, and every store opened over a mirror (a
// commit, a diff, a push) loads the mirror's indexes again. idxFS reads an
// index file whole, in one call, and hands go-git an in-memory copy.

// idxFS wraps fs so that pack index files (*.idx) opened for reading are
// read whole into memory, and so that listing a directory survives an
// entry renamed or removed meanwhile (see ReadDir). It is used only over
// host-owned repositories (mirrors, local origins), never over a clone an
// agent wrote: go-git holds a decoded index in memory anyway, but a file
// the agent planted is read through the clone's own checked filesystem.
type idxFS struct{ billy.Filesystem }

func bufferedIdx(fs billy.Filesystem) billy.Filesystem { return idxFS{fs} }

func (f idxFS) Open(name string) (billy.File, error) {
	return f.OpenFile(name, os.O_RDONLY, 0)
}

func (f idxFS) OpenFile(name string, flag int, perm os.FileMode) (billy.File, error) {
	file, err := f.Filesystem.OpenFile(name, flag, perm)
	if err != nil || flag&(os.O_WRONLY|os.O_RDWR|os.O_APPEND|os.O_CREATE|os.O_TRUNC) != 0 || !strings.HasSuffix(name, ".idx") {
		return file, err
	}
	defer file.Close()
	var size int64
	if fi, err := f.Filesystem.Stat(name); err == nil && fi.Mode().IsRegular() && fi.Size() < 1<<30 {
		size = fi.Size()
	}
	// Room for the size the file has and then some: one read takes the
	// file, a second sees its end (ReadAll would grow a buffer from 512
	// bytes, a read per doubling).
	buf := bytes.NewBuffer(make([]byte, 0, size+bytes.MinRead))
	if _, err := buf.ReadFrom(file); err != nil {
		return nil, err
	}
	return &memFile{name: file.Name(), Reader: bytes.NewReader(buf.Bytes())}, nil
}

// ReadDir lists the directory name again when an entry vanished while it
// was listed. osfs reads a directory's names and then stats each one, and
// fails the whole listing with "no such file" when one is gone by then,
// which go-git takes for a missing directory: listing objects/pack of a
// mirror while a fetch renamed its tmp_pack_* file into place left the
// store with no packs, so every packed object, the base commit included,
// was "object not found" for as long as the store was open. A listing
// that keeps failing is reported as an error of its own, never as a
// missing directory.
func (f idxFS) ReadDir(name string) ([]os.FileInfo, error) {
	var err error
	for range readDirAttempts {
		var infos []os.FileInfo
		if infos, err = f.Filesystem.ReadDir(name); err == nil || !errors.Is(err, fs.ErrNotExist) {
			return infos, err
		}
		if _, serr := f.Filesystem.Lstat(name); errors.Is(serr, fs.ErrNotExist) {
			return nil, err // the directory itself is missing
		}
	}
	return nil, fmt.Errorf("worktree: list %s: entries kept vanishing while it was read: %v", name, err)
}

// readDirAttempts bounds how often ReadDir lists a directory whose entries
// keep vanishing: each attempt loses only to a rename or removal within
// the moment between reading the names and stating them.
const readDirAttempts = 100

// Chroot keeps the wrapping for the sub-filesystem go-git asks for.
func (f idxFS) Chroot(path string) (billy.Filesystem, error) {
	sub, err := f.Filesystem.Chroot(path)
	if err != nil {
		return nil, err
	}
	return idxFS{sub}, nil
}

// memFile is a read-only in-memory billy.File.
type memFile struct {
	name string
	*bytes.Reader
}

func (m *memFile) Name() string              { return m.name }
func (m *memFile) Write([]byte) (int, error) { return 0, os.ErrPermission }
func (m *memFile) Close() error              { return nil }
func (m *memFile) Lock() error               { return nil }
func (m *memFile) Unlock() error             { return nil }
func (m *memFile) Truncate(int64) error      { return os.ErrPermission }
