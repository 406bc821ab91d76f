package worktree

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/gitignore"
	"github.com/go-git/go-git/v5/plumbing/format/index"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"golang.org/x/sys/unix"
)

// snapshot is the state of a worktree as a tree, plus the index that
// describes it.
type snapshot struct {
	tree    plumbing.Hash
	entries []*index.Entry
}

// readIndex loads the clone's index; a missing index is empty. The index
// is the agent's file: a FIFO, device or directory in its place is refused
// (without blocking), and a corrupt one only costs the stat cache.
func readIndex(git *rootFS) (*index.Index, time.Time, error) {
	idx := &index.Index{Version: 2}
	f, err := openChecked(git.root, "index", os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return idx, time.Time{}, nil
	}
	if errors.Is(err, errNotRegular) {
		return nil, time.Time{}, fmt.Errorf("%w: .git/index is not a regular file", ErrUnsafeRepository)
	}
	if err != nil {
		return nil, time.Time{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, time.Time{}, err
	}
	if !fi.Mode().IsRegular() {
		return nil, time.Time{}, fmt.Errorf("%w: .git/index is not a regular file", ErrUnsafeRepository)
	}
	if err := index.NewDecoder(bufio.NewReaderSize(io.LimitReader(f, maxIndexSize), 256<<10)).Decode(idx); err != nil {
		return &index.Index{Version: 2}, time.Time{}, nil
	}
	return idx, fi.ModTime(), nil
}

// testHookBeforeDir, when set by a test, runs before stage opens a
// directory it listed.
var testHookBeforeDir func(p string)

// maxIndexSize bounds how much of the agent's index is read.
const maxIndexSize = 1 << 30

// readAt reads the regular file name in the directory dirfd without
// following a symlink and without blocking on a FIFO; files over limit
// fail with ErrFileTooLarge.
func readAt(dirfd int, name string, limit int64) ([]byte, error) {
	f, err := openFileAt(dirfd, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readAllLimit(f, name, limit)
}

// foreignLink reports a regular file with several links that someone
// other than the work tree's owner owns: a hard link to a file outside the
// task (reading it would commit that file).
func foreignLink(fi os.FileInfo, owner int) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && owner >= 0 && st.Nlink > 1 && int(st.Uid) != owner
}

// lstatAt stats name in the directory dirfd without following a symlink.
func lstatAt(dirfd int, name string) (os.FileInfo, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, &fs.PathError{Op: "lstat", Path: name, Err: err}
	}
	return statInfo(name, &st), nil
}

// readlinkAt reads the symlink name in the directory dirfd.
func readlinkAt(dirfd int, name string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(dirfd, name, buf)
	if err != nil {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: err}
	}
	if n == len(buf) {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: ErrFileTooLarge}
	}
	return string(buf[:n]), nil
}

// MaxTreeDepth is how deep directories may nest in a work tree Commit or
// Diff reads (git's own core.maxTreeDepth is 4096; real repositories stay
// far below 256). A deeper tree fails with a *LimitError
// (ErrTreeTooDeep): the walk holds one open directory per level, so the
// limit also bounds its open files.
const MaxTreeDepth = 256

// stageOpts are stage's limits and where it puts blobs.
type stageOpts struct {
	// maxFile is the largest file read (Config.MaxFileSize).
	maxFile int64
	// maxCommit caps the bytes of new blobs read (Config.MaxCommitBytes).
	maxCommit int64
	// old holds the objects that are not new (the mirror); nil: none.
	old storer.EncodedObjectStorer
	// put stores exactly size bytes of r as a blob, streaming.
	put func(r io.Reader, size int64) (plumbing.Hash, error)
}

