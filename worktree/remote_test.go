package worktree

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// BranchHead reads where a branch is on the remote, local or over HTTP,
// and says "" for a branch that does not exist.
func TestBranchHead(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
	main := git(t, origin, "rev-parse", "refs/heads/main")
	srv := newGitServer(t, filepath.Dir(origin))
	m := newManager(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name, remote string
		auth         Auth
	}{
		{"local", origin, Auth{}},
		{"http", srv.URL + "/" + filepath.Base(origin), Auth{Username: readOnlyUser, Password: testToken}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := m.BranchHead(ctx, tc.remote, "main", tc.auth)
			if err != nil || got != main {
				t.Fatalf("BranchHead(main) = %q, %v; want %s", got, err, main)
			}
			got, err = m.BranchHead(ctx, tc.remote, "nightshift/none", tc.auth)
			if err != nil || got != "" {
				t.Fatalf("BranchHead of a missing branch = %q, %v; want \"\"", got, err)
			}
		})
	}
	if _, err := m.BranchHead(ctx, srv.URL+"/"+filepath.Base(origin), "main", Auth{Username: "x", Password: "wrong"}); err == nil {
		t.Fatal("BranchHead with bad credentials succeeded")
	}
	if _, err := m.BranchHead(ctx, origin, "-bad..name", Auth{}); err == nil {
		t.Fatal("BranchHead accepted an invalid branch name")
	}
}

// A follow-up keeps its worktree while the task's branch is where its last
// push left it (or gone), and starts from the branch when someone pushed
// to it meanwhile.
func TestReuseAtBranchHead(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
	m := newManager(t)
	ctx := context.Background()
	wt := provision(t, m, Ref{TaskID: "t1", Repo: origin})
	if err := os.WriteFile(filepath.Join(wt.Dir, "WORK.md"), []byte("work\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := m.Commit(ctx, wt, CommitRequest{Author: agent})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Push(ctx, wt, PushRequest{}); err != nil {
		t.Fatal(err)
	}
	leftover := filepath.Join(wt.Dir, "LEFTOVER")
	if err := os.WriteFile(leftover, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	followUp := Ref{TaskID: "t1", Repo: origin, Base: wt.Branch, Reuse: true, ReuseAt: c.SHA}
	reused := func(want bool) *Worktree {
		t.Helper()
		fetches := atomic.LoadInt64(&m.fetches)
		got, err := m.Provision(ctx, followUp, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(leftover); (err == nil) != want {
			t.Fatalf("worktree kept = %v, want %v", err == nil, want)
		}
		// Where the branch is comes from the remote's refs: a worktree
		// kept costs no fetch, one provisioned afresh a single one.
		if n := atomic.LoadInt64(&m.fetches) - fetches; n != map[bool]int64{true: 0, false: 1}[want] {
			t.Fatalf("%d fetches, reused %v", n, want)
		}
		return got
	}
	reused(true)
	git(t, origin, "update-ref", "-d", "refs/heads/"+wt.Branch)
	reused(true)
	person := git(t, origin, "commit-tree", "-p", c.SHA, "-m", "a person's fix", c.SHA+"^{tree}")
	git(t, origin, "update-ref", "refs/heads/"+wt.Branch, person)
	if got := reused(false); got.BaseCommit != person {
		t.Fatalf("follow-up after a person's push starts from %s, want %s", got.BaseCommit, person)
	}
}
