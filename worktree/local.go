package worktree

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/go-git/go-billy/v5/memfs"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/server"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"github.com/go-git/go-git/v5/utils/ioutil"
	"github.com/klauspost/compress/zlib"
)

// Local repositories (a path or a file:// URL) are read and written in
// this process with go-git's storage, never through git-upload-pack or
// git-receive-pack: a repository an agent could have written may carry
// hooks (pre-receive, post-update, reference-transaction...) and config
// (core.fsmonitor, core.hooksPath, uploadpack.packObjectsHook) that native
// git would run as the host's user. Nothing here reads the repository's
// config or hooks; its alternates are ignored; every file is opened through
// an os.Root at the repository, so links inside it cannot reach elsewhere.

// localRepo is an opened local repository.
type localRepo struct {
	path  string // where it really is (symlinks resolved)
	bare  bool
	git   *rootFS // its git directory
	top   *os.Root
	store *filesystem.Storage
}

func (r *localRepo) Close() error {
	err := r.store.Close()
	r.git.Close()
	if r.top != nil {
		r.top.Close()
	}
	return err
}

// forbidden reports whether p (already resolved) lies under one of the
// directories no repository may come from.
func (m *Manager) forbidden(p string) (string, bool) {
	for _, d := range m.forbid {
		rel, err := filepath.Rel(d, p)
		if err == nil && (rel == "." || rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))) {
			return d, true
		}
	}
	return "", false
}

// openLocal opens the repository at path (bare, or a work tree with a .git
// directory) for in-process fetches and pushes, refusing one under a
// forbidden directory however the path is spelled.
func (m *Manager) openLocal(path string) (*localRepo, error) {
	resolved, err := filepath.EvalSymlinks(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", transport.ErrRepositoryNotFound, path)
	}
	if err != nil {
		return nil, fmt.Errorf("worktree: open %s: %w", path, err)
	}
	if d, bad := m.forbidden(resolved); bad {
		return nil, fmt.Errorf("%w: %s is under %s", ErrForbiddenRepo, path, d)
	}
	top, err := os.OpenRoot(resolved)
	if err != nil {
		return nil, fmt.Errorf("worktree: open %s: %w", path, err)
	}
	// The path may have changed between resolving and opening it: check
	// where the open directory really is.
	real, err := rootPath(top)
	if err != nil {
		top.Close()
		return nil, fmt.Errorf("worktree: open %s: %w", path, err)
	}
	if d, bad := m.forbidden(real); bad {
		top.Close()
		return nil, fmt.Errorf("%w: %s is under %s", ErrForbiddenRepo, path, d)
	}
	r := &localRepo{path: real}
	if isGitDir(top) {
		r.bare = true
		r.git = newRootFS(top, real)
	} else {
		sub, err := subRoot(top, ".git")
		if err != nil {
			top.Close()
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("%w: %s", transport.ErrRepositoryNotFound, path)
			}
			return nil, fmt.Errorf("worktree: open %s: %w", path, err)
		}
		if !isGitDir(sub) {
			sub.Close()
			top.Close()
			return nil, fmt.Errorf("%w: %s", transport.ErrRepositoryNotFound, path)
		}
		r.top = top
		r.git = newRootFS(sub, filepath.Join(real, ".git"))
	}
	r.store = filesystem.NewStorageWithOptions(bufferedIdx(r.git), cache.NewObjectLRUDefault(),
		filesystem.Options{AlternatesFS: memfs.New()})
	return r, nil
}

func isGitDir(r *os.Root) bool {
	if fi, err := r.Lstat("HEAD"); err != nil || !fi.Mode().IsRegular() {
		return false
	}
	fi, err := r.Lstat("objects")
	return err == nil && fi.IsDir()
}

// localLoader serves go-git's in-process upload-pack from local
// repositories opened with openLocal; close releases them.
type localLoader struct {
	m     *Manager
	mu    sync.Mutex
	repos []*localRepo
}

func (l *localLoader) Load(ep *transport.Endpoint) (storer.Storer, error) {
	r, err := l.m.openLocal(ep.Path)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.repos = append(l.repos, r)
	l.mu.Unlock()
	return refStore{Storage: r.store, r: r}, nil
}

// refStore is a local repository's storage whose reference listing reads
// the refs the way localRepo.refs does, so an update in progress (another
// task's push holding its lock file) does not break a clone or fetch.
type refStore struct {
	*filesystem.Storage
	r *localRepo
}

func (s refStore) IterReferences() (storer.ReferenceIter, error) {
	refs, err := s.r.refs()
	if err != nil {
		return nil, err
	}
	list := make([]*plumbing.Reference, 0, len(refs)+1)
	if head, err := s.Storage.Reference(plumbing.HEAD); err == nil {
		list = append(list, head)
	}
	for name, h := range refs {
		list = append(list, plumbing.NewHashReference(plumbing.ReferenceName(name), h))
	}
	return storer.NewReferenceSliceIter(list), nil
}

func (l *localLoader) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.repos {
		r.Close()
	}
	l.repos = nil
}

