package worktree

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
)

// Manager provisions and manages task worktrees. It is safe for concurrent
// use; operations on one task are serialized.
type Manager struct {
	cfg Config
	log *slog.Logger

	flights flightGroup

	mu      sync.Mutex
	tasks   map[string]*sync.Mutex // per-task locks
	mirrors map[string]*sync.RWMutex

	bg     context.Context // parent of detached fetches
	stop   context.CancelFunc
	wg     sync.WaitGroup
	closed bool

	fetches int64 // number of network fetches started (tests)

	forbid []string // resolved forbidden directories
}

// New returns a Manager, creating MirrorDir and TaskDir when missing.
func New(cfg Config) (*Manager, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	for _, d := range []string{cfg.MirrorDir, cfg.TaskDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("worktree: create %s: %w", d, err)
		}
	}
	var forbid []string
	for _, d := range append([]string{cfg.MirrorDir, cfg.TaskDir}, cfg.ForbiddenDirs...) {
		if d == "" {
			continue
		}
		if abs, err := filepath.Abs(d); err == nil {
			d = abs
		}
		forbid = append(forbid, d)
		if r, err := filepath.EvalSymlinks(d); err == nil && r != d {
			forbid = append(forbid, r)
		}
	}
	bg, stop := context.WithCancel(context.Background())
	return &Manager{
		forbid:  forbid,
		cfg:     cfg,
		log:     cfg.Logger,
		tasks:   map[string]*sync.Mutex{},
		mirrors: map[string]*sync.RWMutex{},
		bg:      bg,
		stop:    stop,
	}, nil
}

// Close cancels fetches still in flight and waits for them to end.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.stop()
	m.wg.Wait()
	return nil
}

// Ref says which repository and base a task works on.
type Ref struct {
	// TaskID names the task; it becomes a directory name.
	TaskID string
	// Repo is an https://, ssh:// or file:// URL, or a local path to a
	// repository (bare or not).
	Repo string
	// Base is a branch name, a full ref name (refs/pull/7/head) or a
	// 40-hex commit SHA reachable from the remote's branches or tags;
	// "" means the remote's default branch (its HEAD).
	Base string
	// Branch is the branch to create; "" means "nightshift/<task-id>".
	Branch string
	// Reuse returns an existing worktree for TaskID as-is (follow-up
	// messages); without it any leftover is replaced.
	Reuse bool
	// ReuseAt, with Reuse, keeps the existing worktree only when its own
	// last push delivered this commit and the remote Branch is still there
	// (or gone): when someone else pushed to the branch, or the worktree
	// holds work that never reached it (a run that lost its task), it is
	// provisioned afresh from Base, so the run builds on the branch as the
	// task recorded it instead of pushing over it.
	ReuseAt string
	// Auth is used to fetch.
	Auth Auth
}

// Worktree is a provisioned task clone.
type Worktree struct {
	TaskID string `json:"task_id"`
	// Dir is the working directory (TaskDir/<task-id>/work); its .git is a
	// standalone repository sharing the mirror's objects.
	Dir string `json:"dir"`
	// Repo is the repository as given in Ref.Repo.
	Repo string `json:"repo"`
	// Branch is the task branch, checked out in Dir.
	Branch string `json:"branch"`
	// BaseRef is the base as resolved: a branch name ("main"), a full ref
	// name, or the commit SHA when the base was given as one.
	BaseRef string `json:"base_ref"`
	// BaseCommit is the commit the task branch started from.
	BaseCommit string `json:"base_commit"`
	// ReadOnlyPaths are absolute paths outside Dir the agent needs to read
	// (the mirror's object directory) and must not write: bind them
	// read-only at the same path.
	ReadOnlyPaths []string `json:"read_only_paths"`
	// ProtectedGitPaths are paths relative to Dir that must be bound
	// read-only inside the sandbox (hooks, config, alternates).
	ProtectedGitPaths []string `json:"protected_git_paths"`
	// CreatedAt is when the worktree was provisioned.
	CreatedAt time.Time `json:"created_at"`

	mirrorDir string
}

