package vault_test

import (
	"context"
	"errors"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/nightshift/nightshift/vault"
)

// TestScopeVisibility is the scope contract as a table: for one secret per
// scope, which of them each kind of read sees. The server's own read
// (Resolve, for ${vault:NAME} in its configuration) sees only server
// secrets, old "global" ones included; every read made for a task (Lookup,
// LookupAll, TaskResolver) sees only what is granted to that task and never
// a server secret.
func TestScopeVisibility(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	for _, s := range []struct{ name, scope string }{
		{"S_SERVER", "server"},
		{"S_ALIAS", "global"}, // set today with the old name
		{"S_AGENTS", "agents"},
		{"S_REPO_EXACT", "repo:github.com/acme/api"},
		{"S_REPO_GLOB", "repo:github.com/acme/*"},
		{"S_REPO_PATH", "repo:/srv/git/*"},
		{"S_AGENT", "agent:fixer"},
		{"S_TASK", "task:T1"},
	} {
		if _, err := f.v.Set(ctx, op, s.name, s.scope, []byte("value-of-"+s.name)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.v.SetLegacyGlobal(ctx, op, "S_LEGACY", []byte("value-of-S_LEGACY")); err != nil {
		t.Fatal(err)
	}
	all := []string{"S_SERVER", "S_ALIAS", "S_LEGACY", "S_AGENTS", "S_REPO_EXACT", "S_REPO_GLOB", "S_REPO_PATH", "S_AGENT", "S_TASK"}

	for _, tc := range []struct {
		read  string
		repos []string
		task  string
		agent string
		want  []string
	}{
		{read: "config", want: []string{"S_ALIAS", "S_LEGACY", "S_SERVER"}},
		{read: "task", task: "T1", agent: "fixer", repos: []string{"https://github.com/acme/api.git", "github.com/acme/api"},
			want: []string{"S_AGENT", "S_AGENTS", "S_REPO_EXACT", "S_REPO_GLOB", "S_TASK"}},
		{read: "task", task: "T2", agent: "claude", repos: []string{"github.com/acme/web"},
			want: []string{"S_AGENTS", "S_REPO_GLOB"}},
		{read: "task", task: "T2", agent: "claude", repos: []string{"https://github.com/acme/web.git"},
			want: []string{"S_AGENTS"}}, // the URL alone does not match a host/owner/name glob
		{read: "task", task: "T3", agent: "fixer", repos: []string{"/srv/git/app.git", "/srv/git/app"},
			want: []string{"S_AGENT", "S_AGENTS", "S_REPO_PATH"}},
		{read: "task", want: []string{"S_AGENTS"}},
	} {
		var seen []string
		if tc.read == "config" {
			for _, n := range all {
				if v, err := f.v.Resolve(ctx, "vault", n); err == nil {
					if v != "value-of-"+n {
						t.Errorf("Resolve %s = %q", n, v)
					}
					seen = append(seen, n)
				} else if !errors.Is(err, vault.ErrNotFound) {
					t.Errorf("Resolve %s: %v", n, err)
				}
			}
			sort.Strings(seen)
			if strings.Join(seen, " ") != strings.Join(tc.want, " ") {
				t.Errorf("config references see %v, want %v", seen, tc.want)
			}
			continue
		}
		scopes := vault.ScopesFor(tc.task, tc.agent, tc.repos...)
		actor := vault.Actor{Kind: vault.ActorTask, ID: "T"}
		res := f.v.TaskResolver(actor, scopes)
		var viaLookup, viaResolver []string
		for _, n := range all {
			v, _, err := f.v.Lookup(ctx, actor, n, scopes)
			switch {
			case err == nil && string(v) == "value-of-"+n:
				viaLookup = append(viaLookup, n)
			case err == nil || !errors.Is(err, vault.ErrNotFound):
				t.Errorf("%v: Lookup %s = %q, %v", scopes, n, v, err)
			}
			rv, err := res.Resolve(ctx, "ravi", n)
			var ng *vault.NotGrantedError
			switch {
			case err == nil && rv == "value-of-"+n:
				viaResolver = append(viaResolver, n)
			case errors.As(err, &ng) && ng.Name == n && errors.Is(err, vault.ErrNotFound):
				if strings.Contains(err.Error(), "value-of-") {
					t.Errorf("the refusal carries a value: %v", err)
				}
			default:
				t.Errorf("%v: TaskResolver %s = %q, %v", scopes, n, rv, err)
			}
		}
		got, err := f.v.LookupAll(ctx, actor, scopes)
		if err != nil {
			t.Fatal(err)
		}
		var viaAll []string
		for n, s := range got {
			if string(s.Value) != "value-of-"+n {
				t.Errorf("LookupAll %s = %q", n, s.Value)
			}
			viaAll = append(viaAll, n)
		}
		sort.Strings(viaLookup)
		sort.Strings(viaResolver)
		sort.Strings(viaAll)
		want := strings.Join(tc.want, " ")
		for what, list := range map[string][]string{"Lookup": viaLookup, "TaskResolver": viaResolver, "LookupAll": viaAll} {
			if strings.Join(list, " ") != want {
				t.Errorf("%v: %s sees %v, want %v", scopes, what, list, tc.want)
			}
		}
	}
}

// TestTaskReadsRefuseTheServerScope: no caller can name the server scope
// (or its old name) in a read made for a task.
func TestTaskReadsRefuseTheServerScope(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	if _, err := f.v.Set(ctx, op, "MODEL_KEY", "server", []byte("sk-server-value")); err != nil {
		t.Fatal(err)
	}
	task := vault.Actor{Kind: vault.ActorTask, ID: "T1"}
	for _, scopes := range [][]string{{"server"}, {"global"}, {"task:T1", "agents", "server"}} {
		if v, _, err := f.v.Lookup(ctx, task, "MODEL_KEY", scopes); !errors.Is(err, vault.ErrInvalidScope) {
			t.Errorf("Lookup %v = %q, %v; want ErrInvalidScope", scopes, v, err)
		}
		if m, err := f.v.LookupAll(ctx, task, scopes); !errors.Is(err, vault.ErrInvalidScope) {
			t.Errorf("LookupAll %v = %v, %v; want ErrInvalidScope", scopes, m, err)
		}
		if v, err := f.v.TaskResolver(task, scopes).Resolve(ctx, "vault", "MODEL_KEY"); !errors.Is(err, vault.ErrInvalidScope) {
			t.Errorf("TaskResolver %v = %q, %v; want ErrInvalidScope", scopes, v, err)
		}
	}
	for _, s := range vault.ScopesFor("T1", "claude", "github.com/acme/api") {
		if s == "server" || s == "global" {
			t.Fatalf("ScopesFor includes %s", s)
		}
	}
}

// TestLegacyGlobalIsServer: a secret stored as "global" before the server
// scope existed is a server secret: the server reads it under either name,
// new versions continue its numbering, it lists, destroys and survives key
// rotation as one server secret, and no task sees it.
func TestLegacyGlobalIsServer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	if _, err := f.v.SetLegacyGlobal(ctx, op, "GITHUB_TOKEN", []byte("ghp-legacy-one")); err != nil {
		t.Fatal(err)
	}
	for _, scope := range []string{"server", "global"} {
		if got, err := f.v.Get(ctx, op, "GITHUB_TOKEN", scope); err != nil || string(got) != "ghp-legacy-one" {
			t.Fatalf("Get %s = %q, %v", scope, got, err)
		}
	}
	if _, _, err := f.v.Lookup(ctx, op, "GITHUB_TOKEN", vault.ScopesFor("T1", "claude", "github.com/acme/api")); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("a task read a legacy global secret: %v", err)
	}
	ver, err := f.v.Set(ctx, op, "GITHUB_TOKEN", "global", []byte("ghp-new-two"))
	if err != nil || ver != 2 {
		t.Fatalf("Set after legacy: version %d, %v", ver, err)
	}
	if got, err := f.v.Get(ctx, op, "GITHUB_TOKEN", "server"); err != nil || string(got) != "ghp-new-two" {
		t.Fatalf("latest = %q, %v", got, err)
	}
	if got, err := f.v.GetVersion(ctx, op, "GITHUB_TOKEN", "server", 1); err != nil || string(got) != "ghp-legacy-one" {
		t.Fatalf("version 1 = %q, %v", got, err)
	}
	if _, _, err := f.v.RotateKEK(ctx, op); err != nil {
		t.Fatal(err)
	}
	sec, err := f.v.Read(ctx, op, "GITHUB_TOKEN", "global", 1)
	if err != nil || string(sec.Value) != "ghp-legacy-one" || sec.Scope != "server" {
		t.Fatalf("after rotation: %+v, %v", sec, err)
	}
	list, err := f.v.List(ctx, op)
	if err != nil || len(list) != 1 || list[0].Scope != "server" || list[0].Latest != 2 || len(list[0].Versions) != 2 {
		t.Fatalf("List = %+v, %v", list, err)
	}
	server, err := f.v.ServerSecrets(ctx, op)
	if err != nil || len(server) != 1 || string(server["GITHUB_TOKEN"].Value) != "ghp-new-two" {
		t.Fatalf("ServerSecrets = %v, %v", server, err)
	}
	if n, err := f.v.Destroy(ctx, op, "GITHUB_TOKEN", "server", 0); err != nil || n != 2 {
		t.Fatalf("Destroy = %d, %v", n, err)
	}
	if _, err := f.v.Resolve(ctx, "vault", "GITHUB_TOKEN"); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("after destroy: %v", err)
	}
	if rep, err := f.v.VerifyAudit(ctx, op); err != nil || !rep.OK() {
		t.Fatalf("audit: %+v, %v", rep, err)
	}
}

