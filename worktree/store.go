package worktree

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/go-git/go-billy/v5/memfs"
	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"github.com/klauspost/compress/zlib"
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
	loose               *looseWriter
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
	// Objects over largeObject are read from their files as they are
	// used, never held whole.
	local := filesystem.NewStorageWithOptions(gfs, cache.NewObjectLRU(16<<20),
		filesystem.Options{AlternatesFS: memfs.New(), LargeObjectThreshold: largeObject})
	mir := filesystem.NewStorageWithOptions(bufferedIdx(osfs.New(wt.mirrorDir)), cache.NewObjectLRU(32<<20),
		filesystem.Options{KeepDescriptors: true, LargeObjectThreshold: largeObject})
	return &taskStore{Storage: local, mirror: mir, work: work, git: gfs}, nil
}

// largeObject is the size over which an object is streamed from its file.
const largeObject = 1 << 20

// putBlob stores exactly size bytes of r as a loose blob of the clone,
// streaming, unless the clone or mirror already has it.
func (s *taskStore) putBlob(r io.Reader, size int64) (plumbing.Hash, error) {
	if s.loose == nil {
		s.loose = &looseWriter{git: s.git}
	}
	return s.loose.write(plumbing.BlobObject, size, r, func(h plumbing.Hash) bool { return s.HasEncodedObject(h) == nil })
}

// looseWriter writes loose objects into a git directory, streaming: each
// is compressed into a temporary file under objects/ while hashed, then
// renamed to its name. It reuses one compressor and one buffer.
type looseWriter struct {
	git *rootFS
	zw  *zlib.Writer
	buf []byte
}

// write stores exactly size bytes of r as an object of type t, unless has
// says the repository has it already, and returns its hash.
func (l *looseWriter) write(t plumbing.ObjectType, size int64, r io.Reader, has func(plumbing.Hash) bool) (_ plumbing.Hash, err error) {
	if l.buf == nil {
		l.buf = make([]byte, 64<<10)
	}
	f, err := l.git.TempFile("objects", "tmp_obj_")
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("store object: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if f != nil {
			f.Close()
		}
		if err != nil {
			_ = l.git.Remove(tmp)
		}
	}()
	if l.zw == nil {
		if l.zw, err = zlib.NewWriterLevel(f, zlib.BestSpeed); err != nil {
			return plumbing.ZeroHash, err
		}
	} else {
		l.zw.Reset(f)
	}
	h := plumbing.NewHasher(t, size)
	if _, err := fmt.Fprintf(l.zw, "%s %d\x00", t, size); err != nil {
		return plumbing.ZeroHash, err
	}
	n, err := io.CopyBuffer(io.MultiWriter(l.zw, h), io.LimitReader(r, size), l.buf)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if n != size {
		return plumbing.ZeroHash, io.ErrUnexpectedEOF
	}
	if err := l.zw.Close(); err != nil {
		return plumbing.ZeroHash, err
	}
	err = f.Close()
	f = nil
	if err != nil {
		return plumbing.ZeroHash, err
	}
	sum := h.Sum()
	if has(sum) {
		_ = l.git.Remove(tmp)
		return sum, nil
	}
	hex := sum.String()
	if err := l.git.Rename(tmp, filepath.Join("objects", hex[:2], hex[2:])); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("store object: %w", err)
	}
	return sum, nil
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

// go-git loads a store's pack indexes on first use and keeps what it
// loaded even when one of them failed to load (too many open files, a
// read error): every object of the packs after it is then "not found" for
// the life of the store. mirrorFailed drops such a partial index, so the
// next lookup loads them all again, and the error is reported as itself.
func (s *taskStore) mirrorFailed(err error) error {
	if err != nil && !errors.Is(err, plumbing.ErrObjectNotFound) {
		s.mirror.Reindex()
		return fmt.Errorf("worktree: read the mirror: %w", err)
	}
	return err
}

func (s *taskStore) EncodedObject(t plumbing.ObjectType, h plumbing.Hash) (plumbing.EncodedObject, error) {
	o, err := s.mirror.EncodedObject(t, h)
	if errors.Is(err, plumbing.ErrObjectNotFound) {
		return s.Storage.EncodedObject(t, h)
	}
	return o, s.mirrorFailed(err)
}

func (s *taskStore) HasEncodedObject(h plumbing.Hash) error {
	err := s.mirror.HasEncodedObject(h)
	if err == nil {
		return nil
	}
	if err := s.mirrorFailed(err); !errors.Is(err, plumbing.ErrObjectNotFound) {
		return err
	}
	return s.Storage.HasEncodedObject(h)
}

func (s *taskStore) EncodedObjectSize(h plumbing.Hash) (int64, error) {
	n, err := s.mirror.EncodedObjectSize(h)
	if errors.Is(err, plumbing.ErrObjectNotFound) {
		return s.Storage.EncodedObjectSize(h)
	}
	return n, s.mirrorFailed(err)
}

// overlay keeps new objects in memory on top of another store; Diff uses
// it to snapshot uncommitted changes without writing into the clone.
type overlay struct {
	storer.EncodedObjectStorer
	mem  map[plumbing.Hash]plumbing.EncodedObject
	kept int64 // bytes of blob content held in mem
	buf  []byte
}

// maxDiffKept bounds the new blob content an overlay holds for line
// diffs; blobs past it are diffed as binary.
const maxDiffKept = 64 << 20

// putBlob hashes exactly size bytes of r as a blob. The overlay keeps the
// content only of a blob its base lacks, up to maxDiffBytes, while what it
// keeps stays under maxDiffKept; of the others it keeps a placeholder that
// Diff reports as binary.
func (o *overlay) putBlob(r io.Reader, size int64) (plumbing.Hash, error) {
	if o.buf == nil {
		o.buf = make([]byte, 64<<10)
	}
	if size <= maxDiffBytes && o.kept+size <= maxDiffKept {
		b := make([]byte, size)
		if _, err := io.ReadFull(r, b); err != nil {
			return plumbing.ZeroHash, err
		}
		h := plumbing.ComputeHash(plumbing.BlobObject, b)
		if _, ok := o.mem[h]; ok || o.EncodedObjectStorer.HasEncodedObject(h) == nil {
			return h, nil
		}
		mo := &plumbing.MemoryObject{}
		mo.SetType(plumbing.BlobObject)
		mo.SetSize(size)
		if _, err := mo.Write(b); err != nil {
			return plumbing.ZeroHash, err
		}
		o.mem[h] = mo
		o.kept += size
		return h, nil
	}
	h, err := hashReader(r, size, o.buf)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if _, ok := o.mem[h]; !ok && o.EncodedObjectStorer.HasEncodedObject(h) != nil {
		o.mem[h] = &omittedBlob{hash: h, size: size}
	}
	return h, nil
}

// omittedBlob stands for a blob whose content an overlay did not keep.
type omittedBlob struct {
	hash plumbing.Hash
	size int64
}

var errOmitted = errors.New("worktree: blob content not kept")

func (b *omittedBlob) Hash() plumbing.Hash             { return b.hash }
func (b *omittedBlob) Type() plumbing.ObjectType       { return plumbing.BlobObject }
func (b *omittedBlob) SetType(plumbing.ObjectType)     {}
func (b *omittedBlob) Size() int64                     { return b.size }
func (b *omittedBlob) SetSize(int64)                   {}
func (b *omittedBlob) Reader() (io.ReadCloser, error)  { return nil, errOmitted }
func (b *omittedBlob) Writer() (io.WriteCloser, error) { return nil, errOmitted }

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