// stage snapshots the worktree the way `git add -A` would: tracked files
// (per the index) and untracked files that no .gitignore excludes. Files
// whose stat data matches the index are not read again. New blobs are
// streamed into o.put, trees written to st.
//
// The walk holds a descriptor for each directory (at most MaxTreeDepth)
// and reaches every entry relative to it without following symlinks: a
// symlink is committed as a symlink (its target text), a directory swapped
// for a link while the walk runs fails the walk, and nothing outside the
// work tree is ever read. A FIFO or device is skipped, never opened for
// reading. A nested repository's files are committed without its .git
// (no entry named .git is ever read). Files are read in chunks, never
// whole; the bytes of new blobs (those o.old lacks) add up against
// o.maxCommit, and a file that would pass it is refused before it is read
// (unless it is tracked with the same size: then it is hashed first, and
// passes if its content is old).
func stage(ctx context.Context, st storer.EncodedObjectStorer, work *os.Root, git *rootFS, o stageOpts) (*snapshot, error) {
	idx, idxTime, err := readIndex(git)
	if err != nil {
		return nil, fmt.Errorf("read index: %w", err)
	}
	tracked := make(map[string]*index.Entry, len(idx.Entries))
	trackedDirs := map[string]bool{}
	for _, e := range idx.Entries {
		if _, dup := tracked[e.Name]; dup && e.Stage != 0 {
			continue
		}
		tracked[e.Name] = e
		for d := path.Dir(e.Name); d != "."; d = path.Dir(d) {
			if trackedDirs[d] {
				break
			}
			trackedDirs[d] = true
		}
	}
	var patterns []gitignore.Pattern
	if b, err := readFileLimit(git.root, filepath.Join("info", "exclude"), 1<<20); err == nil {
		patterns = append(patterns, parseIgnore(b, nil)...)
	}
	isOld := func(h plumbing.Hash) bool { return o.old != nil && o.old.HasEncodedObject(h) == nil }
	var added int64 // bytes of new blobs read so far
	buf := make([]byte, 64<<10)
	var out []*index.Entry
	owner := -1 // the work tree's owner, set below
	var walk func(d *os.File, rel string, domain []string, ps []gitignore.Pattern) error
	walk = func(d *os.File, rel string, domain []string, ps []gitignore.Pattern) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		ents, err := d.ReadDir(-1)
		if err != nil {
			return err
		}
		dfd := int(d.Fd())
		for _, de := range ents {
			if de.Name() == ".gitignore" && de.Type().IsRegular() {
				if b, err := readAt(dfd, ".gitignore", 1<<20); err == nil {
					ps = append(ps[:len(ps):len(ps)], parseIgnore(b, domain)...)
				}
				break
			}
		}
		matcher := gitignore.NewMatcher(ps)
		for _, de := range ents {
			name := de.Name()
			p := name
			if rel != "" {
				p = rel + "/" + name
			}
			if name == ".git" {
				continue
			}
			segs := append(domain[:len(domain):len(domain)], name)
			fi, err := lstatAt(dfd, name)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			if fi.IsDir() {
				if e, ok := tracked[p]; ok && e.Mode == filemode.Submodule {
					out = append(out, e)
					continue
				}
				if !trackedDirs[p] && matcher.Match(segs, true) {
					continue
				}
				if len(segs) > MaxTreeDepth {
					return &LimitError{Reason: LimitTreeDepth, Path: shortPath(p), Limit: MaxTreeDepth}
				}
				if testHookBeforeDir != nil {
					testHookBeforeDir(p)
				}
				cfd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
				if errors.Is(err, unix.ENOENT) {
					continue
				}
				if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
					return fmt.Errorf("%w: %s changed while it was read", ErrConcurrentUpdate, shortPath(p))
				}
				if err != nil {
					return &fs.PathError{Op: "open", Path: shortPath(p), Err: err}
				}
				child := os.NewFile(uintptr(cfd), name)
				err = walk(child, p, segs, ps)
				child.Close()
				if err != nil {
					return err
				}
				continue
			}
			e, isTracked := tracked[p]
			if !isTracked && matcher.Match(segs, false) {
				continue
			}
			var mode filemode.FileMode
			switch {
			case fi.Mode()&fs.ModeSymlink != 0:
				mode = filemode.Symlink
			case fi.Mode().IsRegular() && fi.Mode()&0o111 != 0:
				mode = filemode.Executable
			case fi.Mode().IsRegular():
				mode = filemode.Regular
			default:
				continue // sockets, fifos, devices
			}
			if mode != filemode.Symlink && foreignLink(fi, owner) {
				return fmt.Errorf("%w: %s is a hard link to a file the task does not own", ErrUnsafeRepository, shortPath(p))
			}
			if isTracked && e.Mode == mode && statMatches(e, fi, idxTime) {
				out = append(out, e)
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			ne := &index.Entry{Name: p, Mode: mode}
			var size int64
			if mode == filemode.Symlink {
				target, err := readlinkAt(dfd, name)
				if err != nil {
					return err
				}
				size = int64(len(target))
				ne.Hash, err = o.put(strings.NewReader(target), size)
				if err != nil {
					return err
				}
			} else {
				f, err := openFileAt(dfd, name)
				if err != nil {
					return fmt.Errorf("%w: %s changed while it was read: %v", ErrConcurrentUpdate, shortPath(p), err)
				}
				ffi, err := f.Stat()
				if err != nil {
					f.Close()
					return err
				}
				size = ffi.Size()
				if size > o.maxFile {
					f.Close()
					return fmt.Errorf("%w: %s is %d bytes (limit %d)", ErrFileTooLarge, shortPath(p), size, o.maxFile)
				}
				if added+size > o.maxCommit {
					// Over the budget: only a tracked file of the same
					// size (touched, likely unchanged) is hashed to see
					// whether its content is old; nothing is stored.
					h, err := plumbing.ZeroHash, error(nil)
					if isTracked && int64(e.Size) == size&0xffffffff {
						h, err = hashReader(io.NewSectionReader(f, 0, size), size, buf)
					}
					f.Close()
					if err != nil {
						return fmt.Errorf("%w: %s changed while it was read: %v", ErrConcurrentUpdate, shortPath(p), err)
					}
					if h.IsZero() || !isOld(h) {
						return &LimitError{Reason: LimitCommitBytes, Path: shortPath(p), Limit: o.maxCommit}
					}
					ne.Hash = h
				} else {
					ne.Hash, err = o.put(io.NewSectionReader(f, 0, size), size)
					f.Close()
					if err != nil {
						return fmt.Errorf("%w: %s changed while it was read: %v", ErrConcurrentUpdate, shortPath(p), err)
					}
					if !isOld(ne.Hash) {
						added += size
					}
				}
			}
			// Stat again after reading: the agent may still be writing, and
			// a stale stat would hide the later change. Re-hash next time.
			if fi2, err := lstatAt(dfd, name); err == nil && fi2.ModTime().Equal(fi.ModTime()) && fi2.Size() == size {
				fillStat(ne, fi2)
			}
			out = append(out, ne)
		}
		return nil
	}
	top, err := work.Open(".")
	if err != nil {
		return nil, fmt.Errorf("scan worktree: %w", err)
	}
	if fi, err := top.Stat(); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			owner = int(st.Uid)
		}
	}
	err = walk(top, "", nil, patterns)
	top.Close()
	if err != nil {
		return nil, fmt.Errorf("scan worktree: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	tree, err := buildTree(st, out)
	if err != nil {
		return nil, err
	}
	return &snapshot{tree: tree, entries: out}, nil
}

// openFileAt opens the regular file name in the directory dirfd without
// following a symlink and without blocking on a FIFO.
func openFileAt(dirfd int, name string) (*os.File, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	f := os.NewFile(uintptr(fd), name)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, &fs.PathError{Op: "read", Path: name, Err: errNotRegular}
	}
	return f, nil
}

