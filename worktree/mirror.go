package worktree

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/sideband"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/filesystem"

	gogit "github.com/go-git/go-git/v5"
)

// mirror is the bare cache of one repository.
type mirror struct {
	key string // normalized repository location
	url string // what the transport dials
	dir string // MirrorDir/<name>.git
}

// mirrorState is stored in <mirror>/nightshift.json.
type mirrorState struct {
	Repo      string    `json:"repo"`
	FetchedAt time.Time `json:"fetched_at"`
}

const mirrorStateFile = "nightshift.json"

// mirrorSpecs are the refs a mirror keeps in sync with its remote.
var mirrorSpecs = []config.RefSpec{"+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// normalizeRepo returns the transport URL and a stable cache key for a
// repository location; credentials in URLs are dropped from the key.
func normalizeRepo(repo string) (dial, key string, err error) {
	if strings.Contains(repo, "://") {
		u, err := url.Parse(repo)
		if err != nil {
			return "", "", fmt.Errorf("worktree: parse repo URL: %w", err)
		}
		if u.Scheme == "file" {
			p := filepath.Clean(u.Path)
			return p, p, nil
		}
		k := *u
		k.User = nil
		if u.Scheme == "ssh" && u.User != nil {
			k.User = url.User(u.User.Username())
		}
		return repo, strings.TrimSuffix(strings.TrimSuffix(k.String(), "/"), ".git"), nil
	}
	if ep, err := transport.NewEndpoint(repo); err == nil && ep.Protocol == "ssh" {
		// scp-like user@host:path
		return repo, strings.TrimSuffix(repo, ".git"), nil
	}
	abs, err := filepath.Abs(repo)
	if err != nil {
		return "", "", fmt.Errorf("worktree: repo path: %w", err)
	}
	return abs, abs, nil
}

func (m *Manager) mirrorFor(repo string) (*mirror, error) {
	dial, key, err := normalizeRepo(repo)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(key))
	base := strings.TrimSuffix(filepath.Base(strings.TrimSuffix(key, "/")), ".git")
	base = unsafeName.ReplaceAllString(base, "_")
	if len(base) > 40 {
		base = base[:40]
	}
	name := base + "-" + hex.EncodeToString(sum[:6]) + ".git"
	return &mirror{key: key, url: dial, dir: filepath.Join(m.cfg.MirrorDir, name)}, nil
}

// useMirror keeps GC away from a mirror while it is read.
func (m *Manager) useMirror(mir *mirror) func() {
	l := m.mirrorLock(mir.dir)
	l.RLock()
	return l.RUnlock
}

func (m *Manager) mirrorLock(dir string) *sync.RWMutex {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.mirrors[dir]
	if !ok {
		l = &sync.RWMutex{}
		m.mirrors[dir] = l
	}
	return l
}

// sync fetches the mirror, joining a fetch of the same mirror (and extra
// refspecs) already in flight.
func (m *Manager) sync(ctx context.Context, mir *mirror, auth Auth, progress io.Writer, extra []string) error {
	key := mir.dir + "\x00" + strings.Join(extra, "\x00")
	return m.flights.do(ctx, key, progress, func(out io.Writer) error {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return errors.New("worktree: manager closed")
		}
		m.wg.Add(1)
		m.mu.Unlock()
		defer m.wg.Done()
		// The fetch outlives a caller that gives up: others may be waiting.
		fctx, cancel := context.WithTimeout(m.bg, m.cfg.FetchTimeout)
		defer cancel()
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) > m.cfg.FetchTimeout {
			fctx, cancel = context.WithDeadline(m.bg, dl)
			defer cancel()
		}
		return m.fetch(fctx, mir, auth, out, extra)
	})
}

