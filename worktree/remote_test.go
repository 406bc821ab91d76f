package worktree

import (
	"context"
	"path/filepath"
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
