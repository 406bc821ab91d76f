package worktree

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestPushBesideAnUpdateInProgress: another update of the same local
// repository holds its ref's lock file (created empty, written later, as
// git and a concurrent task's push do). Provisioning and pushing another
// branch meanwhile work; the lock is not mistaken for a ref.
func TestPushBesideAnUpdateInProgress(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{"README.md": "# demo\n"})
	lock := filepath.Join(origin, "refs", "heads", "nightshift", "other.lock")
	if err := os.MkdirAll(filepath.Dir(lock), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lock, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	m := newManager(t)
	ctx := context.Background()
	wt, err := m.Provision(ctx, Ref{TaskID: "t1", Repo: origin}, nil)
	if err != nil {
		t.Fatalf("provision beside a lock: %v", err)
	}
	writeFiles(t, wt.Dir, map[string]string{"NOTES.md": "note\n"})
	c, err := m.Commit(ctx, wt, CommitRequest{Author: agent, Message: "Add a note"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := m.Push(ctx, wt, PushRequest{})
	if err != nil {
		t.Fatalf("push beside a lock: %v", err)
	}
	if res.New != c.SHA || git(t, origin, "rev-parse", "refs/heads/nightshift/t1") != c.SHA {
		t.Fatalf("push result %+v", res)
	}
	if _, err := os.Stat(lock); err != nil {
		t.Fatalf("the other update's lock: %v", err)
	}
}