// fetch brings the mirror up to date with its remote.
func (m *Manager) fetch(ctx context.Context, mir *mirror, auth Auth, progress io.Writer, extra []string) error {
	atomic.AddInt64(&m.fetches, 1)
	start := time.Now()
	unlock, err := lockFile(ctx, mir.dir+".lock")
	if err != nil {
		return err
	}
	defer unlock()

	if _, err := os.Stat(filepath.Join(mir.dir, "HEAD")); err != nil {
		if _, err := gogit.PlainInit(mir.dir, true); err != nil && !errors.Is(err, gogit.ErrRepositoryAlreadyExists) {
			return fmt.Errorf("init mirror: %w", err)
		}
	}
	st := filesystem.NewStorageWithOptions(bufferedIdx(osfs.New(mir.dir)), cache.NewObjectLRUDefault(), filesystem.Options{})
	defer st.Close()

	ep, err := transport.NewEndpoint(mir.url)
	if err != nil {
		return fmt.Errorf("endpoint: %w", err)
	}
	var tr transport.Transport
	var am transport.AuthMethod
	if ep.Protocol == "file" {
		var release func()
		tr, release = m.localTransport()
		defer release()
	} else if tr, am, err = m.transport(ep, auth); err != nil {
		return err
	}
	sess, err := tr.NewUploadPackSession(ep, am)
	if err != nil {
		return fmt.Errorf("open session: %w", err)
	}
	defer sess.Close()
	ar, err := sess.AdvertisedReferencesContext(ctx)
	if errors.Is(err, transport.ErrEmptyRemoteRepository) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list remote refs: %w", err)
	}
	remote, err := ar.AllReferences()
	if err != nil {
		return fmt.Errorf("list remote refs: %w", err)
	}
	specs := append([]config.RefSpec(nil), mirrorSpecs...)
	for _, e := range extra {
		specs = append(specs, config.RefSpec(e))
	}
	if len(extra) > 0 {
		specs = specs[len(mirrorSpecs):]
	}

	// What the remote has that matches our specs.
	updates := map[plumbing.ReferenceName]plumbing.Hash{}
	for name, r := range remote {
		if r.Type() != plumbing.HashReference {
			continue
		}
		for _, s := range specs {
			if s.Match(name) {
				updates[s.Dst(name)] = r.Hash()
				break
			}
		}
	}
	var wants []plumbing.Hash
	seen := map[plumbing.Hash]bool{}
	for _, h := range updates {
		if seen[h] {
			continue
		}
		seen[h] = true
		if st.HasEncodedObject(h) != nil {
			wants = append(wants, h)
		}
	}
	if len(extra) > 0 && len(updates) == 0 {
		return fmt.Errorf("%w: %s", ErrBaseNotFound, strings.Join(extra, " "))
	}
	if len(wants) > 0 {
		sort.Slice(wants, func(i, j int) bool { return wants[i].String() < wants[j].String() })
		req := packp.NewUploadPackRequestFromCapabilities(ar.Capabilities)
		if progress == nil && ar.Capabilities.Supports(capability.NoProgress) {
			_ = req.Capabilities.Set(capability.NoProgress)
		}
		req.Wants = wants
		haves := map[plumbing.Hash]bool{}
		iter, err := st.IterReferences()
		if err != nil {
			return fmt.Errorf("list mirror refs: %w", err)
		}
		_ = iter.ForEach(func(r *plumbing.Reference) error {
			if r.Type() == plumbing.HashReference && st.HasEncodedObject(r.Hash()) == nil {
				haves[r.Hash()] = true
			}
			return nil
		})
		for h := range haves {
			req.Haves = append(req.Haves, h)
		}
		reader, err := sess.UploadPack(ctx, req)
		if err != nil && !errors.Is(err, transport.ErrEmptyUploadPackRequest) {
			return fmt.Errorf("upload-pack: %w", err)
		}
		if err == nil {
			var r io.Reader = reader
			switch {
			case req.Capabilities.Supports(capability.Sideband64k):
				d := sideband.NewDemuxer(sideband.Sideband64k, reader)
				d.Progress = progress
				r = d
			case req.Capabilities.Supports(capability.Sideband):
				d := sideband.NewDemuxer(sideband.Sideband, reader)
				d.Progress = progress
				r = d
			}
			err = packfile.UpdateObjectStorage(st, r)
			cerr := reader.Close()
			if err != nil {
				return fmt.Errorf("store pack: %w", err)
			}
			if cerr != nil {
				return fmt.Errorf("upload-pack: %w", cerr)
			}
		}
	}
	for name, h := range updates {
		if err := setMirrorRef(mir.dir, st, plumbing.NewHashReference(name, h)); err != nil {
			return fmt.Errorf("update %s: %w", name, err)
		}
	}
	if len(extra) == 0 {
		// Prune branches and tags the remote deleted.
		iter, err := st.IterReferences()
		if err != nil {
			return fmt.Errorf("list mirror refs: %w", err)
		}
		var stale []plumbing.ReferenceName
		_ = iter.ForEach(func(r *plumbing.Reference) error {
			n := r.Name()
			if (n.IsBranch() || n.IsTag()) && updates[n].IsZero() {
				stale = append(stale, n)
			}
			return nil
		})
		for _, n := range stale {
			_ = st.RemoveReference(n)
		}
		if head, ok := remote[plumbing.HEAD]; ok {
			target := head.Target()
			if head.Type() == plumbing.HashReference {
				target = guessHead(remote, head.Hash())
			}
			if target != "" && !updates[target].IsZero() {
				_ = setMirrorRef(mir.dir, st, plumbing.NewSymbolicReference(plumbing.HEAD, target))
			}
		}
		b, _ := json.Marshal(mirrorState{Repo: mir.key, FetchedAt: m.cfg.Now()})
		_ = writeFileAtomic(filepath.Join(mir.dir, mirrorStateFile), b, 0o644)
	}
	m.log.LogAttrs(ctx, slog.LevelDebug, "mirror fetched", slog.String("repo", redactURL(mir.key)),
		slog.Int("wants", len(wants)), slog.Duration("took", time.Since(start)))
	return nil
}

