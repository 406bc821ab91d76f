package worktree

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/index"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

const taskGitConfig = `[core]
	repositoryformatversion = 0
	filemode = true
	bare = false
	logallrefupdates = true
`

// initTaskGit lays out a standalone repository in work/.git whose object
// store borrows the mirror's through alternates.
func initTaskGit(work, mirrorDir, branch string, base plumbing.Hash) error {
	g := filepath.Join(work, ".git")
	for _, d := range []string{"hooks", "info", "objects/info", "objects/pack", "refs/heads", "refs/tags", "refs/nightshift"} {
		if err := os.MkdirAll(filepath.Join(g, d), 0o755); err != nil {
			return err
		}
	}
	ref := filepath.Join(g, "refs/heads", filepath.FromSlash(branch))
	if err := os.MkdirAll(filepath.Dir(ref), 0o755); err != nil {
		return err
	}
	files := []struct {
		path, data string
	}{
		{"HEAD", "ref: refs/heads/" + branch + "\n"},
		{"config", taskGitConfig},
		{"description", "nightshift task clone\n"},
		{"info/exclude", ""},
		{"objects/info/alternates", filepath.Join(mirrorDir, "objects") + "\n"},
		{"refs/heads/" + branch, base.String() + "\n"},
		{"refs/nightshift/base", base.String() + "\n"},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(g, filepath.FromSlash(f.path)), []byte(f.data), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// treeFile is one non-tree entry of a tree, with its full path.
type treeFile struct {
	path string
	mode filemode.FileMode
	hash plumbing.Hash
}

// validName rejects tree entry names that could escape the worktree or
// write into .git.
func validName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") ||
		strings.EqualFold(name, ".git") {
		return fmt.Errorf("%w: tree entry %q", ErrUnsafeRepository, name)
	}
	return nil
}

// listTree returns every file of a tree, recursively, sorted by path.
func listTree(r *objectReader, root plumbing.Hash) ([]treeFile, error) {
	var out []treeFile
	var walk func(h plumbing.Hash, prefix string) error
	walk = func(h plumbing.Hash, prefix string) error {
		typ, b, err := r.read(h)
		if err != nil {
			return fmt.Errorf("read tree %q: %w", prefix, err)
		}
		if typ != plumbing.TreeObject {
			return fmt.Errorf("read tree %q: %s is a %s", prefix, h, typ)
		}
		return parseTree(b, func(name string, mode filemode.FileMode, eh plumbing.Hash) error {
			if err := validName(name); err != nil {
				return err
			}
			p := prefix + name
			if mode == filemode.Dir {
				return walk(eh, p+"/")
			}
			out = append(out, treeFile{path: p, mode: mode, hash: eh})
			return nil
		})
	}
	if err := walk(root, ""); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out, nil
}

// parseTree calls fn for each entry of a raw tree object.
func parseTree(b []byte, fn func(name string, mode filemode.FileMode, h plumbing.Hash) error) error {
	for len(b) > 0 {
		sp := bytes.IndexByte(b, ' ')
		if sp < 0 {
			return fmt.Errorf("%w: tree entry mode", errCorruptPack)
		}
		var mode uint32
		for _, c := range b[:sp] {
			if c < '0' || c > '7' {
				return fmt.Errorf("%w: tree entry mode", errCorruptPack)
			}
			mode = mode<<3 | uint32(c-'0')
		}
		b = b[sp+1:]
		nul := bytes.IndexByte(b, 0)
		if nul < 0 || len(b) < nul+21 {
			return fmt.Errorf("%w: tree entry name", errCorruptPack)
		}
		name := string(b[:nul])
		var h plumbing.Hash
		copy(h[:], b[nul+1:nul+21])
		b = b[nul+21:]
		if err := fn(name, filemode.FileMode(mode), h); err != nil {
			return err
		}
	}
	return nil
}

// checkout writes the tree of commit base into work and a matching index
// into work/.git/index, reading objects straight from the mirror's packs
// with several workers. It returns the number of files written.
func checkout(ctx context.Context, mirrorDir string, base plumbing.Hash, work string, workers int) (int, error) {
	ps, err := openPackSet(filepath.Join(mirrorDir, "objects"))
	if err != nil {
		return 0, err
	}
	defer ps.Close()
	fallback := mirrorStorage(mirrorDir)
	defer fallback.Close()
	r := newObjectReader(ps, fallback)
	typ, cb, err := r.read(base)
	if err != nil {
		return 0, fmt.Errorf("read commit: %w", err)
	}
	if typ != plumbing.CommitObject || !bytes.HasPrefix(cb, []byte("tree ")) || len(cb) < 45 {
		return 0, fmt.Errorf("read commit: %s is not a commit", base)
	}
	files, err := listTree(r, plumbing.NewHash(string(cb[5:45])))
	if err != nil {
		return 0, err
	}
	// Directories first, parents before children.
	dirs := map[string]bool{}
	for _, f := range files {
		for d := path.Dir(f.path); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	dl := make([]string, 0, len(dirs))
	for d := range dirs {
		dl = append(dl, d)
	}
	sort.Strings(dl)
	for _, d := range dl {
		if err := os.Mkdir(filepath.Join(work, filepath.FromSlash(d)), 0o755); err != nil && !os.IsExist(err) {
			return 0, err
		}
	}

	entries := make([]*index.Entry, len(files))
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, workers)
	const chunk = 32
	for w := range workers {
		wr := r
		var fb *filesystem.Storage
		if w > 0 {
			fb = mirrorStorage(mirrorDir)
			wr = newObjectReader(ps, fb)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if fb != nil {
				defer fb.Close()
			}
			for {
				if ctx.Err() != nil {
					errs[w] = ctx.Err()
					return
				}
				lo := int(next.Add(chunk)) - chunk
				if lo >= len(files) {
					return
				}
				for i := lo; i < min(lo+chunk, len(files)); i++ {
					e, err := writeFile(wr, work, files[i])
					if err != nil {
						errs[w] = fmt.Errorf("write %s: %w", files[i].path, err)
						return
					}
					entries[i] = e
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return 0, err
		}
	}
	if err := writeIndex(filepath.Join(work, ".git", "index"), entries); err != nil {
		return 0, fmt.Errorf("write index: %w", err)
	}
	return len(files), nil
}

// writeFile materializes one tree entry and returns its index entry.
func writeFile(r *objectReader, work string, f treeFile) (*index.Entry, error) {
	p := filepath.Join(work, filepath.FromSlash(f.path))
	e := &index.Entry{Name: f.path, Hash: f.hash, Mode: f.mode}
	if f.mode == filemode.Submodule {
		if err := os.Mkdir(p, 0o755); err != nil && !os.IsExist(err) {
			return nil, err
		}
		return e, nil
	}
	typ, content, err := r.read(f.hash)
	if err != nil {
		return nil, err
	}
	if typ != plumbing.BlobObject {
		return nil, fmt.Errorf("%s is a %s, not a blob", f.hash, typ)
	}
	if f.mode == filemode.Symlink {
		if err := os.Symlink(string(content), p); err != nil {
			return nil, err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return nil, err
		}
		fillStat(e, fi)
		return e, nil
	}
	perm := os.FileMode(0o644)
	if f.mode == filemode.Executable {
		perm = 0o755
	}
	out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return nil, err
	}
	if _, err := out.Write(content); err != nil {
		out.Close()
		return nil, err
	}
	fi, err := out.Stat()
	if err != nil {
		out.Close()
		return nil, err
	}
	if err := out.Close(); err != nil {
		return nil, err
	}
	fillStat(e, fi)
	return e, nil
}

// fillStat copies the stat data git compares to decide a file is unchanged.
func fillStat(e *index.Entry, fi os.FileInfo) {
	e.Size = uint32(fi.Size())
	e.ModifiedAt = fi.ModTime()
	if s, ok := fi.Sys().(*syscall.Stat_t); ok {
		e.CreatedAt = time.Unix(s.Ctim.Sec, s.Ctim.Nsec)
		e.Dev = uint32(s.Dev)
		e.Inode = uint32(s.Ino)
		e.UID = s.Uid
		e.GID = s.Gid
	}
}

// writeIndex writes a version 2 index with the given entries.
func writeIndex(path string, entries []*index.Entry) error {
	idx := &index.Index{Version: 2, Entries: entries}
	var buf bytes.Buffer
	if err := index.NewEncoder(&buf).Encode(idx); err != nil {
		return err
	}
	f, err := createLock(path)
	if err != nil {
		return err
	}
	return commitLock(f, path, buf.Bytes())
}
