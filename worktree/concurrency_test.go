package worktree

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/memfs"
	"github.com/go-git/go-billy/v5/util"
)

// churnPackDir does to a mirror's objects/pack what fetches into it do:
// go-git writes each fetched pack as a tmp_pack_* file there and renames
// it into place (or removes it when the pack is already there), so
// entries keep appearing and vanishing while other tasks read the mirror.
// It runs until stop is closed and reports how many files it cycled.
func churnPackDir(t *testing.T, dir string, stop <-chan struct{}) <-chan int {
	const batch = 32
	cycled := make(chan int, 1)
	batches := untilStopped(t, stop, func(int) error {
		var names []string
		for range batch {
			f, err := os.CreateTemp(dir, "tmp_pack_")
			if err != nil {
				return err
			}
			f.Close()
			names = append(names, f.Name())
		}
		for _, name := range names {
			if err := os.Remove(name); err != nil {
				return err
			}
		}
		return nil
	})
	go func() { cycled <- batch * <-batches }()
	return cycled
}

// untilStopped calls step (with how many steps ran before) over and over
// on a goroutine of its own until stop is closed or step fails, which it
// reports with t.Error; then it sends how many steps ran.
func untilStopped(t *testing.T, stop <-chan struct{}, step func(n int) error) <-chan int {
	done := make(chan int, 1)
	go func() {
		n := 0
		defer func() { done <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := step(n); err != nil {
				t.Error(err)
				return
			}
			n++
		}
	}()
	return done
}