// setMirrorRef points ref's name in the mirror at dir where ref says,
// leaving a ref that already says so alone. Tasks read the mirror's refs
// while it is fetched (each provisioning resolves its base), so the file
// is replaced whole, by a rename: go-git's SetReference truncates the file
// and then writes it, and a reader in between found HEAD or the branch
// empty ("base not found"). The temporary file is written at the top of
// the mirror, where no listing of refs sees it.
func setMirrorRef(dir string, st storer.ReferenceStorer, ref *plumbing.Reference) error {
	name := ref.Name()
	if err := name.Validate(); err != nil {
		return fmt.Errorf("%w: %q", err, name)
	}
	if cur, err := st.Reference(name); err == nil && cur.Type() == ref.Type() &&
		cur.Hash() == ref.Hash() && cur.Target() == ref.Target() {
		return nil
	}
	var content string
	switch ref.Type() {
	case plumbing.HashReference:
		content = ref.Hash().String() + "\n"
	case plumbing.SymbolicReference:
		content = "ref: " + ref.Target().String() + "\n"
	default:
		return fmt.Errorf("invalid reference %q", name)
	}
	path := filepath.Join(dir, filepath.FromSlash(name.String()))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return replaceFile(dir, path, []byte(content), 0o644)
}

// guessHead picks the branch HEAD points at when the server did not say.
func guessHead(remote map[plumbing.ReferenceName]*plumbing.Reference, h plumbing.Hash) plumbing.ReferenceName {
	for _, n := range []plumbing.ReferenceName{"refs/heads/main", "refs/heads/master"} {
		if r, ok := remote[n]; ok && r.Hash() == h {
			return n
		}
	}
	var names []string
	for n, r := range remote {
		if n.IsBranch() && r.Type() == plumbing.HashReference && r.Hash() == h {
			names = append(names, string(n))
		}
	}
	sort.Strings(names)
	if len(names) > 0 {
		return plumbing.ReferenceName(names[0])
	}
	return ""
}

var hexSHA = regexp.MustCompile(`^[0-9a-f]{40}$`)

// resolve finds the base commit in the mirror.
func (mir *mirror) resolve(base string) (string, plumbing.Hash, error) {
	st := filesystem.NewStorageWithOptions(bufferedIdx(osfs.New(mir.dir)), cache.NewObjectLRU(8<<20), filesystem.Options{})
	defer st.Close()
	peel := func(h plumbing.Hash) (plumbing.Hash, error) {
		for range 10 {
			o, err := st.EncodedObject(plumbing.AnyObject, h)
			if err != nil {
				return plumbing.ZeroHash, err
			}
			switch o.Type() {
			case plumbing.CommitObject:
				return h, nil
			case plumbing.TagObject:
				t, err := object.DecodeTag(st, o)
				if err != nil {
					return plumbing.ZeroHash, err
				}
				h = t.Target
			default:
				return plumbing.ZeroHash, fmt.Errorf("%w: %s is a %s", ErrBaseNotFound, h, o.Type())
			}
		}
		return plumbing.ZeroHash, fmt.Errorf("%w: tag chain too long", ErrBaseNotFound)
	}
	if base == "" || base == "HEAD" {
		head, err := st.Reference(plumbing.HEAD)
		if err != nil {
			return "", plumbing.ZeroHash, fmt.Errorf("%w: remote has no default branch", ErrBaseNotFound)
		}
		name := head.Target().Short()
		r, err := storer.ResolveReference(st, plumbing.HEAD)
		if err != nil {
			// HEAD names a branch that does not exist (a bare repository
			// made with `git init --bare` on a git that defaults to master,
			// then pushed a main): take main, master, or the only branch.
			if r, err = fallbackDefault(st); err != nil {
				return "", plumbing.ZeroHash, fmt.Errorf("%w: default branch %s", ErrBaseNotFound, head.Target().Short())
			}
			name = r.Name().Short()
		}
		h, err := peel(r.Hash())
		if err != nil {
			return "", plumbing.ZeroHash, err
		}
		return name, h, nil
	}
	if hexSHA.MatchString(base) {
		h, err := peel(plumbing.NewHash(base))
		if err != nil {
			return "", plumbing.ZeroHash, fmt.Errorf("%w: commit %s", ErrBaseNotFound, base)
		}
		return base, h, nil
	}
	for _, n := range []string{base, "refs/heads/" + base, "refs/tags/" + base, "refs/" + base} {
		if n == base && !strings.HasPrefix(base, "refs/") {
			continue
		}
		r, err := st.Reference(plumbing.ReferenceName(n))
		if err != nil || r.Type() != plumbing.HashReference {
			continue
		}
		h, err := peel(r.Hash())
		if err != nil {
			return "", plumbing.ZeroHash, err
		}
		return base, h, nil
	}
	return "", plumbing.ZeroHash, fmt.Errorf("%w: %q", ErrBaseNotFound, base)
}

