package worktree

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/go-git/go-billy/v5/memfs"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// taskStore reads objects from the task clone's own object directory and
// from its mirror, and writes only to the task clone. The mirror comes
// from trusted metadata, never from the clone's alternates file. Every file
// of the clone is reached through work and git, which never resolve a path
// outside the clone.
type taskStore struct {
	*filesystem.Storage // the task clone's .git
	mirror              *filesystem.Storage
	work                *os.Root // the work tree
	git                 *rootFS  // work/.git
}

// openTaskStore checks the task clone's .git for planted symlinks and
// opens its storage confined to the clone.
func openTaskStore(wt *Worktree) (*taskStore, error) {
	work, err := openRootNoFollow(wt.Dir)
	if err != nil {
		return nil, fmt.Errorf("worktree: task clone: %w", err)
	}
	g, err := subRoot(work, ".git")
	if err != nil {
		work.Close()
		if errors.Is(err, ErrUnsafeRepository) {
			return nil, err
		}
		return nil, fmt.Errorf("worktree: task clone: %w", err)
	}
	if err := checkGitDir(g); err != nil {
		g.Close()
		work.Close()
		return nil, err
	}
	gfs := newRootFS(g, wt.gitDir())
	local := filesystem.NewStorageWithOptions(gfs, cache.NewObjectLRU(16<<20),
		filesystem.Options{AlternatesFS: memfs.New()})
	return &taskStore{Storage: local, mirror: mirrorStorage(wt.mirrorDir), work: work, git: gfs}, nil
}

// checkGitDir refuses a .git that contains symlinks (even those os.Root
// would confine): nothing legitimate puts one there.
func checkGitDir(g *os.Root) error {
	return fs.WalkDir(g.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return fmt.Errorf("%w: symlink .git/%s", ErrUnsafeRepository, p)
		}
		return nil
	})
}

// recoverUnsafe turns a panic inside go-git, reading objects or an index
// the agent shaped, into ErrUnsafeRepository instead of a crashed host.
func recoverUnsafe(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: reading the repository failed: %v", ErrUnsafeRepository, r)
	}
}

func (s *taskStore) Close() error {
	s.mirror.Close()
	err := s.Storage.Close()
	s.git.Close()
	s.work.Close()
	return err
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
