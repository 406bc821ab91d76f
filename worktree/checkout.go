package worktree

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
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
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
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
func listTree(st storer.EncodedObjectStorer, root plumbing.Hash) ([]treeFile, error) {
	var out []treeFile
	var walk func(h plumbing.Hash, prefix string) error
	walk = func(h plumbing.Hash, prefix string) error {
		t, err := object.GetTree(st, h)
		if err != nil {
			return fmt.Errorf("read tree %s: %w", prefix, err)
		}
		for _, e := range t.Entries {
			if err := validName(e.Name); err != nil {
				return err
			}
			p := prefix + e.Name
			if e.Mode == filemode.Dir {
				if err := walk(e.Hash, p+"/"); err != nil {
					return err
				}
				continue
			}
			out = append(out, treeFile{path: p, mode: e.Mode, hash: e.Hash})
		}
		return nil
	}
	if err := walk(root, ""); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out, nil
}

// checkout writes the tree of commit base into work and a matching index
// into work/.git/index, reading objects straight from the mirror with
// several workers. It returns the number of files written.
func checkout(ctx context.Context, mirrorDir string, base plumbing.Hash, work string, workers int) (int, error) {
	st := mirrorStorage(mirrorDir)
	defer st.Close()
	c, err := object.GetCommit(st, base)
	if err != nil {
		return 0, fmt.Errorf("read commit: %w", err)
	}
	files, err := listTree(st, c.TreeHash)
	if err != nil {
		return 0, err
	}
	// Directories first, parents before children.
	dirs := map[string]bool{}
	for _, f := range files {
		for d := filepath.Dir(f.path); d != "." && !dirs[d]; d = filepath.Dir(d) {
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
		ws := st
		if w > 0 {
			ws = mirrorStorage(mirrorDir)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if w > 0 {
				defer ws.Close()
			}
			buf := make([]byte, 64<<10)
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
					e, err := writeFile(ws, work, files[i], buf)
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
func writeFile(st storer.EncodedObjectStorer, work string, f treeFile, buf []byte) (*index.Entry, error) {
	p := filepath.Join(work, filepath.FromSlash(f.path))
	e := &index.Entry{Name: f.path, Hash: f.hash, Mode: f.mode}
	switch f.mode {
	case filemode.Submodule:
		if err := os.Mkdir(p, 0o755); err != nil && !os.IsExist(err) {
			return nil, err
		}
		return e, nil
	case filemode.Symlink:
		o, err := st.EncodedObject(plumbing.BlobObject, f.hash)
		if err != nil {
			return nil, err
		}
		r, err := o.Reader()
		if err != nil {
			return nil, err
		}
		target, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			return nil, err
		}
		if err := os.Symlink(string(target), p); err != nil {
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
	o, err := st.EncodedObject(plumbing.BlobObject, f.hash)
	if err != nil {
		return nil, err
	}
	r, err := o.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return nil, err
	}
	if _, err := io.CopyBuffer(out, r, buf); err != nil {
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
	tmp := path + ".lock"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	bw := newBufWriter(f)
	if err := index.NewEncoder(bw).Encode(idx); err != nil {
		f.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func newBufWriter(w io.Writer) *bufio.Writer { return bufio.NewWriterSize(w, 256<<10) }
