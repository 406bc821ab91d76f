package webhook

import (
	"testing"
)

func TestCommandIn(t *testing.T) {
	t.Parallel()
	tests := []struct {
		body, trigger string
		want          string
		ok            bool
	}{
		{"@nightshift fix the build", "@nightshift", "fix the build", true},
		{"/nightshift fix the build", "@nightshift", "fix the build", true},
		{"@NightShift: fix it", "@nightshift", "fix it", true},
		{"please @nightshift, add tests\n\nand docs", "@nightshift", "add tests\n\nand docs", true},
		{"@nightshift apply:\n```diff\n-a\n+b\n```", "@nightshift", "apply:\n```diff\n-a\n+b\n```", true},
		{"@nightshift", "@nightshift", "", true},
		{"@nightshiftbot do it", "@nightshift", "", false},
		{"@nightshift-bot do it", "@nightshift", "", false},
		{"email me@nightshift.dev", "@nightshift", "", false},
		{"see https://x.io/nightshift/docs", "@nightshift", "", false},
		{"> @nightshift quoted", "@nightshift", "", false},
		{"  > @nightshift indented quote", "@nightshift", "", false},
		{"```\n@nightshift in a fence\n```", "@nightshift", "", false},
		{"~~~~\n@nightshift in a tilde fence\n~~~~", "@nightshift", "", false},
		{"run `@nightshift fix` to start", "@nightshift", "", false},
		{"``code with ` inside @nightshift``", "@nightshift", "", false},
		{"unclosed ` @nightshift go", "@nightshift", "go", true},
		{"```\nunclosed fence @nightshift", "@nightshift", "", false},
		{"> quote\n\n@nightshift real one", "@nightshift", "real one", true},
		{"windows\r\n@nightshift do\r\nit", "@nightshift", "do\nit", true},
		{"!agent go", "!agent", "", false},
		{"@agent go", "agent", "go", true},
	}
	for _, tt := range tests {
		got, ok := commandIn(tt.body, tt.trigger)
		if ok != tt.ok || got != tt.want {
			t.Errorf("commandIn(%q, %q) = %q, %v; want %q, %v", tt.body, tt.trigger, got, ok, tt.want, tt.ok)
		}
	}
}

