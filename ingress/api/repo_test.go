package api

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nightshift/nightshift/config"
)

// TestLocalRepoPolicy: POST /api/v1/tasks takes a local repository only
// from an admin, only when a repos[].match entry names it, and never one
// inside the data directory, not even through a symlink. Remote URLs are
// unaffected. Before the policy every path was dispatched as given.
func TestLocalRepoPolicy(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.runScheduler(t)
	dataDir, repos := t.TempDir(), t.TempDir()
	worktree := filepath.Join(dataDir, "tasks", "T1", "work") // where an agent could plant a repository
	for _, d := range []string{filepath.Join(repos, "named.git"), filepath.Join(repos, "other", "x.git"), worktree} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(repos, "link.git")
	if err := os.Symlink(worktree, link); err != nil {
		t.Fatal(err)
	}
	// The data dir itself reached through a symlink must be recognised too.
	dataLink := filepath.Join(t.TempDir(), "data")
	if err := os.Symlink(dataDir, dataLink); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Repos: []config.Repo{
		{Match: "*", Test: "true"}, // settings for all; names no local path
		{Match: repos + "/*"},
		{Match: dataDir + "/**"}, // a careless glob: the data dir is refused anyway
	}}
	s := New(w.bus, w.store, Config{AdminTokens: []string{"adm1n"}, ReadOnlyTokens: []string{"r3ad"},
		LocalRepoAllowed: cfg.NamesLocalRepo, DataDir: dataLink})
	ts := serve(t, s)
	admin, readOnly := "Authorization: Bearer adm1n", "Authorization: Bearer r3ad"
	for _, c := range []struct {
		name, repo, auth string
		want             int
		msg              string
	}{
		{"remote https", "https://github.com/acme/app.git", admin, 202, ""},
		{"remote scp", "git@github.com:acme/app.git", admin, 202, ""},
		{"named path", filepath.Join(repos, "named.git"), admin, 202, ""},
		{"named file URL", "file://" + filepath.Join(repos, "named.git"), admin, 202, ""},
		{"named path, read-only token", filepath.Join(repos, "named.git"), readOnly, 403, "read-only"},
		{"path not named", filepath.Join(repos, "other", "x.git"), admin, 403, "repos[].match"},
		{"file URL not named", "file://" + filepath.Join(repos, "other", "x.git"), admin, 403, "repos[].match"},
		{"inside the data dir", worktree, admin, 403, "data directory"},
		{"symlink into the data dir", link, admin, 403, "data directory"},
		{"named but missing", filepath.Join(repos, "missing.git"), admin, 400, "cannot be opened"},
		{"relative path", "acme/app", admin, 400, "relative"},
		{"host/owner/name is a relative path", "github.com/acme/app", admin, 400, "relative"},
		{"other scheme", "ext::sh -c id", admin, 400, "not a repository URL"},
		{"git protocol", "git://github.com/acme/app.git", admin, 400, "not a repository URL"},
	} {
		r := call(t, "POST", ts.URL+"/api/v1/tasks", `{"repo":`+quote(c.repo)+`,"prompt":"p"}`, c.auth)
		if r.code != c.want {
			t.Errorf("%s (%s): %d, want %d: %s", c.name, c.repo, r.code, c.want, r.body)
			continue
		}
		if c.msg != "" && !strings.Contains(r.errorMsg(t), c.msg) {
			t.Errorf("%s: error %q does not say %q", c.name, r.errorMsg(t), c.msg)
		}
	}

	// Without LocalRepoAllowed (or with only "*") no local path is taken.
	for _, cfg := range []Config{{}, {LocalRepoAllowed: (&config.Config{Repos: []config.Repo{{Match: "*"}}}).NamesLocalRepo}} {
		ts := serve(t, New(w.bus, w.store, cfg))
		if r := call(t, "POST", ts.URL+"/api/v1/tasks", `{"repo":`+quote(filepath.Join(repos, "named.git"))+`,"prompt":"p"}`); r.code != 403 {
			t.Errorf("open API without a naming entry: %d, want 403: %s", r.code, r.body)
		}
	}
}

func quote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"` }

// TestLocalRepoInsideDataDirIsNamedSo: a local path inside the data
// directory that no repos[].match names is refused for being inside the
// data directory, not with advice to add a repos[].match entry (which
// would not help).
func TestLocalRepoInsideDataDirIsNamedSo(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	dataDir, other := t.TempDir(), t.TempDir()
	worktree := filepath.Join(dataDir, "tasks", "T1", "work")
	if err := os.MkdirAll(worktree, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(other, "link.git")
	if err := os.Symlink(worktree, link); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Repos: []config.Repo{{Match: "*", Test: "true"}}}
	ts := serve(t, New(w.bus, w.store, Config{AdminTokens: []string{"adm1n"}, LocalRepoAllowed: cfg.NamesLocalRepo, DataDir: dataDir}))
	for _, repo := range []string{worktree, "file://" + worktree, link, filepath.Join(dataDir, "missing.git")} {
		r := call(t, "POST", ts.URL+"/api/v1/tasks", `{"repo":`+quote(repo)+`,"prompt":"p"}`, "Authorization: Bearer adm1n")
		if msg := r.errorMsg(t); r.code != 403 || !strings.Contains(msg, "inside the server's data directory") || strings.Contains(msg, "repos[].match") {
			t.Errorf("%s: %d %q, want 403 saying it is inside the data directory (and no repos[].match advice)", repo, r.code, msg)
		}
	}
}