// hashReader hashes exactly size bytes of r as a blob.
func hashReader(r io.Reader, size int64, buf []byte) (plumbing.Hash, error) {
	h := plumbing.NewHasher(plumbing.BlobObject, size)
	n, err := io.CopyBuffer(h, io.LimitReader(r, size), buf)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if n != size {
		return plumbing.ZeroHash, io.ErrUnexpectedEOF
	}
	return h.Sum(), nil
}

func parseIgnore(b []byte, domain []string) []gitignore.Pattern {
	var ps []gitignore.Pattern
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		ps = append(ps, gitignore.ParsePattern(line, domain))
	}
	return ps
}

// statMatches reports whether a file is unchanged since its index entry
// was written, by git's rules; entries not older than the index itself
// are racy and re-read.
func statMatches(e *index.Entry, fi os.FileInfo, idxTime time.Time) bool {
	if e.Size != uint32(fi.Size()) || !e.ModifiedAt.Equal(fi.ModTime()) {
		return false
	}
	if e.Hash.IsZero() || (!idxTime.IsZero() && !fi.ModTime().Before(idxTime)) {
		return false
	}
	var probe index.Entry
	fillStat(&probe, fi)
	return probe.Inode == e.Inode && probe.CreatedAt.Equal(e.CreatedAt)
}