func TestSlackRepo(t *testing.T) {
	t.Parallel()
	forge := Config{Slack: SlackConfig{Hosts: []string{"github.com", "ghe.corp.io", "gitlab.com"}}}.withDefaults().forge()
	tests := map[string]string{
		"acme/app":                          "https://github.com/acme/app.git",
		"acme/app.git":                      "https://github.com/acme/app.git",
		"github.com/acme/app":               "https://github.com/acme/app.git",
		"GitHub.com/acme/app":               "https://github.com/acme/app.git",
		"ghe.corp.io/acme/app":              "https://ghe.corp.io/acme/app.git",
		"https://gitlab.com/a/b.git":        "https://gitlab.com/a/b.git",
		"https://gitlab.com/group/sub/b":    "https://gitlab.com/group/sub/b",
		"<https://github.com/a/b|a/b>":      "https://github.com/a/b",
		"other.example/acme/app":            "", // not a configured forge host
		"https://other.example/a/b.git":     "",
		"http://github.com/a/b.git":         "", // https only
		"https://user:tok@github.com/a/b":   "",
		"https://github.com/a/b?x=1":        "",
		"https://github.com/../../tmp/x":    "",
		"git@github.com:acme/app.git":       "", // host/owner/name, owner/name or https only
		"ssh://git@github.com/acme/app.git": "",
		"file:///tmp/planted.git":           "",
		"<file:///tmp/planted.git|x>":       "",
		"/tmp/planted.git":                  "",
		"./planted":                         "",
		"../x/y":                            "",
		"~/x":                               "",
		"github.com/../tmp":                 "",
		"app":                               "",
		"a/../b":                            "",
		"-x/app":                            "",
		"one/two/three":                     "",
		"":                                  "",
	}
	for in, want := range tests {
		got, ok := slackRepo(in, forge)
		if got != want || ok != (want != "") {
			t.Errorf("slackRepo(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	// owner/name follows the configured GitHub (Enterprise, or a test server).
	ghe := Config{GitHub: GitHubConfig{APIURL: "http://127.0.0.1:9/api/v3/"}}.withDefaults().forge()
	for in, want := range map[string]string{
		"acme/app":                           "http://127.0.0.1:9/acme/app.git",
		"127.0.0.1:9/acme/app":               "http://127.0.0.1:9/acme/app.git",
		"http://127.0.0.1:9/acme/app.git":    "http://127.0.0.1:9/acme/app.git",
		"https://github.com/acme/app.git":    "",
		"file://127.0.0.1:9/tmp/planted.git": "",
		"http://127.0.0.1:10/acme/app.git":   "",
	} {
		if got, _ := slackRepo(in, ghe); got != want {
			t.Errorf("with GitHub Enterprise slackRepo(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestGitHubRepoFromFullName: the repository of a GitHub event is built
// from full_name and the configured git URL; the payload's URLs never count.
func TestGitHubRepoFromFullName(t *testing.T) {
	t.Parallel()
	body := func(repo string) []byte {
		return []byte(`{"action":"created","comment":{"id":7,"body":"@nightshift fix","user":{"login":"ann"},"author_association":"OWNER"},
			"issue":{"number":3},"repository":` + repo + `,"sender":{"login":"ann"}}`)
	}
	forge := Config{GitHub: GitHubConfig{GitURL: "https://ghe.corp.io/git"}}.withDefaults().forge()
	for _, tt := range []struct {
		repo, want string
	}{
		{`{"full_name":"acme/app","clone_url":"https://github.com/acme/app.git"}`, "https://ghe.corp.io/git/acme/app.git"},
		{`{"full_name":"acme/app","clone_url":"file:///tmp/planted.git","html_url":"file:///tmp/planted"}`, "https://ghe.corp.io/git/acme/app.git"},
		{`{"full_name":"acme/app","clone_url":"/tmp/planted.git"}`, "https://ghe.corp.io/git/acme/app.git"},
		{`{"full_name":"../../tmp/planted","clone_url":"/tmp/planted.git"}`, ""},
		{`{"full_name":"/tmp/planted"}`, ""},
		{`{"full_name":"acme/app/extra"}`, ""},
		{`{"full_name":"acme/.."}`, ""},
		{`{"full_name":"acme/a b"}`, ""},
	} {
		n, err := normalizeGitHub("issue_comment", body(tt.repo), githubOptions{Trigger: "@nightshift", Label: "nightshift", Forge: forge})
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("%s: accepted as %+v, want 400", tt.repo, n.ev)
		case tt.want != "" && (err != nil || n.ev == nil || n.ev.Repo != tt.want):
			t.Errorf("%s: %v %+v, want repo %s", tt.repo, err, n.ev, tt.want)
		}
	}
	// A fork's head repository is built the same way.
	pr := []byte(`{"action":"completed","workflow_run":{"id":9,"conclusion":"failure","head_sha":"abc","head_branch":"fix",
		"head_repository":{"full_name":"fork/app","clone_url":"file:///tmp/planted.git"}},"repository":{"full_name":"acme/app"}}`)
	n, err := normalizeGitHub("workflow_run", pr, githubOptions{Trigger: "@nightshift", Label: "nightshift", Forge: forge})
	if err != nil || n.ev == nil || n.ev.Target.HeadRepo != "https://ghe.corp.io/git/fork/app.git" {
		t.Fatalf("fork head repo: %v %+v", err, n.ev)
	}
}

func TestListed(t *testing.T) {
	t.Parallel()
	lists := map[string][]string{"github.com/acme/*": {"Ann"}, "other/repo": {"bob"}}
	for _, tt := range []struct {
		repo, login string
		want        bool
	}{
		{"github.com/acme/app", "ann", true},
		{"github.com/acme/app", "bob", false},
		{"github.com/other/repo", "BOB", true},
		{"github.com/acmeco/app", "ann", false},
	} {
		if got := listed(lists, tt.repo, tt.login); got != tt.want {
			t.Errorf("listed(%s, %s) = %v", tt.repo, tt.login, got)
		}
	}
}

// TestLinearReposFromConfig: Linear's repositories come from the config and
// may not be local: New refuses a path or file:// URL, and owner/name or
// host/owner/name become clone URLs on the configured forge.
func TestLinearReposFromConfig(t *testing.T) {
	t.Parallel()
	for repo, want := range map[string]string{
		"":                                "",
		"acme/app":                        "https://github.com/acme/app.git",
		"github.com/acme/app":             "https://github.com/acme/app.git",
		"https://gitlab.example/a/b.git":  "https://gitlab.example/a/b.git",
		"git@github.com:acme/app.git":     "git@github.com:acme/app.git",
		"/tmp/planted.git":                "!",
		"file:///tmp/planted.git":         "!",
		"./planted":                       "!",
		"ext::sh -c touch% /tmp/pwned":    "!",
		"other.example/acme/app/and/more": "!",
	} {
		for _, cfg := range []Config{{Linear: LinearConfig{Repo: repo}}, {Linear: LinearConfig{TeamRepos: map[string]string{"ENG": repo}}}} {
			got, err := cfg.withDefaults().withRepos()
			switch {
			case want == "!" && err == nil:
				t.Errorf("linear repo %q accepted as %q %v", repo, got.Linear.Repo, got.Linear.TeamRepos)
			case want != "!" && err != nil:
				t.Errorf("linear repo %q: %v", repo, err)
			case want != "!" && got.Linear.Repo+got.Linear.TeamRepos["ENG"] != want:
				t.Errorf("linear repo %q = %q %v, want %q", repo, got.Linear.Repo, got.Linear.TeamRepos, want)
			}
		}
	}
	// The last line of defence: whatever builds an event, accept ignores
	// one whose repository is not remote.
	for _, repos := range [][]string{{"/tmp/x.git"}, {"file:///tmp/x.git"}, {"https://github.com/a/b.git", "/tmp/fork.git"}, {"relative/path"}} {
		if remoteOnly(repos...) == "" {
			t.Errorf("remoteOnly(%q) lets a local repository through", repos)
		}
	}
	if why := remoteOnly("", "https://github.com/a/b.git", "git@github.com:a/b.git"); why != "" {
		t.Errorf("remote repositories refused: %s", why)
	}
}
