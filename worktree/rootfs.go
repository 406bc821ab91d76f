package worktree

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-git/go-billy/v5"
	"golang.org/x/sys/unix"
)

// errNotRegular is returned when a path that must be a regular file (or a
// directory) is a FIFO, socket or device.
var errNotRegular = errors.New("not a regular file")

// rootFS is a billy.Filesystem confined to a directory through os.Root:
// no path, symlink or ".." resolves outside it, whatever the directory's
// owner (an agent, a local remote) planted. Files are opened non-blocking
// and refused unless they are regular files or directories, so a FIFO in
// place of .git/index or a ref cannot hang the host.
type rootFS struct {
	root *os.Root
	base string // the path the root was opened at, for Root and errors
}

var _ billy.Filesystem = (*rootFS)(nil)

// openRootNoFollow opens dir as an os.Root, refusing a dir whose last
// component is a symlink (os.OpenRoot alone would follow it).
func openRootNoFollow(dir string) (*os.Root, error) {
	return openDirRoot(dir, os.Lstat, os.OpenRoot)
}

// subRoot opens name inside r as a new root without following a symlink
// in its last component.
func subRoot(r *os.Root, name string) (*os.Root, error) {
	return openDirRoot(name, r.Lstat, r.OpenRoot)
}

// openDirRoot opens name with open after lstat says it is a directory,
// and checks that what it opened is that directory: the entry may have
// been swapped for a link between the two calls.
func openDirRoot(name string, lstat func(string) (fs.FileInfo, error), open func(string) (*os.Root, error)) (*os.Root, error) {
	fi, err := lstat(name)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a directory", ErrUnsafeRepository, name)
	}
	r, err := open(name)
	if err != nil {
		return nil, err
	}
	if st, err := r.Stat("."); err != nil || !os.SameFile(st, fi) {
		r.Close()
		return nil, fmt.Errorf("%w: %s changed while opening it", ErrUnsafeRepository, name)
	}
	return r, nil
}

// rootPath returns where an open root really is (symlinks resolved).
func rootPath(r *os.Root) (string, error) {
	f, err := r.Open(".")
	if err != nil {
		return "", err
	}
	defer f.Close()
	return os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
}

func newRootFS(r *os.Root, base string) *rootFS { return &rootFS{root: r, base: base} }

func (r *rootFS) Close() error { return r.root.Close() }

func clean(name string) string {
	name = filepath.Clean(filepath.FromSlash(name))
	name = strings.TrimPrefix(name, string(filepath.Separator))
	if name == "" {
		return "."
	}
	return name
}

func (r *rootFS) Create(name string) (billy.File, error) {
	return r.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o666)
}

func (r *rootFS) Open(name string) (billy.File, error) { return r.OpenFile(name, os.O_RDONLY, 0) }

func (r *rootFS) OpenFile(name string, flag int, perm os.FileMode) (billy.File, error) {
	name = clean(name)
	if flag&os.O_CREATE != 0 {
		if d := filepath.Dir(name); d != "." {
			if err := r.root.MkdirAll(d, 0o755); err != nil {
				return nil, err
			}
		}
	}
	f, err := openChecked(r.root, name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &rootFile{File: f, name: name}, nil
}

// openChecked opens name in root non-blocking and refuses anything but a
// regular file or a directory.
func openChecked(root *os.Root, name string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := root.OpenFile(name, flag|syscall.O_NONBLOCK|syscall.O_CLOEXEC, perm)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() && !fi.IsDir() {
		f.Close()
		return nil, &fs.PathError{Op: "open", Path: name, Err: errNotRegular}
	}
	return f, nil
}

// readFileLimit reads a whole regular file from root, refusing FIFOs and
// files over limit bytes.
func readFileLimit(root *os.Root, name string, limit int64) ([]byte, error) {
	f, err := openChecked(root, name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readAllLimit(f, name, limit)
}

// readAllLimit reads the open file f (named name in errors) whole,
// refusing anything but a regular file and more than limit bytes.
func readAllLimit(f *os.File, name string, limit int64) ([]byte, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "read", Path: name, Err: errNotRegular}
	}
	if fi.Size() > limit {
		return nil, &fs.PathError{Op: "read", Path: name, Err: ErrFileTooLarge}
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, &fs.PathError{Op: "read", Path: name, Err: ErrFileTooLarge}
	}
	return b, nil
}

func (r *rootFS) Stat(name string) (os.FileInfo, error)  { return r.root.Stat(clean(name)) }
func (r *rootFS) Lstat(name string) (os.FileInfo, error) { return r.root.Lstat(clean(name)) }