// localTransport returns an in-process transport for file endpoints and
// a function releasing what it opened. go-git's server advertises the
// refs; the pack is built here, with the same tree-diff walk pushes use
// and no delta search (go-git's own upload-pack walks whole histories and
// searches deltas, minutes on a large repository).
func (m *Manager) localTransport() (transport.Transport, func()) {
	l := &localLoader{m: m}
	return &localClient{Transport: server.NewClient(l), loader: l}, l.close
}

type localClient struct {
	transport.Transport
	loader *localLoader
}

func (c *localClient) NewUploadPackSession(ep *transport.Endpoint, am transport.AuthMethod) (transport.UploadPackSession, error) {
	sess, err := c.Transport.NewUploadPackSession(ep, am)
	if err != nil {
		return nil, err
	}
	c.loader.mu.Lock()
	st := c.loader.repos[len(c.loader.repos)-1].store
	c.loader.mu.Unlock()
	return &localUploadSession{UploadPackSession: sess, st: st}, nil
}

type localUploadSession struct {
	transport.UploadPackSession
	st storer.EncodedObjectStorer
}

func (s *localUploadSession) UploadPack(ctx context.Context, req *packp.UploadPackRequest) (_ *packp.UploadPackResponse, err error) {
	defer recoverUnsafe(&err)
	if req.IsEmpty() {
		return nil, transport.ErrEmptyUploadPackRequest
	}
	if len(req.Shallows) > 0 || req.Depth != nil && !req.Depth.IsZero() {
		return nil, errors.New("worktree: shallow fetches from local repositories are not supported")
	}
	seen := map[plumbing.Hash]bool{}
	var hashes []plumbing.Hash
	add := func(h plumbing.Hash, _ string) {
		if !seen[h] {
			seen[h] = true
			hashes = append(hashes, h)
		}
	}
	haves := append([]plumbing.Hash(nil), req.Haves...)
	for _, w := range req.Wants {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// Peel annotated tags down to what they name.
		for range 10 {
			o, err := s.st.EncodedObject(plumbing.AnyObject, w)
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", w, err)
			}
			if o.Type() != plumbing.TagObject {
				break
			}
			add(w, "")
			t, err := object.DecodeTag(s.st, o)
			if err != nil {
				return nil, fmt.Errorf("read tag %s: %w", w, err)
			}
			w = t.Target
		}
		o, err := s.st.EncodedObject(plumbing.AnyObject, w)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", w, err)
		}
		switch o.Type() {
		case plumbing.CommitObject:
			items, err := objectsToSend(ctx, s.st, w, haves)
			if err != nil {
				return nil, err
			}
			for _, it := range items {
				add(it.hash, "")
			}
			haves = append(haves, w)
		case plumbing.TreeObject:
			if err := diffTrees(s.st, plumbing.ZeroHash, w, "", func(c change) error {
				if c.to.mode != filemode.Submodule {
					add(c.to.hash, "")
				}
				return nil
			}, add); err != nil {
				return nil, err
			}
		default:
			add(w, "")
		}
	}
	pr, pw := io.Pipe()
	go func() {
		var err error
		defer func() { pw.CloseWithError(err) }()
		defer recoverUnsafe(&err)
		err = encodePack(pw, s.st, hashes)
	}()
	return packp.NewUploadPackResponseWithPackfile(req, ioutil.NewContextReadCloser(ctx, pr)), nil
}