// buildTree writes the trees for entries sorted by name and returns the
// root tree hash. Trees the store already has are not rewritten.
func buildTree(st storer.EncodedObjectStorer, entries []*index.Entry) (plumbing.Hash, error) {
	type dirNode struct {
		entries []object.TreeEntry
		subdirs map[string]*dirNode
	}
	root := &dirNode{subdirs: map[string]*dirNode{}}
	for _, e := range entries {
		if e.Stage != 0 {
			continue
		}
		parts := strings.Split(e.Name, "/")
		n := root
		for _, d := range parts[:len(parts)-1] {
			c, ok := n.subdirs[d]
			if !ok {
				c = &dirNode{subdirs: map[string]*dirNode{}}
				n.subdirs[d] = c
			}
			n = c
		}
		n.entries = append(n.entries, object.TreeEntry{Name: parts[len(parts)-1], Mode: e.Mode, Hash: e.Hash})
	}
	var write func(n *dirNode) (plumbing.Hash, error)
	write = func(n *dirNode) (plumbing.Hash, error) {
		ents := n.entries
		for name, c := range n.subdirs {
			h, err := write(c)
			if err != nil {
				return plumbing.ZeroHash, err
			}
			ents = append(ents, object.TreeEntry{Name: name, Mode: filemode.Dir, Hash: h})
		}
		sortTreeEntries(ents)
		t := &object.Tree{Entries: ents}
		o := st.NewEncodedObject()
		if err := t.Encode(o); err != nil {
			return plumbing.ZeroHash, err
		}
		h := o.Hash()
		if st.HasEncodedObject(h) != nil {
			if _, err := st.SetEncodedObject(o); err != nil {
				return plumbing.ZeroHash, fmt.Errorf("store tree: %w", err)
			}
		}
		return h, nil
	}
	return write(root)
}

// sortTreeEntries orders entries as git does: directories compare as if
// their name ended in "/".
func sortTreeEntries(ents []object.TreeEntry) {
	key := func(e object.TreeEntry) string {
		if e.Mode == filemode.Dir {
			return e.Name + "/"
		}
		return e.Name
	}
	sort.Slice(ents, func(i, j int) bool { return key(ents[i]) < key(ents[j]) })
}

// change is one path that differs between two trees; a zero hash on a
// side means the path does not exist there.
type change struct {
	path     string
	from, to treeFile
}

