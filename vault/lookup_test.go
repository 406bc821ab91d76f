package vault_test

import (
	"context"
	"errors"
	"testing"

	"github.com/nightshift/nightshift/vault"
)

func TestLookupMostSpecificFirst(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	set := func(scope, val string) {
		t.Helper()
		if _, err := f.v.Set(ctx, op, "API_KEY", scope, []byte(val)); err != nil {
			t.Fatal(err)
		}
	}
	set("server", "from-server")
	set("agents", "from-agents")
	set("repo:*", "from-star")
	set("repo:github.com/*/*", "from-wide-glob")
	set("repo:github.com/acme/*", "from-acme-glob")
	set("repo:github.com/acme/api", "from-exact-repo")
	set("agent:claude", "from-agent")
	set("task:T1", "from-task")
	task := vault.Actor{Kind: vault.ActorTask, ID: "T1"}
	for _, tc := range []struct {
		task, agent, repo string
		want, scope       string
	}{
		{"T1", "claude", "github.com/acme/api", "from-task", "task:T1"},
		{"T2", "claude", "github.com/acme/api", "from-agent", "agent:claude"},
		{"T2", "codex", "github.com/acme/api", "from-exact-repo", "repo:github.com/acme/api"},
		{"T2", "codex", "github.com/acme/web", "from-acme-glob", "repo:github.com/acme/*"},
		{"T2", "codex", "github.com/other/web", "from-wide-glob", "repo:github.com/*/*"},
		{"T2", "codex", "gitlab.com/acme/api", "from-star", "repo:*"},
		{"T2", "codex", "/srv/git/api.git", "from-star", "repo:*"},
		{"T2", "codex", "", "from-agents", "agents"},
		{"", "", "", "from-agents", "agents"},
	} {
		got, scope, err := f.v.Lookup(ctx, task, "API_KEY", vault.ScopesFor(tc.task, tc.agent, tc.repo))
		if err != nil || string(got) != tc.want || scope != tc.scope {
			t.Errorf("%+v: got %q from %q, %v", tc, got, scope, err)
		}
	}
	if _, _, err := f.v.Lookup(ctx, task, "OTHER", vault.ScopesFor("T1", "claude", "x")); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
	// A destroyed task value falls through to the agent's.
	if _, err := f.v.Destroy(ctx, op, "API_KEY", "task:T1", 0); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := f.v.Lookup(ctx, task, "API_KEY", vault.ScopesFor("T1", "claude", "")); string(got) != "from-agent" {
		t.Fatalf("after destroy: %q", got)
	}
	// A task's repository in two forms (its clone URL and host/owner/name):
	// an exact name in either form beats every glob, and globs match either.
	for _, tc := range []struct {
		repos       []string
		want, scope string
	}{
		{[]string{"https://github.com/acme/api.git", "github.com/acme/api"}, "from-exact-repo", "repo:github.com/acme/api"},
		{[]string{"https://github.com/acme/web.git", "github.com/acme/web"}, "from-acme-glob", "repo:github.com/acme/*"},
		{[]string{"https://github.com/acme/web.git"}, "from-star", "repo:*"},
	} {
		got, scope, err := f.v.Lookup(ctx, task, "API_KEY", vault.ScopesFor("T9", "codex", tc.repos...))
		if err != nil || string(got) != tc.want || scope != tc.scope {
			t.Errorf("%v: got %q from %q, %v", tc.repos, got, scope, err)
		}
	}
}

