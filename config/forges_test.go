package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestForgesLoad(t *testing.T) {
	p := writeFile(t, `
github:
  token: "${vault:GITHUB_TOKEN}"
  webhook_secrets: [gh1]
forges:
  - kind: gitea
    api_url: https://git.example.com/api/v1/
    git_url: https://git.example.com/
    webhook_secrets: ["${vault:GITEA_WEBHOOK_SECRET}", old]
    token: "${vault:GITEA_TOKEN}"
    trigger: "@nightshift"
  - kind: GitLab
    api_url: https://gitlab.example.com/api/v4
    webhook_secrets: [gl]
    token: "${env:GL_TOKEN}"
    trigger_level: 40
    bot_login: nightshift-bot
  - kind: forgejo
    api_url: https://code.example.org:3000/api/v1
  - kind: github
    api_url: https://ghe.example.com/api/v3/
    app_id: 7
    private_key: "${file:/etc/nightshift/ghe.pem}"
    label: agent
`)
	c, err := Load(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Forges) != 5 {
		t.Fatalf("%d forges, want 5 (the github: block first): %+v", len(c.Forges), c.Forges)
	}
	want := []struct {
		kind, api, git, host, trigger, label string
		shorthand                            bool
	}{
		{"github", "https://api.github.com/", "https://github.com/", "github.com", "@nightshift", "nightshift", true},
		{"gitea", "https://git.example.com/api/v1/", "https://git.example.com/", "git.example.com", "@nightshift", "nightshift", false},
		{"gitlab", "https://gitlab.example.com/api/v4/", "https://gitlab.example.com/", "gitlab.example.com", "@nightshift", "nightshift", false},
		{"gitea", "https://code.example.org:3000/api/v1/", "https://code.example.org:3000/", "code.example.org:3000", "@nightshift", "nightshift", false},
		{"github", "https://ghe.example.com/api/v3/", "https://ghe.example.com/", "ghe.example.com", "@nightshift", "agent", false},
	}
	for i, w := range want {
		f := c.Forges[i]
		if f.Kind != w.kind || f.APIURL != w.api || f.GitURL != w.git || f.Host() != w.host || f.Trigger != w.trigger || f.Label != w.label || f.Shorthand != w.shorthand {
			t.Errorf("forges[%d] = %+v, want %+v", i, f, w)
		}
	}
	if c.Forges[0].Token != "${vault:GITHUB_TOKEN}" || c.Forges[0].WebhookSecrets[0] != "gh1" {
		t.Errorf("the github: block's credentials did not carry over: %+v", c.Forges[0])
	}
	for i, f := range c.Forges[1:] {
		if f.Key() != fmt.Sprintf("forges[%d]", i) {
			t.Errorf("entry %d is named %s", i, f.Key())
		}
	}
	if c.Forges[0].Key() != "github" {
		t.Errorf("the github: block is named %s", c.Forges[0].Key())
	}
	if c.Forges[2].TriggerLevel != 40 || c.Forges[2].BotLogin != "nightshift-bot" || c.Forges[4].AppID != 7 {
		t.Errorf("driver keys lost: %+v %+v", c.Forges[2], c.Forges[4])
	}
	// The github: block itself keeps working as before.
	if c.GitHub.APIURL != "https://api.github.com/" || c.GitHub.Token != "${vault:GITHUB_TOKEN}" {
		t.Errorf("github block %+v", c.GitHub)
	}
}

func TestForgesGitHubBlockOnlyWhenSet(t *testing.T) {
	c, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Forges) != 0 {
		t.Fatalf("no configuration made forges %+v", c.Forges)
	}
	c, err = Load("", map[string]string{"NIGHTSHIFT_GITHUB_TOKEN": "ghp_x"})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Forges) != 1 || !c.Forges[0].Shorthand || c.Forges[0].Token != "ghp_x" {
		t.Fatalf("github token from the environment: %+v", c.Forges)
	}
}

