package config

import (
	"testing"

	"github.com/go-git/go-git/v5/plumbing/transport"
)

// TestRepoClassification checks RemoteRepo and LocalRepoPath on a table and
// against go-git, which the worktree package clones with: whatever go-git
// would open as a local path must be classified local, never remote.
func TestRepoClassification(t *testing.T) {
	t.Parallel()
	cases := []struct {
		repo   string
		remote bool
		local  string // "" = not local
	}{
		{"https://github.com/acme/app.git", true, ""},
		{"http://127.0.0.1:8080/acme/app.git", true, ""},
		{"ssh://git@github.com/acme/app.git", true, ""},
		{"git@github.com:acme/app.git", true, ""},
		{"github.com:acme/app", true, ""},
		{"/tmp/demo.git", false, "/tmp/demo.git"},
		{"/tmp/../tmp/demo.git/", false, "/tmp/demo.git"},
		{"file:///tmp/demo.git", false, "/tmp/demo.git"},
		{"file://localhost/srv/x", false, "/srv/x"},
		{"FILE:///srv/x", false, "/srv/x"},
		{"./relative", false, "relative"},
		{"acme/app", false, "acme/app"},
		{"github.com/acme/app", false, "github.com/acme/app"},
		{"./a:b/c", false, "a:b/c"},
		{"/abs/with:colon", false, "/abs/with:colon"},
		{"git://github.com/acme/app.git", false, ""},
		{"ext::sh -c touch% /tmp/pwned", false, ""},
		{"https:///nohost", false, ""},
		{"", false, ""},
	}
	for _, c := range cases {
		if got := RemoteRepo(c.repo); got != c.remote {
			t.Errorf("RemoteRepo(%q) = %v, want %v", c.repo, got, c.remote)
		}
		p, ok := LocalRepoPath(c.repo)
		if ok != (c.local != "") || p != c.local {
			t.Errorf("LocalRepoPath(%q) = %q, %v; want %q", c.repo, p, ok, c.local)
		}
		if ep, err := transport.NewEndpoint(c.repo); err == nil && ep.Protocol == "file" && c.repo != "" {
			if RemoteRepo(c.repo) {
				t.Errorf("go-git opens %q as a local path but RemoteRepo says remote", c.repo)
			}
			if _, ok := LocalRepoPath(c.repo); !ok {
				t.Errorf("go-git opens %q as a local path but LocalRepoPath does not", c.repo)
			}
		}
	}
}

func TestNamesLocalRepo(t *testing.T) {
	t.Parallel()
	cases := []struct {
		match, path string
		want        bool
	}{
		{"*", "/tmp/demo.git", false},
		{"**", "/tmp/demo.git", false},
		{"github.com/acme/*", "/tmp/demo.git", false},
		{"/tmp/demo.git", "/tmp/demo.git", true},
		{"/tmp/demo", "/tmp/demo.git", false}, // another repository
		{"/tmp/demo.git", "/tmp/demo", false},
		{"/tmp/demo.git/", "/tmp/demo.git", true},
		{"file:///tmp/demo.git", "/tmp/demo.git", true},
		{"/tmp/demo.git", "/tmp/other.git", false},
		{"/tmp/*", "/tmp/demo.git", true},
		{"/tmp/*", "/tmp/a/demo.git", false},
		{"/tmp/**", "/tmp/a/b/demo.git", true},
		{"/tmp/**", "/tmp", false},
		{"/tmp/**", "/tmpx/demo.git", false},
		{"/srv/*/repos/**", "/srv/team/repos/x/y.git", true},
		{"/srv/*/repos/**", "/srv/repos/x.git", false},
		{"/tmp/demo.git", "tmp/demo.git", false},
	}
	for _, c := range cases {
		cfg := &Config{Repos: []Repo{{Match: "github.com/other/*"}, {Match: c.match}}}
		if got := cfg.NamesLocalRepo(c.path); got != c.want {
			t.Errorf("match %q names %q = %v, want %v", c.match, c.path, got, c.want)
		}
	}
	// Settings of a path-glob entry apply to the repositories it names.
	cfg := &Config{Repos: []Repo{{Match: "/srv/repos/**", Test: "make test"}}}
	if got := cfg.RepoFor("/srv/repos/team/app.git").Test; got != "make test" {
		t.Errorf("RepoFor under /srv/repos/** = %q", got)
	}
	if got := cfg.RepoFor("file:///srv/repos/team/app.git").Test; got != "make test" {
		t.Errorf("RepoFor(file://) under /srv/repos/** = %q", got)
	}
}

func TestGitHubGitURL(t *testing.T) {
	for api, want := range map[string]string{
		"":                                  "https://github.com/",
		"https://api.github.com/":           "https://github.com/",
		"https://ghe.example.com/api/v3/":   "https://ghe.example.com/",
		"http://127.0.0.1:9999/api/v3":      "http://127.0.0.1:9999/",
		"http://127.0.0.1:9999/":            "http://127.0.0.1:9999/",
		"https://git.example.com/base/api/": "https://git.example.com/base/",
	} {
		if got := GitHubGitURL(api); got != want {
			t.Errorf("GitHubGitURL(%q) = %q, want %q", api, got, want)
		}
	}
}