func TestValidation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"API_KEY", true}, {"A", true}, {"X9_", true},
		{"", false}, {"api_key", false}, {"9A", false}, {"_A", false}, {"A-B", false}, {"A B", false},
	} {
		if err := vault.ValidateName(tc.name); (err == nil) != tc.ok {
			t.Errorf("name %q: %v", tc.name, err)
		} else if err != nil && !errors.Is(err, vault.ErrInvalidName) {
			t.Errorf("name %q: wrong error %v", tc.name, err)
		}
	}
	for _, tc := range []struct {
		scope string
		ok    bool
	}{
		{"server", true}, {"agents", true}, {"global", true}, {"repo:github.com/acme/*", true}, {"repo:*", true}, {"repo:/srv/git/x", true}, {"agent:claude", true}, {"task:01J", true},
		{"", false}, {"Global", false}, {"agent", false}, {"agents:x", false}, {"repo:", false}, {"repo:[", false}, {"team:x", false}, {"task:a b", false}, {"agent:a\nb", false},
	} {
		if err := vault.ValidateScope(tc.scope); (err == nil) != tc.ok {
			t.Errorf("scope %q: %v", tc.scope, err)
		}
	}
	ctx := context.Background()
	f := newFixture(t)
	for _, a := range []vault.Actor{{}, {Kind: "root", ID: "x"}, {Kind: "task"}} {
		if _, err := f.v.Set(ctx, a, "OK", "global", []byte("value-value")); !errors.Is(err, vault.ErrInvalidActor) {
			t.Errorf("actor %+v: %v", a, err)
		}
	}
}

func TestLookupAll(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	for _, s := range []struct{ name, scope, val string }{
		{"A_KEY", "server", "a-server"},
		{"A_KEY", "task:T1", "a-task"},
		{"S_KEY", "server", "s-server-only"},
		{"B_KEY", "repo:github.com/acme/*", "b-repo"},
		{"C_KEY", "agent:codex", "c-other-agent"},
		{"D_KEY", "task:T2", "d-other-task"},
	} {
		if _, err := f.v.Set(ctx, op, s.name, s.scope, []byte(s.val)); err != nil {
			t.Fatal(err)
		}
	}
	task := vault.Actor{Kind: vault.ActorTask, ID: "T1"}
	got, err := f.v.LookupAll(ctx, task, vault.ScopesFor("T1", "claude", "github.com/acme/api"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || string(got["A_KEY"].Value) != "a-task" || got["A_KEY"].Scope != "task:T1" || string(got["B_KEY"].Value) != "b-repo" {
		t.Fatalf("got %+v", got)
	}
	entries, err := f.v.AuditLog(ctx, op, vault.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	reads := 0
	for _, e := range entries {
		if e.Action == "lookup" && e.ActorID == "T1" {
			reads++
		}
	}
	if reads != 2 {
		t.Fatalf("want 2 audited reads, got %d", reads)
	}
}

func TestRedactorFor(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	if _, err := f.v.Set(ctx, op, "PLAIN", "agents", []byte("plain-secret-value")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.v.SetToken(ctx, op, "GH", "agents", vault.Token{Provider: "github", AccessToken: "gho_access_abcdef", RefreshToken: "ghr_refresh_abcdef"}); err != nil {
		t.Fatal(err)
	}
	all, err := f.v.LookupAll(ctx, op, vault.ScopesFor("", "", ""))
	if err != nil {
		t.Fatal(err)
	}
	r := vault.RedactorFor(all)
	got := r.String("push with gho_access_abcdef, refresh ghr_refresh_abcdef, pw plain-secret-value")
	want := "push with [REDACTED:GH_ACCESS_TOKEN], refresh [REDACTED:GH_REFRESH_TOKEN], pw [REDACTED:PLAIN]"
	if got != want {
		t.Fatalf("got %q", got)
	}

	// A task's redactor covers its grants and the server's secrets, even
	// one sharing a granted name.
	if _, err := f.v.Set(ctx, op, "PLAIN", "server", []byte("server-plain-value")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.v.SetToken(ctx, op, "SERVER_GH", "server", vault.Token{Provider: "github", AccessToken: "gho_server_abcdef"}); err != nil {
		t.Fatal(err)
	}
	server, err := f.v.ServerSecrets(ctx, op)
	if err != nil {
		t.Fatal(err)
	}
	r = vault.NewRedactor(vault.RedactionValues(all, server))
	got = r.String("pw plain-secret-value, server pw server-plain-value, git: gho_server_abcdef denied")
	want = "pw [REDACTED:PLAIN], server pw [REDACTED:PLAIN (server)], git: [REDACTED:SERVER_GH_ACCESS_TOKEN] denied"
	if got != want {
		t.Fatalf("got %q", got)
	}
}