func TestForgesErrorsNameTheKey(t *testing.T) {
	for _, c := range []struct{ yaml, key, msg string }{
		{"forges:\n  - api_url: https://x.example/api/v1/\n", "forges[0].kind", "required"},
		{"forges:\n  - kind: github\n  - kind: bitbucket\n", "forges[1].kind", `unknown forge kind "bitbucket"`},
		{"forges:\n  - kind: gitea\n", "forges[0].api_url", "required for gitea"},
		{"forges:\n  - kind: gitlab\n    api_url: ftp://gitlab.example.com/\n", "forges[0].api_url", "not an absolute http(s) URL"},
		{"forges:\n  - kind: gitea\n    api_url: https://g.example/api/v1/\n    git_url: https://user:pw@g.example/\n", "forges[0].git_url", "credentials"},
		{"forges:\n  - kind: gitlab\n    app_id: 3\n    private_key: x\n", "forges[0].app_id", "kind github"},
		{"forges:\n  - kind: github\n    app_id: 3\n", "forges[0].private_key", "required with app_id"},
		{"forges:\n  - kind: gitea\n    api_url: https://g.example/api/v1/\n    trigger_level: 30\n", "forges[0].trigger_level", "only for kind gitlab"},
		{"forges:\n  - kind: gitlab\n    trigger_level: 35\n", "forges[0].trigger_level", "not a GitLab access level"},
		{"forges:\n  - kind: gitlab\n    trigger: \"@\"\n", "forges[0].trigger", "has no name"},
		{"forges:\n  - kind: gitlab\n    tokne: x\n", "forges[0].tokne", "unknown key"},
		{"forges:\n  - kind: gitlab\n    token: \"${vault:}\"\n", "forges[0].token", ""},
		{"github:\n  token: x\nforges:\n  - kind: github\n    git_url: https://github.com/\n", "forges[0].git_url", "also configured by the github: block"},
		{"forges:\n  - kind: gitea\n    api_url: https://g.example/api/v1/\n  - kind: gitlab\n    api_url: https://G.example/api/v4/\n", "forges[1].git_url", "already configured by forges[0]"},
	} {
		_, err := Load(writeFile(t, c.yaml), nil)
		var ce *Error
		if !errors.As(err, &ce) || ce.Key != c.key || !strings.Contains(ce.Msg, c.msg) {
			t.Errorf("%q: err %v, want key %s with %q", c.yaml, err, c.key, c.msg)
		}
	}
}

// TestRepoMatchAcrossForges: repos[].match globs over host/owner/name fit
// every forge's clone URLs, https and ssh alike.
func TestRepoMatchAcrossForges(t *testing.T) {
	for _, c := range []struct {
		match, repo string
		want        bool
	}{
		{"gitlab.example.com/acme/*", "https://gitlab.example.com/acme/app.git", true},
		{"gitlab.example.com/acme/*", "git@gitlab.example.com:acme/app.git", true},
		{"gitlab.example.com/acme/*/*", "https://gitlab.example.com/acme/sub/app.git", true},
		{"gitlab.example.com/acme/*", "https://gitlab.example.com/acme/sub/app.git", false},
		{"git.example.com:3000/acme/app", "https://git.example.com:3000/acme/app.git", true},
		{"git.example.com/acme/*", "ssh://git@git.example.com/acme/app.git", true},
		{"github.com/acme/*", "https://git.example.com/acme/app.git", false},
		{"*/acme/app", "https://codeberg.org/acme/app.git", true},
	} {
		if got := MatchRepo(c.match, c.repo); got != c.want {
			t.Errorf("MatchRepo(%q, %q) = %v, want %v", c.match, c.repo, got, c.want)
		}
	}
}

// TestREADMEForgeExamplesLoad: every nightshift.yaml example of the
// README's Forges section loads as written.
func TestREADMEForgeExamplesLoad(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	start := strings.Index(s, "\n## Forges\n")
	if start < 0 {
		t.Fatal("README has no Forges section")
	}
	section := s[start+1:]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	n := 0
	for _, part := range strings.Split(section, "```yaml\n")[1:] {
		block, _, _ := strings.Cut(part, "```")
		n++
		if _, err := Load(writeFile(t, block), nil); err != nil {
			t.Errorf("README example %d does not load: %v\n%s", n, err, block)
		}
	}
	if n < 2 {
		t.Fatalf("%d yaml examples in the Forges section", n)
	}
}