// taskMeta is stored in TaskDir/<task-id>/task.json, outside the worktree.
type taskMeta struct {
	Worktree
	MirrorDir string    `json:"mirror_dir"`
	UsedAt    time.Time `json:"used_at"`
	// PushedCommit is the last commit of the task that a push delivered
	// (to any remote); the next commit builds on it.
	PushedCommit string `json:"pushed_commit,omitempty"`
	// Committed is the last commit Commit made (or kept) for the task: what
	// Push sends, whatever the clone's refs say by then.
	Committed string `json:"committed,omitempty"`
}

const (
	metaFile    = "task.json"
	workDirName = "work"
	stagingPref = ".staging-"
)

// protectedGitPaths are bound read-only in the sandbox so the agent cannot
// plant hooks, change config (core.hooksPath, fsmonitor, aliases) or point
// its object store somewhere else.
var protectedGitPaths = []string{".git/hooks", ".git/config", ".git/objects/info/alternates"}

var taskIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func validTaskID(id string) error {
	if !taskIDRe.MatchString(id) || strings.Contains(id, "..") {
		return fmt.Errorf("%w: %q", ErrInvalidTaskID, id)
	}
	return nil
}

func validBranch(b string) error {
	if b == "" || strings.HasPrefix(b, "-") || strings.HasPrefix(b, "/") || strings.HasSuffix(b, "/") ||
		strings.HasSuffix(b, ".lock") || strings.Contains(b, "..") || strings.Contains(b, "//") ||
		strings.Contains(b, "@{") || strings.HasPrefix(b, "refs/") {
		return fmt.Errorf("worktree: invalid branch name %q", b)
	}
	for _, r := range b {
		if r < 0x20 || r == 0x7f || strings.ContainsRune(" ~^:?*[\\", r) {
			return fmt.Errorf("worktree: invalid branch name %q", b)
		}
	}
	for _, part := range strings.Split(b, "/") {
		if strings.HasPrefix(part, ".") {
			return fmt.Errorf("worktree: invalid branch name %q", b)
		}
	}
	return nil
}

func (m *Manager) taskLock(id string) *sync.Mutex {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.tasks[id]
	if !ok {
		l = &sync.Mutex{}
		m.tasks[id] = l
	}
	return l
}

func (m *Manager) taskRoot(id string) string { return filepath.Join(m.cfg.TaskDir, id) }

