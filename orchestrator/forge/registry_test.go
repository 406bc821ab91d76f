package forge_test

import (
	"strings"
	"testing"

	"github.com/nightshift/nightshift/orchestrator/forge"
	"github.com/nightshift/nightshift/orchestrator/forge/gitea"
	"github.com/nightshift/nightshift/orchestrator/forge/gitlab"
	"github.com/nightshift/nightshift/orchestrator/github"
)

// drivers builds real drivers for hosts that are never called.
func drivers(t *testing.T) (gh, ghe, gl, gt forge.Driver) {
	t.Helper()
	var err error
	if gh, err = github.New(github.Config{Token: "x"}); err != nil {
		t.Fatal(err)
	}
	if ghe, err = github.New(github.Config{Token: "x", APIURL: "https://ghe.example.test/api/v3/"}); err != nil {
		t.Fatal(err)
	}
	if gl, err = gitlab.New(gitlab.Config{Token: "x", APIURL: "https://gitlab.example.test/api/v4/"}); err != nil {
		t.Fatal(err)
	}
	if gt, err = gitea.New(gitea.Config{Token: "x", APIURL: "https://git.example.test:3000/api/v1/"}); err != nil {
		t.Fatal(err)
	}
	return gh, ghe, gl, gt
}

func TestRegistryRoutesByHost(t *testing.T) {
	gh, ghe, gl, gt := drivers(t)
	reg, err := forge.NewRegistry(gh, ghe, gl, gt, nil)
	if err != nil {
		t.Fatal(err)
	}
	if reg.Len() != 4 {
		t.Fatalf("%d drivers", reg.Len())
	}
	for _, c := range []struct {
		url  string
		want forge.Driver
		key  string
	}{
		{"https://github.com/acme/app.git", gh, "github.com/acme/app"},
		{"git@github.com:acme/app.git", gh, "github.com/acme/app"},
		{"https://ghe.example.test/acme/app", ghe, "ghe.example.test/acme/app"},
		{"https://gitlab.example.test/acme/platform/app.git", gl, "gitlab.example.test/acme/platform/app"},
		{"https://git.example.test:3000/acme/app.git", gt, "git.example.test:3000/acme/app"},
		{"https://elsewhere.example.test/acme/app.git", nil, ""},
		{"/srv/git/app", nil, ""},
	} {
		d, r, ok := reg.ForRepo(c.url)
		if c.want == nil {
			if ok {
				t.Errorf("%s: routed to %s %s", c.url, d.Kind(), d.Host())
			}
			continue
		}
		if !ok || d != c.want || r.Key() != c.key {
			t.Errorf("%s: %v %+v, want %s with key %s", c.url, ok, r, c.want.Host(), c.key)
		}
	}
	if d, ok := reg.Route(forge.KindGitLab, ""); !ok || d != gl {
		t.Error("the only GitLab host is not the gitlab route's")
	}
	if _, ok := reg.Route(forge.KindGitHub, ""); ok {
		t.Error("two GitHub hosts: the github route needs a host")
	}
	if d, ok := reg.Route(forge.KindGitHub, "GHE.example.test"); !ok || d != ghe {
		t.Error("route by host")
	}
	if _, ok := reg.Route(forge.KindGitea, "ghe.example.test"); ok {
		t.Error("a GitHub host answered the gitea route")
	}
	if got := reg.OfKind(forge.KindGitHub); len(got) != 2 || got[0] != gh {
		t.Errorf("OfKind(github) = %v", got)
	}
	var none *forge.Registry
	if _, _, ok := none.ForRepo("https://github.com/a/b.git"); ok || none.Len() != 0 {
		t.Error("a nil registry routed")
	}
}

func TestRegistryRefusesAHostTwice(t *testing.T) {
	gh, _, _, _ := drivers(t)
	other, err := github.New(github.Config{Token: "y", GitURL: "https://GitHub.com/"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := forge.NewRegistry(gh, other); err == nil || !strings.Contains(err.Error(), "github.com is configured twice") {
		t.Fatalf("err %v", err)
	}
}

func TestParseKind(t *testing.T) {
	for in, want := range map[string]forge.Kind{"github": forge.KindGitHub, "GitLab": forge.KindGitLab, "gitea": forge.KindGitea, " forgejo ": forge.KindGitea} {
		if got, ok := forge.ParseKind(in); !ok || got != want {
			t.Errorf("ParseKind(%q) = %q %v", in, got, ok)
		}
	}
	if _, ok := forge.ParseKind("bitbucket"); ok {
		t.Error("bitbucket parsed")
	}
}