// mirrorStorage opens a mirror's object store for reading.
func mirrorStorage(dir string) *filesystem.Storage {
	return filesystem.NewStorageWithOptions(bufferedIdx(osfs.New(dir)), cache.NewObjectLRU(32<<20), filesystem.Options{KeepDescriptors: true})
}

// lockFile takes an exclusive flock on path, polling until ctx ends.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	delay := 5 * time.Millisecond
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				_ = f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
		case <-t.C:
		}
		delay = min(delay*2, 200*time.Millisecond)
	}
}

// tryLockFile takes an exclusive flock without waiting; ok is false when
// someone else holds it.
func tryLockFile(path string) (unlock func(), ok bool) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, false
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		_ = f.Close()
	}, true
}

// flightGroup runs one function per key at a time; callers arriving while
// it runs wait for its result and receive its progress output.
type flightGroup struct {
	mu    sync.Mutex
	calls map[string]*flightCall
}

type flightCall struct {
	done    chan struct{}
	err     error
	out     *fanout
	waiters int // callers waiting, guarded by flightGroup.mu
}

// waiters counts the callers currently waiting on any call (tests).
func (g *flightGroup) waiters() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, c := range g.calls {
		n += c.waiters
	}
	return n
}

func (g *flightGroup) do(ctx context.Context, key string, progress io.Writer, fn func(out io.Writer) error) error {
	g.mu.Lock()
	if g.calls == nil {
		g.calls = map[string]*flightCall{}
	}
	c, ok := g.calls[key]
	if !ok {
		c = &flightCall{done: make(chan struct{}), out: &fanout{}}
		g.calls[key] = c
		go func() {
			c.err = fn(c.out)
			g.mu.Lock()
			delete(g.calls, key)
			g.mu.Unlock()
			close(c.done)
		}()
	}
	id := c.out.add(progress)
	c.waiters++
	g.mu.Unlock()
	defer func() {
		c.out.remove(id)
		g.mu.Lock()
		c.waiters--
		g.mu.Unlock()
	}()
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fanout copies writes to every registered writer.
type fanout struct {
	mu   sync.Mutex
	next int
	ws   map[int]io.Writer
}

func (f *fanout) add(w io.Writer) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ws == nil {
		f.ws = map[int]io.Writer{}
	}
	f.next++
	if w != nil {
		f.ws[f.next] = w
	}
	return f.next
}

func (f *fanout) remove(id int) {
	f.mu.Lock()
	delete(f.ws, id)
	f.mu.Unlock()
}

func (f *fanout) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range f.ws {
		_, _ = w.Write(p)
	}
	return len(p), nil
}

// fallbackDefault picks a default branch when HEAD points at a missing one:
// main, then master, then the only branch there is.
func fallbackDefault(st storer.ReferenceStorer) (*plumbing.Reference, error) {
	for _, n := range []plumbing.ReferenceName{"refs/heads/main", "refs/heads/master"} {
		if r, err := st.Reference(n); err == nil {
			return r, nil
		}
	}
	iter, err := st.IterReferences()
	if err != nil {
		return nil, err
	}
	defer iter.Close()
	var only *plumbing.Reference
	n := 0
	iter.ForEach(func(r *plumbing.Reference) error {
		if r.Name().IsBranch() && r.Type() == plumbing.HashReference {
			only = r
			n++
		}
		return nil
	})
	if n != 1 {
		return nil, ErrBaseNotFound
	}
	return only, nil
}
