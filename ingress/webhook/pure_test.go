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
	tests := map[string]string{
		"acme/app":                     "https://github.com/acme/app.git",
		"acme/app.git":                 "https://github.com/acme/app.git",
		"github.com/acme/app":          "https://github.com/acme/app.git",
		"ghe.corp.io/acme/app":         "https://ghe.corp.io/acme/app.git",
		"https://gitlab.com/a/b.git":   "https://gitlab.com/a/b.git",
		"<https://github.com/a/b|a/b>": "https://github.com/a/b",
		"git@github.com:acme/app.git":  "git@github.com:acme/app.git",
		"app":                          "",
		"a/../b":                       "",
		"one/two/three":                "",
		"":                             "",
	}
	for in, want := range tests {
		got, ok := slackRepo(in)
		if got != want || ok != (want != "") {
			t.Errorf("slackRepo(%q) = %q, %v; want %q", in, got, ok, want)
		}
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
