package worktree

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

func TestPlantedHooksNeverRun(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
	m := newManager(t)
	ctx := context.Background()
	wt := provision(t, m, Ref{TaskID: "t1", Repo: origin})
	marker := filepath.Join(t.TempDir(), "ran")
	for _, h := range []string{"pre-commit", "commit-msg", "post-commit", "pre-push", "reference-transaction"} {
		script := "#!/bin/sh\ntouch " + marker + "\n"
		if err := os.WriteFile(filepath.Join(wt.Dir, ".git", "hooks", h), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFiles(t, wt.Dir, map[string]string{"a.txt": "b\n"})
	if _, err := m.Commit(ctx, wt, CommitRequest{Author: agent}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Diff(ctx, wt); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Push(ctx, wt, PushRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("a planted hook ran: %v", err)
	}
}

func TestSymlinkInGitDirRefused(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
	m := newManager(t)
	ctx := context.Background()
	victim := provision(t, m, Ref{TaskID: "victim", Repo: origin})
	wt := provision(t, m, Ref{TaskID: "t1", Repo: origin})
	// The agent swaps its refs directory for a link to another task's.
	refs := filepath.Join(wt.Dir, ".git", "refs", "heads", "nightshift")
	if err := os.RemoveAll(refs); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(victim.Dir, ".git", "refs", "heads", "nightshift"), refs); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, wt.Dir, map[string]string{"a.txt": "b\n"})
	if _, err := m.Commit(ctx, wt, CommitRequest{Author: agent}); !errors.Is(err, ErrUnsafeRepository) {
		t.Fatalf("commit err = %v", err)
	}
	if _, err := m.Push(ctx, wt, PushRequest{}); !errors.Is(err, ErrUnsafeRepository) {
		t.Fatalf("push err = %v", err)
	}
}

func TestUnsafeTreeRefused(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
	st := filesystem.NewStorage(osfs.New(origin), cache.NewObjectLRUDefault())
	blob, err := writeBlob(st, []byte("[core]\n\thooksPath = /tmp/evil\n"))
	if err != nil {
		t.Fatal(err)
	}
	inner := &object.Tree{Entries: []object.TreeEntry{{Name: "config", Mode: filemode.Regular, Hash: blob}}}
	innerHash := storeObject(t, st, inner)
	root := &object.Tree{Entries: []object.TreeEntry{{Name: ".git", Mode: filemode.Dir, Hash: innerHash}}}
	rootHash := storeObject(t, st, root)
	sig := object.Signature{Name: "x", Email: "x@example.test", When: time.Unix(1700000000, 0)}
	c := storeObject(t, st, &object.Commit{Author: sig, Committer: sig, Message: "evil\n", TreeHash: rootHash})
	if err := st.SetReference(plumbing.NewHashReference("refs/heads/evil", c)); err != nil {
		t.Fatal(err)
	}
	m := newManager(t)
	_, err = m.Provision(context.Background(), Ref{TaskID: "t1", Repo: origin, Base: "evil"}, nil)
	if !errors.Is(err, ErrUnsafeRepository) {
		t.Fatalf("provision err = %v", err)
	}
	if _, err := m.Open("t1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused provision left a worktree: %v", err)
	}
}

func TestPushToAnotherRemote(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{"a.txt": "a\n", "dir/b.txt": "b\n"})
	// A fork with the same history, and an empty repository.
	fork := filepath.Join(t.TempDir(), "fork.git")
	git(t, filepath.Dir(fork), "clone", "-q", "--bare", origin, fork)
	empty := filepath.Join(t.TempDir(), "empty.git")
	git(t, filepath.Dir(empty), "init", "-q", "--bare", empty)
	m := newManager(t)
	ctx := context.Background()
	wt := provision(t, m, Ref{TaskID: "t1", Repo: origin})
	writeFiles(t, wt.Dir, map[string]string{"dir/c.txt": "c\n"})
	c, err := m.Commit(ctx, wt, CommitRequest{Author: agent})
	if err != nil {
		t.Fatal(err)
	}
	res, err := m.Push(ctx, wt, PushRequest{Remote: fork})
	if err != nil {
		t.Fatal(err)
	}
	if res.Objects != 4 { // commit, root tree, dir tree, new blob
		t.Errorf("pushed %d objects to the fork, want 4", res.Objects)
	}
	if _, err := m.Push(ctx, wt, PushRequest{Remote: "file://" + empty}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{fork, empty} {
		git(t, r, "fsck", "--no-progress")
		if got := git(t, r, "rev-parse", "refs/heads/nightshift/t1"); got != c.SHA {
			t.Fatalf("%s has %s, want %s", r, got, c.SHA)
		}
	}
}

func storeObject(t *testing.T, st *filesystem.Storage, enc interface {
	Encode(plumbing.EncodedObject) error
}) plumbing.Hash {
	t.Helper()
	o := st.NewEncodedObject()
	if err := enc.Encode(o); err != nil {
		t.Fatal(err)
	}
	h, err := st.SetEncodedObject(o)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
