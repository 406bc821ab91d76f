package gitea_test

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/nightshift/nightshift/orchestrator/forge"
	"github.com/nightshift/nightshift/orchestrator/forge/gitea"
)

// TestNew: the API URL gets its /api/v1, the git URL defaults to the
// API's root, bad URLs are errors naming the key, the token never prints.
func TestNew(t *testing.T) {
	t.Parallel()
	d, err := gitea.New(gitea.Config{APIURL: "https://git.example.com/sub", Token: "tok-123"})
	if err != nil || d.GitURL() != "https://git.example.com/sub/" || d.Host() != "git.example.com" {
		t.Fatalf("New: %v %q %q", err, d.GitURL(), d.Host())
	}
	for _, c := range []struct {
		cfg  gitea.Config
		want string
	}{
		{gitea.Config{}, "api_url is required"},
		{gitea.Config{APIURL: "git.example.com/api/v1"}, "api_url"},
		{gitea.Config{APIURL: "ftp://git.example.com/api/v1"}, "api_url"},
		{gitea.Config{APIURL: "https://git.example.com/api/v1/", GitURL: "https://user:pw@git.example.com/"}, "git_url"},
	} {
		if _, err := gitea.New(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want an error about %s", c.cfg, err, c.want)
		}
	}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("cfg", "gitea", gitea.Config{APIURL: "https://x/api/v1/", Token: "tok-123"})
	if strings.Contains(b.String(), "tok-123") || !strings.Contains(b.String(), "REDACTED") {
		t.Fatalf("config logged as %s", b.String())
	}
}

// TestRepoOf: clone URLs on the configured host (and its path prefix) in
// https, ssh and scp form name a repository; anything else does not.
func TestRepoOf(t *testing.T) {
	t.Parallel()
	d, err := gitea.New(gitea.Config{APIURL: "https://example.com/git/api/v1/", Token: "x"})
	if err != nil {
		t.Fatal(err)
	}
	want := forge.Repo{Host: "example.com", Owner: "acme", Name: "app"}
	for _, u := range []string{
		"https://example.com/git/acme/app.git", "https://example.com/git/acme/app", "https://EXAMPLE.com/git/acme/app/",
		"ssh://git@example.com/acme/app.git", "ssh://git@example.com:2222/acme/app.git", "git@example.com:acme/app.git",
	} {
		if got, ok := d.RepoOf(u); !ok || got != want {
			t.Errorf("RepoOf(%q) = %+v, %v", u, got, ok)
		}
	}
	for _, u := range []string{
		"https://example.com/acme/app.git",         // outside the path prefix
		"https://other.example/git/acme/app.git",   // another host
		"https://example.com/git/acme/app/sub.git", // not owner/name
		"https://example.com/git/../acme/app.git",  // not a plain segment
		"https://example.com/git/acme/app.git?x=1", // a query
		"file:///srv/git/acme/app.git", "/srv/git/acme/app", "acme/app",
	} {
		if got, ok := d.RepoOf(u); ok {
			t.Errorf("RepoOf(%q) = %+v, want none", u, got)
		}
	}
	if u := d.CloneURL(want); u != "https://example.com/git/acme/app.git" {
		t.Errorf("CloneURL = %s", u)
	}
}