func (r *rootFS) Rename(from, to string) error {
	to = clean(to)
	if d := filepath.Dir(to); d != "." {
		if err := r.root.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	return r.root.Rename(clean(from), to)
}

func (r *rootFS) Remove(name string) error { return r.root.Remove(clean(name)) }

func (r *rootFS) Join(elem ...string) string { return filepath.Join(elem...) }

func (r *rootFS) TempFile(dir, prefix string) (billy.File, error) {
	dir = clean(dir)
	if err := r.root.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for range 100 {
		name := filepath.Join(dir, prefix+randHex(8))
		f, err := r.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return f, err
	}
	return nil, fmt.Errorf("worktree: no free temporary name in %s", dir)
}

func (r *rootFS) ReadDir(name string) ([]os.FileInfo, error) {
	f, err := openChecked(r.root, clean(name), os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ents, err := f.ReadDir(-1)
	if err != nil {
		return nil, err
	}
	out := make([]os.FileInfo, 0, len(ents))
	for _, e := range ents {
		var st unix.Stat_t
		if err := unix.Fstatat(int(f.Fd()), e.Name(), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			continue
		}
		out = append(out, statInfo(e.Name(), &st))
	}
	return out, nil
}

func (r *rootFS) MkdirAll(name string, perm os.FileMode) error {
	return r.root.MkdirAll(clean(name), perm)
}

func (r *rootFS) Symlink(target, link string) error {
	return errors.New("worktree: symlinks are not written into repositories")
}

func (r *rootFS) Readlink(name string) (string, error) { return r.root.Readlink(clean(name)) }

func (r *rootFS) Chroot(name string) (billy.Filesystem, error) {
	sub, err := subRoot(r.root, clean(name))
	if err != nil {
		return nil, err
	}
	return newRootFS(sub, filepath.Join(r.base, clean(name))), nil
}

func (r *rootFS) Root() string { return r.base }

// rootFile is an open file of a rootFS; Name is relative to the root, as
// go-git expects when it renames a temporary file.
type rootFile struct {
	*os.File
	name string
}

func (f *rootFile) Name() string { return f.name }

func (f *rootFile) Lock() error {
	return unix.Flock(int(f.File.Fd()), unix.LOCK_EX)
}

func (f *rootFile) Unlock() error {
	return unix.Flock(int(f.File.Fd()), unix.LOCK_UN)
}

// statInfo adapts a stat result to os.FileInfo.
type statFileInfo struct {
	name string
	st   unix.Stat_t
}

func statInfo(name string, st *unix.Stat_t) os.FileInfo { return &statFileInfo{name: name, st: *st} }

func (s *statFileInfo) Name() string { return s.name }
func (s *statFileInfo) Size() int64  { return s.st.Size }
func (s *statFileInfo) Mode() os.FileMode {
	m := os.FileMode(s.st.Mode & 0o777)
	switch s.st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		m |= os.ModeDir
	case unix.S_IFLNK:
		m |= os.ModeSymlink
	case unix.S_IFIFO:
		m |= os.ModeNamedPipe
	case unix.S_IFSOCK:
		m |= os.ModeSocket
	case unix.S_IFCHR:
		m |= os.ModeDevice | os.ModeCharDevice
	case unix.S_IFBLK:
		m |= os.ModeDevice
	}
	if s.st.Mode&unix.S_ISUID != 0 {
		m |= os.ModeSetuid
	}
	if s.st.Mode&unix.S_ISGID != 0 {
		m |= os.ModeSetgid
	}
	if s.st.Mode&unix.S_ISVTX != 0 {
		m |= os.ModeSticky
	}
	return m
}
func (s *statFileInfo) ModTime() time.Time { return time.Unix(s.st.Mtim.Unix()) }
func (s *statFileInfo) IsDir() bool        { return s.Mode().IsDir() }
func (s *statFileInfo) Sys() any           { return toSyscallStat(&s.st) }

func toSyscallStat(st *unix.Stat_t) *syscall.Stat_t {
	return &syscall.Stat_t{
		Dev: st.Dev, Ino: st.Ino, Nlink: st.Nlink, Mode: st.Mode, Uid: st.Uid, Gid: st.Gid,
		Rdev: st.Rdev, Size: st.Size, Blksize: st.Blksize, Blocks: st.Blocks,
		Atim: syscall.Timespec{Sec: st.Atim.Sec, Nsec: st.Atim.Nsec},
		Mtim: syscall.Timespec{Sec: st.Mtim.Sec, Nsec: st.Mtim.Nsec},
		Ctim: syscall.Timespec{Sec: st.Ctim.Sec, Nsec: st.Ctim.Nsec},
	}
}