// Provision returns a worktree for ref.TaskID on a new branch from ref.Base,
// fetching the repository into its mirror first. Progress of the fetch and
// checkout is written to progress (may be nil).
func (m *Manager) Provision(ctx context.Context, ref Ref, progress io.Writer) (*Worktree, error) {
	if err := validTaskID(ref.TaskID); err != nil {
		return nil, err
	}
	if ref.Repo == "" {
		return nil, errors.New("worktree: provision: Ref.Repo is required")
	}
	if ref.Branch == "" {
		ref.Branch = "nightshift/" + ref.TaskID
	}
	if err := validBranch(ref.Branch); err != nil {
		return nil, err
	}
	if progress == nil {
		progress = io.Discard
	}
	l := m.taskLock(ref.TaskID)
	l.Lock()
	defer l.Unlock()

	if ref.Reuse {
		if wt, err := m.open(ref.TaskID); err == nil {
			ok, err := m.reusable(ctx, ref, wt, progress)
			if err != nil {
				return nil, err
			}
			if ok {
				m.touch(ref.TaskID)
				return wt, nil
			}
		}
	}
	start := time.Now()
	mir, err := m.mirrorFor(ref.Repo)
	if err != nil {
		return nil, err
	}
	unlock := m.useMirror(mir)
	defer unlock()

	// A commit SHA the mirror already has needs no fetch.
	baseRef, baseHash, err := "", plumbing.ZeroHash, ErrBaseNotFound
	if hexSHA.MatchString(ref.Base) {
		baseRef, baseHash, err = mir.resolve(ref.Base)
	}
	if err != nil {
		if err := m.sync(ctx, mir, ref.Auth, progress, nil); err != nil {
			return nil, fmt.Errorf("worktree: fetch %s: %w", redactURL(ref.Repo), err)
		}
		baseRef, baseHash, err = mir.resolve(ref.Base)
	}
	fetched := time.Since(start)
	if errors.Is(err, ErrBaseNotFound) && strings.HasPrefix(ref.Base, "refs/") {
		// A ref outside heads and tags (a pull request head): fetch it alone.
		spec := "+" + ref.Base + ":" + ref.Base
		if ferr := m.sync(ctx, mir, ref.Auth, progress, []string{spec}); ferr != nil {
			return nil, fmt.Errorf("worktree: fetch %s %s: %w", redactURL(ref.Repo), ref.Base, ferr)
		}
		baseRef, baseHash, err = mir.resolve(ref.Base)
	}
	if err != nil {
		return nil, err
	}

	root := m.taskRoot(ref.TaskID)
	if err := removeAll(root); err != nil {
		return nil, fmt.Errorf("worktree: remove leftover %s: %w", root, err)
	}
	staging := filepath.Join(m.cfg.TaskDir, stagingPref+ref.TaskID+"-"+randHex(4))
	ok := false
	defer func() {
		if !ok {
			_ = removeAll(staging)
		}
	}()
	work := filepath.Join(staging, workDirName)
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, fmt.Errorf("worktree: create %s: %w", work, err)
	}
	if err := initTaskGit(work, mir.dir, ref.Branch, baseHash); err != nil {
		return nil, fmt.Errorf("worktree: init task clone: %w", err)
	}
	files, err := checkout(ctx, mir.dir, baseHash, work, m.cfg.CheckoutWorkers)
	if err != nil {
		return nil, fmt.Errorf("worktree: checkout %s: %w", baseHash, err)
	}
	now := m.cfg.Now()
	wt := &Worktree{
		TaskID:     ref.TaskID,
		Dir:        filepath.Join(root, workDirName),
		Repo:       ref.Repo,
		Branch:     ref.Branch,
		BaseRef:    baseRef,
		BaseCommit: baseHash.String(),
		CreatedAt:  now,
		mirrorDir:  mir.dir,
	}
	wt.fill()
	if err := writeMeta(staging, &taskMeta{Worktree: *wt, MirrorDir: mir.dir, UsedAt: now}); err != nil {
		return nil, err
	}
	if err := os.Rename(staging, root); err != nil {
		return nil, fmt.Errorf("worktree: move task clone into place: %w", err)
	}
	ok = true
	m.log.LogAttrs(ctx, slog.LevelInfo, "worktree provisioned",
		slog.String("task_id", ref.TaskID), slog.String("repo", redactURL(ref.Repo)),
		slog.String("base", baseRef), slog.String("base_commit", baseHash.String()),
		slog.Int("files", files), slog.Duration("fetch", fetched), slog.Duration("total", time.Since(start)))
	fmt.Fprintf(progress, "worktree: checked out %d files of %s (%s) in %s\n", files, baseRef, baseHash.String()[:12], time.Since(start).Round(time.Millisecond))
	return wt, nil
}

func (wt *Worktree) fill() {
	wt.ReadOnlyPaths = []string{filepath.Join(wt.mirrorDir, "objects")}
	wt.ProtectedGitPaths = append([]string(nil), protectedGitPaths...)
}

// gitDir is the task clone's repository directory.
func (wt *Worktree) gitDir() string { return filepath.Join(wt.Dir, ".git") }

// Open returns the existing worktree of a task, or ErrNotFound.
func (m *Manager) Open(taskID string) (*Worktree, error) {
	if err := validTaskID(taskID); err != nil {
		return nil, err
	}
	return m.open(taskID)
}

func (m *Manager) open(taskID string) (*Worktree, error) {
	meta, err := readMeta(m.taskRoot(taskID))
	if err != nil {
		return nil, err
	}
	wt := meta.Worktree
	wt.Dir = filepath.Join(m.taskRoot(taskID), workDirName)
	wt.mirrorDir = meta.MirrorDir
	wt.fill()
	return &wt, nil
}

// loadMeta re-reads the trusted metadata of wt: callers may hand in a
// Worktree value, but the mirror and base always come from task.json.
func (m *Manager) loadMeta(wt *Worktree) (*Worktree, error) {
	if wt == nil {
		return nil, errors.New("worktree: nil worktree")
	}
	if err := validTaskID(wt.TaskID); err != nil {
		return nil, err
	}
	return m.open(wt.TaskID)
}