// commitDiffPushAll has each task commit, diff and push, round after
// round, until it did rounds of them or deadline passed, and returns the
// first failure of each task.
func commitDiffPushAll(ctx context.Context, m *Manager, wts []*Worktree, rounds int, deadline time.Time) error {
	var wg sync.WaitGroup
	errs := make([]error, len(wts))
	for i, wt := range wts {
		wg.Go(func() {
			for r := 0; r < rounds && time.Now().Before(deadline); r++ {
				if err := commitDiffPush(ctx, m, wt, fmt.Sprintf("task %d round %d\n", i, r)); err != nil {
					errs[i] = fmt.Errorf("task %d round %d: %w", i, r, err)
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// provisionTasks provisions n tasks from one origin of 200 files in 8
// directories, so that they share a mirror.
func provisionTasks(t *testing.T, n int) (origin string, m *Manager, wts []*Worktree) {
	t.Helper()
	files := map[string]string{}
	for i := range 200 {
		files[fmt.Sprintf("d%d/f%d.txt", i%8, i)] = fmt.Sprintf("file %d\n", i)
	}
	origin = newOrigin(t, files)
	m = newManager(t)
	for i := range n {
		wts = append(wts, provision(t, m, Ref{TaskID: fmt.Sprintf("t%d", i), Repo: origin}))
	}
	return origin, m, wts
}

// Tasks committing, diffing and pushing while fetches write packs into
// their shared mirror: every store must see every pack of the mirror. A
// store whose listing of objects/pack raced a pack file being renamed
// used to take the mirror for one without packs, and the base commit (or
// the parent of the commit to push) was "object not found".
func TestCommitPushWhileMirrorFetches(t *testing.T) {
	t.Parallel()
	_, m, wts := provisionTasks(t, 6)
	stop := make(chan struct{})
	churned := churnPackDir(t, filepath.Join(wts[0].mirrorDir, "objects", "pack"), stop)
	err := commitDiffPushAll(context.Background(), m, wts, 15, time.Now().Add(20*time.Second))
	close(stop)
	n := <-churned
	if err != nil {
		t.Error(err)
	}
	t.Logf("%d pack files came and went meanwhile", n)
}

// The same with nothing simulated: real fetches bring new commits of the
// origin into the mirror (each pack written as tmp_pack_* and renamed into
// place) while tasks commit, diff and push. The race is narrower than
// churnPackDir makes it, so this fails most runs, not every run, on a
// store that can miss packs.
func TestCommitPushDuringRealFetches(t *testing.T) {
	t.Parallel()
	origin, m, wts := provisionTasks(t, 6)
	ctx := context.Background()
	mir, err := m.mirrorFor(origin)
	if err != nil {
		t.Fatal(err)
	}
	tree := git(t, origin, "rev-parse", "main^{tree}")
	parent := git(t, origin, "rev-parse", "main")
	stop := make(chan struct{})
	fetched := untilStopped(t, stop, func(n int) error {
		// Another worker's push: a new branch with a new commit.
		c, err := runGit(origin, "commit-tree", "-p", parent, "-m", fmt.Sprint("other ", n), tree)
		if err == nil {
			_, err = runGit(origin, "update-ref", fmt.Sprintf("refs/heads/other/%d", n), c)
		}
		if err != nil {
			return err
		}
		return m.sync(ctx, mir, Auth{}, nil, nil)
	})
	err = commitDiffPushAll(ctx, m, wts, math.MaxInt, time.Now().Add(4*time.Second))
	close(stop)
	n := <-fetched
	if err != nil {
		t.Error(err)
	}
	t.Logf("%d fetches meanwhile", n)
}

// commitDiffPush does what a worker does with a finished run: the agent's
// change is committed, diffed and pushed.
func commitDiffPush(ctx context.Context, m *Manager, wt *Worktree, work string) error {
	if err := os.WriteFile(filepath.Join(wt.Dir, "WORK.md"), []byte(work), 0o644); err != nil {
		return err
	}
	if _, err := m.Commit(ctx, wt, CommitRequest{Author: agent}); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if _, err := m.Diff(ctx, wt); err != nil {
		return fmt.Errorf("diff: %w", err)
	}
	if _, err := m.Push(ctx, wt, PushRequest{}); err != nil {
		return fmt.Errorf("push: %w", err)
	}
	return nil
}

// Fetches keep the mirror's refs readable: a provisioning resolving its
// base (the default branch, or a branch by name) while another task's
// fetch updates the mirror must never find HEAD or the branch empty. The
// fetch used to rewrite every ref and HEAD in place (truncate, then
// write), and a base was "not found" in between.
func TestResolveWhileMirrorFetches(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
	head := git(t, origin, "rev-parse", "main")
	side := git(t, origin, "commit-tree", "-p", head, "-m", "side", head+"^{tree}")
	for i := range 60 {
		git(t, origin, "update-ref", fmt.Sprintf("refs/heads/topic/%d", i), head)
	}
	git(t, origin, "update-ref", "refs/heads/moving", head)
	m := newManager(t)
	ctx := context.Background()
	provision(t, m, Ref{TaskID: "t1", Repo: origin})
	mir, err := m.mirrorFor(origin)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	fetched := untilStopped(t, stop, func(n int) error {
		// A branch that moves, so every fetch has a ref to update.
		if _, err := runGit(origin, "update-ref", "refs/heads/moving", map[bool]string{true: head, false: side}[n%2 == 0]); err != nil {
			return err
		}
		return m.sync(ctx, mir, Auth{}, nil, nil)
	})
	deadline := time.Now().Add(3 * time.Second)
	var failures []string
	reads := 0
	for time.Now().Before(deadline) && len(failures) < 5 {
		for _, base := range []string{"", "main", "topic/7", "moving"} {
			if _, h, err := mir.resolve(base); err != nil {
				failures = append(failures, fmt.Sprintf("resolve %q: %v", base, err))
			} else if h.String() != head && (base != "moving" || h.String() != side) {
				failures = append(failures, fmt.Sprintf("resolve %q: %s, want %s", base, h, head))
			}
			reads++
		}
	}
	close(stop)
	n := <-fetched
	t.Logf("%d resolves during %d fetches", reads, n)
	for _, f := range failures {
		t.Error(f)
	}
}

// vanishingFS fails its first ReadDir calls the way osfs does when an
// entry is removed between reading the names and stating them.
type vanishingFS struct {
	billy.Filesystem
	fails int
}

func (v *vanishingFS) ReadDir(name string) ([]os.FileInfo, error) {
	if v.fails > 0 {
		v.fails--
		return nil, &fs.PathError{Op: "lstat", Path: name + "/tmp_pack_x", Err: fs.ErrNotExist}
	}
	return v.Filesystem.ReadDir(name)
}

func TestIdxFSReadDirSurvivesVanishingEntries(t *testing.T) {
	t.Parallel()
	mem := memfs.New()
	if err := util.WriteFile(mem, "objects/pack/pack-1.pack", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A listing that raced a rename is read again, not taken for a
	// missing directory.
	infos, err := bufferedIdx(&vanishingFS{Filesystem: mem, fails: 3}).ReadDir("objects/pack")
	if err != nil || len(infos) != 1 || infos[0].Name() != "pack-1.pack" {
		t.Fatalf("ReadDir = %v, %v; want pack-1.pack", infos, err)
	}
	// One that never settles is an error of its own: go-git would take a
	// "not exist" for a repository without packs.
	_, err = bufferedIdx(&vanishingFS{Filesystem: mem, fails: readDirAttempts}).ReadDir("objects/pack")
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadDir of a directory that keeps changing = %v; want an error that is not ErrNotExist", err)
	}
	// A directory that is really missing is still reported as missing.
	if _, err := bufferedIdx(mem).ReadDir("objects/none"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadDir of a missing directory = %v; want ErrNotExist", err)
	}
}

// A provisioning checks out while a fetch into the mirror is half done:
// go-git has written the new pack's index (in place, so it may be cut
// short) and not yet renamed the pack next to it. The checkout must skip
// that pack, not fail on its index.
func TestProvisionWhileFetchWritesIndex(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{"a.txt": "a\n", "d/b.txt": "b\n"})
	m := newManager(t)
	wt := provision(t, m, Ref{TaskID: "t1", Repo: origin})
	packDir := filepath.Join(wt.mirrorDir, "objects", "pack")
	half := filepath.Join(packDir, "pack-"+strings.Repeat("ab", 20)+".idx")
	if err := os.WriteFile(half, []byte{0xff, 't', 'O', 'c', 0, 0, 0, 2, 0, 0}, 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(packDir, "tmp_pack_123456")
	if err := os.WriteFile(tmp, []byte("PACK"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, base := range []string{wt.BaseCommit, ""} { // without and with a fetch
		wt2, err := m.Provision(context.Background(), Ref{TaskID: "t2", Repo: origin, Base: base}, nil)
		if err != nil {
			t.Fatalf("provision (base %q) during a fetch: %v", base, err)
		}
		if b, err := os.ReadFile(filepath.Join(wt2.Dir, "d", "b.txt")); err != nil || string(b) != "b\n" {
			t.Fatalf("d/b.txt = %q, %v", b, err)
		}
	}
}