// TestRepoMatcherIsConfigurable: with Config.MatchRepo (the server passes
// the rule of repos[].match) a repo scope is matched by that rule, here
// against a task's clone URL alone; every stored repo scope, exact names
// included, goes through it, and the most specific one wins.
func TestRepoMatcherIsConfigurable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	norm := func(pattern, repo string) bool {
		key := strings.TrimSuffix(strings.TrimPrefix(repo, "https://"), ".git")
		return vault.MatchRepo(pattern, key)
	}
	v, err := vault.Open(ctx, f.db, f.keys, vault.Config{MatchRepo: norm})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct{ name, scope string }{
		{"WIDE", "repo:github.com/acme/*"},
		{"BOTH", "repo:*"},
		{"BOTH", "repo:github.com/acme/app"},
	} {
		if _, err := v.Set(ctx, op, s.name, s.scope, []byte("value-from-"+s.scope)); err != nil {
			t.Fatal(err)
		}
	}
	task := vault.Actor{Kind: vault.ActorTask, ID: "T1"}
	scopes := vault.ScopesFor("T1", "claude", "https://github.com/acme/app.git")
	for name, want := range map[string]string{"WIDE": "repo:github.com/acme/*", "BOTH": "repo:github.com/acme/app"} {
		got, scope, err := v.Lookup(ctx, task, name, scopes)
		if err != nil || scope != want || string(got) != "value-from-"+want {
			t.Errorf("%s with the configured matcher: %q from %q, %v; want %s", name, got, scope, err, want)
		}
	}
	// The default matcher takes the URL as given: only repo:* matches it.
	if _, _, err := f.v.Lookup(ctx, task, "WIDE", scopes); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("default matcher matched a host/owner/name glob against a URL: %v", err)
	}
	if _, scope, err := f.v.Lookup(ctx, task, "BOTH", scopes); err != nil || scope != "repo:*" {
		t.Errorf("default matcher: %q, %v", scope, err)
	}
}

// TestScopesForOrder: a task's scopes run from the most specific to the
// least, each form of its repository once, and never the server scope.
func TestScopesForOrder(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		task, agent string
		repos       []string
		want        []string
	}{
		{"T1", "claude", []string{"https://github.com/acme/app.git", "github.com/acme/app"},
			[]string{"task:T1", "agent:claude", "repo:https://github.com/acme/app.git", "repo:github.com/acme/app", "agents"}},
		{"T1", "", []string{"github.com/acme/app", "github.com/acme/app"},
			[]string{"task:T1", "repo:github.com/acme/app", "agents"}},
		{"", "", []string{""}, []string{"agents"}},
	} {
		got := vault.ScopesFor(tc.task, tc.agent, tc.repos...)
		if !slices.Equal(got, tc.want) {
			t.Errorf("ScopesFor(%q, %q, %q) = %v, want %v", tc.task, tc.agent, tc.repos, got, tc.want)
		}
		if slices.Contains(got, vault.ScopeServer) || slices.Contains(got, vault.ScopeGlobal) {
			t.Errorf("ScopesFor(%q, %q, %q) grants the server scope: %v", tc.task, tc.agent, tc.repos, got)
		}
	}
}