// updateMeta applies fn to the task's stored metadata and writes it back.
func (m *Manager) updateMeta(taskID string, fn func(*taskMeta)) error {
	root := m.taskRoot(taskID)
	meta, err := readMeta(root)
	if err != nil {
		return err
	}
	fn(meta)
	meta.UsedAt = m.cfg.Now()
	return writeMeta(root, meta)
}

func (m *Manager) touch(taskID string) {
	root := m.taskRoot(taskID)
	meta, err := readMeta(root)
	if err != nil {
		return
	}
	meta.UsedAt = m.cfg.Now()
	_ = writeMeta(root, meta)
}

// Remove deletes a task's worktree. Removing a missing worktree is not an error.
func (m *Manager) Remove(ctx context.Context, taskID string) error {
	if err := validTaskID(taskID); err != nil {
		return err
	}
	l := m.taskLock(taskID)
	l.Lock()
	defer l.Unlock()
	if err := removeAll(m.taskRoot(taskID)); err != nil {
		return fmt.Errorf("worktree: remove task %s: %w", taskID, err)
	}
	m.log.LogAttrs(ctx, slog.LevelInfo, "worktree removed", slog.String("task_id", taskID))
	return nil
}

func readMeta(root string) (*taskMeta, error) {
	b, err := os.ReadFile(filepath.Join(root, metaFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("worktree: read task metadata: %w", err)
	}
	var meta taskMeta
	if err := json.Unmarshal(b, &meta); err != nil {
		return nil, fmt.Errorf("worktree: decode task metadata %s: %w", root, err)
	}
	return &meta, nil
}

func writeMeta(root string, meta *taskMeta) error {
	b, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return fmt.Errorf("worktree: encode task metadata: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(root, metaFile), b, 0o644); err != nil {
		return fmt.Errorf("worktree: write task metadata: %w", err)
	}
	return nil
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	return replaceFile(filepath.Dir(path), path, data, perm)
}

// replaceFile replaces path with data by a rename, so a reader finds the
// old file or the new one, never one half written. The temporary file is
// written in tmpDir, which must be on path's filesystem.
func replaceFile(tmpDir, path string, data []byte, perm os.FileMode) error {
	tmp := filepath.Join(tmpDir, filepath.Base(path)+".tmp-"+randHex(4))
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

// removeAll removes a tree, making directories writable first when an
// agent left some read-only.
func removeAll(path string) error {
	err := os.RemoveAll(path)
	if err == nil {
		return nil
	}
	// Through a root at path: a directory the agent swapped for a link
	// meanwhile must not make this chmod a host directory.
	root, rerr := openRootNoFollow(path)
	if rerr != nil {
		return err
	}
	_ = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			if fi, lerr := root.Lstat(p); lerr == nil && fi.IsDir() {
				_ = root.Chmod(p, 0o755)
			}
		}
		return nil
	})
	root.Close()
	return os.RemoveAll(path)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// reusable reports whether wt, the task's worktree left by an earlier run,
// may serve ref (see Ref.ReuseAt), saying why not on progress.
func (m *Manager) reusable(ctx context.Context, ref Ref, wt *Worktree, progress io.Writer) (bool, error) {
	if ref.ReuseAt == "" {
		return true, nil
	}
	tip := wt.BaseCommit
	if meta, err := readMeta(m.taskRoot(ref.TaskID)); err == nil && meta.PushedCommit != "" {
		tip = meta.PushedCommit
	}
	if tip != ref.ReuseAt {
		fmt.Fprintf(progress, "the worktree left here is not where the task's branch is: starting from the branch\n")
		return false, nil
	}
	moved, err := m.branchMoved(ctx, ref)
	if err != nil || !moved {
		return !moved, err
	}
	fmt.Fprintf(progress, "%s moved since the last run (someone pushed to it): starting from it\n", ref.Branch)
	return false, nil
}

// branchMoved reports whether ref.Branch on the remote is at a commit other
// than ref.ReuseAt (false when the branch is gone). It reads the remote's
// refs and fetches nothing: a worktree kept needs no fetch, and one
// provisioned afresh fetches anyway.
func (m *Manager) branchMoved(ctx context.Context, ref Ref) (bool, error) {
	head, err := m.BranchHead(ctx, ref.Repo, ref.Branch, ref.Auth)
	if err != nil {
		return false, err
	}
	return head != "" && head != ref.ReuseAt, nil
}