// diffTrees reports the file-level differences from tree a to tree b
// (either may be zero), reading only subtrees whose hashes differ.
// newTree, when set, sees every tree of b that differs from a, with its
// path ("" for the root).
func diffTrees(st storer.EncodedObjectStorer, a, b plumbing.Hash, prefix string, visit func(change) error, newTree func(h plumbing.Hash, dir string)) error {
	if a == b {
		return nil
	}
	if newTree != nil && !b.IsZero() {
		newTree(b, strings.TrimSuffix(prefix, "/"))
	}
	load := func(h plumbing.Hash) (map[string]object.TreeEntry, []string, error) {
		m := map[string]object.TreeEntry{}
		var names []string
		if h.IsZero() {
			return m, nil, nil
		}
		t, err := object.GetTree(st, h)
		if err != nil {
			return nil, nil, fmt.Errorf("read tree %s: %w", prefix, err)
		}
		for _, e := range t.Entries {
			m[e.Name] = e
			names = append(names, e.Name)
		}
		return m, names, nil
	}
	am, an, err := load(a)
	if err != nil {
		return err
	}
	bm, bn, err := load(b)
	if err != nil {
		return err
	}
	names := an
	for _, n := range bn {
		if _, ok := am[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		ea, inA := am[n]
		eb, inB := bm[n]
		if inA && inB && ea.Hash == eb.Hash && ea.Mode == eb.Mode {
			continue
		}
		p := prefix + n
		aDir := inA && ea.Mode == filemode.Dir
		bDir := inB && eb.Mode == filemode.Dir
		if aDir || bDir {
			var ah, bh plumbing.Hash
			if aDir {
				ah = ea.Hash
			} else if inA {
				if err := visit(change{path: p, from: treeFile{p, ea.Mode, ea.Hash}}); err != nil {
					return err
				}
			}
			if bDir {
				bh = eb.Hash
			}
			if err := diffTrees(st, ah, bh, p+"/", visit, newTree); err != nil {
				return err
			}
			if inB && !bDir {
				if err := visit(change{path: p, to: treeFile{p, eb.Mode, eb.Hash}}); err != nil {
					return err
				}
			}
			continue
		}
		c := change{path: p}
		if inA {
			c.from = treeFile{p, ea.Mode, ea.Hash}
		}
		if inB {
			c.to = treeFile{p, eb.Mode, eb.Hash}
		}
		if err := visit(c); err != nil {
			return err
		}
	}
	return nil
}

// changedPaths lists the paths that differ between two trees, sorted.
func changedPaths(st storer.EncodedObjectStorer, a, b plumbing.Hash) ([]string, error) {
	var out []string
	err := diffTrees(st, a, b, "", func(c change) error {
		out = append(out, c.path)
		return nil
	}, nil)
	sort.Strings(out)
	return out, err
}

// validGlob checks a protected-path pattern.
func validGlob(p string) error {
	if p == "" {
		return errors.New("empty pattern")
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "**" {
			continue
		}
		if _, err := path.Match(seg, ""); err != nil {
			return err
		}
	}
	return nil
}

// aboveLiteralPrefix reports whether name is the literal prefix of
// pattern (its segments before the first one with a wildcard) or a
// directory above it: a symlink there redirects every path the pattern
// protects (.github -> ci makes ci/workflows/x.yml the workflow).
func aboveLiteralPrefix(pattern, name string) bool {
	ps := strings.Split(pattern, "/")
	ns := strings.Split(name, "/")
	lit := 0
	for lit < len(ps) && !strings.ContainsAny(ps[lit], "*?[\\") {
		lit++
	}
	if len(ns) > lit {
		return false
	}
	for i, n := range ns {
		if ps[i] != n {
			return false
		}
	}
	return true
}

// matchGlob matches a slash-separated path against a pattern in which
// "**" spans any number of directories (including none) and other
// segments use path.Match syntax.
func matchGlob(pattern, name string) bool {
	return matchSegs(strings.Split(pattern, "/"), strings.Split(name, "/"))
}

func matchSegs(ps, ns []string) bool {
	for len(ps) > 0 {
		if ps[0] == "**" {
			for i := 0; i <= len(ns); i++ {
				if matchSegs(ps[1:], ns[i:]) {
					return true
				}
			}
			return false
		}
		if len(ns) == 0 {
			return false
		}
		if ok, _ := path.Match(ps[0], ns[0]); !ok {
			return false
		}
		ps, ns = ps[1:], ns[1:]
	}
	return len(ns) == 0
}