// refs lists the repository's branches and tags (loose and packed).
func (r *localRepo) refs() (map[string]plumbing.Hash, error) {
	// The loose refs are read here rather than through go-git, which fails
	// on the lock file (empty until written) of an update in progress,
	// such as another task's push to the same repository.
	out := map[string]plumbing.Hash{}
	err := fs.WalkDir(r.git.root.FS(), "refs", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) { // removed meanwhile
				return nil
			}
			return err
		}
		if d.IsDir() || strings.HasSuffix(name, ".lock") || !d.Type().IsRegular() {
			return nil
		}
		b, err := readFileLimit(r.git.root, filepath.FromSlash(name), 4096)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if v := strings.TrimSpace(string(b)); hexSHA.MatchString(v) { // not a symbolic ref
			out[name] = plumbing.NewHash(v)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = packedRefs(r.git, func(name string, h plumbing.Hash) bool {
		if _, loose := out[name]; !loose { // a loose ref wins over its packed value
			out[name] = h
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// packedRefs calls fn with each well-formed "<sha> refs/..." line of the
// git directory's packed-refs until fn returns false; a missing file has
// none. The file is read through a small buffer, not whole.
func packedRefs(g *rootFS, fn func(name string, h plumbing.Hash) bool) error {
	const limit = 256 << 20
	f, err := openChecked(g.root, "packed-refs", os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return &fs.PathError{Op: "read", Path: "packed-refs", Err: errNotRegular}
	}
	if fi.Size() > limit {
		return &fs.PathError{Op: "read", Path: "packed-refs", Err: ErrFileTooLarge}
	}
	sc := bufio.NewScanner(io.LimitReader(f, fi.Size()))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if len(l) > 41 && l[40] == ' ' && strings.HasPrefix(l[41:], "refs/") && hexSHA.MatchString(l[:40]) {
			if !fn(l[41:], plumbing.NewHash(l[:40])) {
				return nil
			}
		}
	}
	return sc.Err()
}

// readLocalRef returns a ref's value from its loose file or packed-refs in
// a git directory; zero when it does not exist.
func readLocalRef(g *rootFS, name plumbing.ReferenceName) (plumbing.Hash, error) {
	b, err := readFileLimit(g.root, filepath.FromSlash(name.String()), 4096)
	if err == nil {
		s := strings.TrimSpace(string(b))
		if !hexSHA.MatchString(s) {
			return plumbing.ZeroHash, fmt.Errorf("worktree: ref %s is not a hash", name)
		}
		return plumbing.NewHash(s), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return plumbing.ZeroHash, err
	}
	var packed plumbing.Hash
	err = packedRefs(g, func(n string, h plumbing.Hash) bool {
		if n != name.String() {
			return true
		}
		packed = h
		return false
	})
	return packed, err
}

// receive stores a pack in the repository and moves ref from old to new
// the way git does it: a lock file created exclusively, the current value
// compared, the new value renamed into place. No hook runs.
func (r *localRepo) receive(ctx context.Context, ref plumbing.ReferenceName, old, new plumbing.Hash, pack io.Reader, hasObjects bool) (reason, msg string, err error) {
	if !r.bare {
		if b, err := readFileLimit(r.git.root, "HEAD", 4096); err == nil && strings.TrimSpace(string(b)) == "ref: "+ref.String() {
			return PushRejected, "refusing to update the branch checked out in a non-bare repository", nil
		}
	}
	lockName := filepath.FromSlash(ref.String()) + ".lock"
	if err := r.git.root.MkdirAll(filepath.Dir(lockName), 0o755); err != nil {
		return "", "", err
	}
	lock, err := openChecked(r.git.root, lockName, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return PushRejected, "the remote branch is locked by another update", nil
	}
	if err != nil {
		return "", "", err
	}
	done := false
	defer func() {
		if !done {
			lock.Close()
			_ = r.git.root.Remove(lockName)
		}
	}()
	cur, err := readLocalRef(r.git, ref)
	if err != nil {
		return "", "", err
	}
	if cur != old {
		return PushRejected, fmt.Sprintf("stale info: the remote branch moved to %s", cur), nil
	}
	if hasObjects {
		if err := r.unpack(ctx, pack); err != nil {
			return "", "", fmt.Errorf("store pack: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return "", "", err
	}
	if err := r.store.HasEncodedObject(new); err != nil {
		return PushRejected, "the pushed commit is missing from the remote after the update", nil
	}
	if _, err := lock.Write([]byte(new.String() + "\n")); err != nil {
		return "", "", err
	}
	if err := lock.Close(); err != nil {
		return "", "", err
	}
	done = true
	if err := r.git.root.Rename(lockName, filepath.FromSlash(ref.String())); err != nil {
		_ = r.git.root.Remove(lockName)
		return "", "", err
	}
	return "", "", nil
}

// unpack stores the objects of a pack writePack made (whole objects, no
// deltas) as loose objects of the repository, as git's unpack-objects
// does, one object at a time through a small buffer: go-git's pack parser
// would hold each object whole.
func (r *localRepo) unpack(ctx context.Context, pack io.Reader) error {
	br := bufio.NewReaderSize(pack, 64<<10)
	var hdr [12]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return err
	}
	if string(hdr[:4]) != "PACK" || binary.BigEndian.Uint32(hdr[4:]) != 2 {
		return errors.New("not a version 2 pack")
	}
	lw := &looseWriter{git: r.git}
	has := func(h plumbing.Hash) bool { return r.store.HasEncodedObject(h) == nil }
	var zr io.ReadCloser
	for range binary.BigEndian.Uint32(hdr[8:]) {
		if err := ctx.Err(); err != nil {
			return err
		}
		c, err := br.ReadByte()
		if err != nil {
			return err
		}
		t := plumbing.ObjectType(c >> 4 & 7)
		size, shift := int64(c&0x0f), 4
		for c&0x80 != 0 {
			if c, err = br.ReadByte(); err != nil {
				return err
			}
			if shift > 56 {
				return errors.New("object size overflows")
			}
			size |= int64(c&0x7f) << shift
			shift += 7
		}
		if !t.Valid() || t == plumbing.OFSDeltaObject || t == plumbing.REFDeltaObject {
			return fmt.Errorf("unexpected object type %d", t)
		}
		if zr == nil {
			if zr, err = zlib.NewReader(br); err != nil {
				return err
			}
		} else if err := zr.(zlib.Resetter).Reset(br, nil); err != nil {
			return err
		}
		if _, err := lw.write(t, size, zr, has); err != nil {
			return err
		}
		// Read to the end of the stream: its checksum.
		if n, err := io.Copy(io.Discard, zr); err != nil || n != 0 {
			return fmt.Errorf("object longer than its header says: %v", err)
		}
	}
	return nil
}
