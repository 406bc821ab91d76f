package worktree

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/go-git/go-billy/v5/memfs"
	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// taskStore reads objects from the task clone's own object directory and
// from its mirror, and writes only to the task clone. The mirror comes
// from trusted metadata, never from the clone's alternates file.
type taskStore struct {
	*filesystem.Storage // the task clone's .git
	mirror              *filesystem.Storage
}

// openTaskStore checks the task clone's .git for planted symlinks and
// restores the files the agent must not change, then opens its storage.
func openTaskStore(wt *Worktree) (*taskStore, error) {
	g := wt.gitDir()
	if err := checkGitDir(g); err != nil {
		return nil, err
	}
	// Restore alternates (in case no sandbox protected it) and drop a
	// planted commondir, which would redirect native git elsewhere.
	alt := filepath.Join(g, "objects", "info", "alternates")
	want := filepath.Join(wt.mirrorDir, "objects") + "\n"
	if b, err := os.ReadFile(alt); err != nil || string(b) != want {
		if err := os.WriteFile(alt, []byte(want), 0o644); err != nil {
			return nil, fmt.Errorf("worktree: restore alternates: %w", err)
		}
	}
	_ = os.Remove(filepath.Join(g, "commondir"))
	local := filesystem.NewStorageWithOptions(osfs.New(g), cache.NewObjectLRU(16<<20),
		filesystem.Options{AlternatesFS: memfs.New()})
	return &taskStore{Storage: local, mirror: mirrorStorage(wt.mirrorDir)}, nil
}

// checkGitDir refuses a .git that contains symlinks: following one would
// make this process read or write another task's files.
func checkGitDir(g string) error {
	fi, err := os.Lstat(g)
	if err != nil {
		return fmt.Errorf("worktree: task clone: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: .git is not a directory", ErrUnsafeRepository)
	}
	return filepath.WalkDir(g, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			rel, _ := filepath.Rel(filepath.Dir(g), p)
			return fmt.Errorf("%w: symlink %s", ErrUnsafeRepository, rel)
		}
		return nil
	})
}

func (s *taskStore) Close() error {
	s.mirror.Close()
	return s.Storage.Close()
}

func (s *taskStore) EncodedObject(t plumbing.ObjectType, h plumbing.Hash) (plumbing.EncodedObject, error) {
	o, err := s.mirror.EncodedObject(t, h)
	if errors.Is(err, plumbing.ErrObjectNotFound) {
		return s.Storage.EncodedObject(t, h)
	}
	return o, err
}

func (s *taskStore) HasEncodedObject(h plumbing.Hash) error {
	if err := s.mirror.HasEncodedObject(h); err == nil {
		return nil
	}
	return s.Storage.HasEncodedObject(h)
}

func (s *taskStore) EncodedObjectSize(h plumbing.Hash) (int64, error) {
	n, err := s.mirror.EncodedObjectSize(h)
	if errors.Is(err, plumbing.ErrObjectNotFound) {
		return s.Storage.EncodedObjectSize(h)
	}
	return n, err
}

// overlay keeps new objects in memory on top of another store; Diff uses
// it to snapshot uncommitted changes without writing into the clone.
type overlay struct {
	storer.EncodedObjectStorer
	mem map[plumbing.Hash]plumbing.EncodedObject
}

func newOverlay(base storer.EncodedObjectStorer) *overlay {
	return &overlay{EncodedObjectStorer: base, mem: map[plumbing.Hash]plumbing.EncodedObject{}}
}

func (o *overlay) SetEncodedObject(obj plumbing.EncodedObject) (plumbing.Hash, error) {
	h := obj.Hash()
	o.mem[h] = obj
	return h, nil
}

func (o *overlay) EncodedObject(t plumbing.ObjectType, h plumbing.Hash) (plumbing.EncodedObject, error) {
	if obj, ok := o.mem[h]; ok {
		if t != plumbing.AnyObject && obj.Type() != t {
			return nil, plumbing.ErrObjectNotFound
		}
		return obj, nil
	}
	return o.EncodedObjectStorer.EncodedObject(t, h)
}

func (o *overlay) HasEncodedObject(h plumbing.Hash) error {
	if _, ok := o.mem[h]; ok {
		return nil
	}
	return o.EncodedObjectStorer.HasEncodedObject(h)
}

func (o *overlay) EncodedObjectSize(h plumbing.Hash) (int64, error) {
	if obj, ok := o.mem[h]; ok {
		return obj.Size(), nil
	}
	return o.EncodedObjectStorer.EncodedObjectSize(h)
}
