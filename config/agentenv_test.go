package config_test

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "modernc.org/sqlite"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/vault"
)

// TestAgentEnvResolvesFromGrantedScopes: ${vault:NAME} and ${ravi:NAME} in
// agents.<name>.env resolve, for one task, from the scopes granted to it
// (through a real vault's TaskResolver); a server-only secret is refused
// with an error naming the variable and the secret, never its value.
func TestAgentEnvResolvesFromGrantedScopes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "db")+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	v, err := vault.Open(ctx, db, vault.EnvKey(hex.EncodeToString(make([]byte, 32))), vault.Config{MatchRepo: config.MatchRepo})
	if err != nil {
		t.Fatal(err)
	}
	op := vault.Actor{Kind: vault.ActorOperator, ID: "test"}
	for _, s := range []struct{ name, scope, value string }{
		{"NPM_TOKEN", "agents", "npm-for-every-agent"},
		{"DEPLOY_KEY", "repo:github.com/acme/*", "deploy-for-acme"},
		{"FIXER_ONLY", "agent:fixer", "fixer-value"},
		{"DEPLOY_KEY", "repo:/srv/git/**", "deploy-for-local"},
		{"ANTHROPIC_API_KEY", "server", "sk-ant-server-only"},
	} {
		if _, err := v.Set(ctx, op, s.name, s.scope, []byte(s.value)); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(dir, "nightshift.yaml")
	os.WriteFile(p, []byte(`
agents:
  fixer:
    command: [sh, -c, "true"]
    env:
      NPM_TOKEN: ${vault:NPM_TOKEN}
      DEPLOY: "key=${ravi:DEPLOY_KEY};"
      MINE: ${vault:FIXER_ONLY}
      REGION: ${env:REGION}
      SHELLISH: "${HOME}/bin"
  leaky:
    command: [sh, -c, "true"]
    env:
      KEY: ${vault:ANTHROPIC_API_KEY}
`), 0o600)
	cfg, err := config.Load(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	scopes := func(task, agent, repo string) *vault.TaskResolver {
		return v.TaskResolver(vault.Actor{Kind: vault.ActorTask, ID: task}, vault.ScopesFor(task, agent, repo, config.RepoKey(repo)))
	}
	got, err := cfg.AgentEnv(ctx, "fixer", map[string]string{"REGION": "eu"}, scopes("T1", "fixer", "https://github.com/acme/app.git"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"NPM_TOKEN": "npm-for-every-agent", "DEPLOY": "key=deploy-for-acme;", "MINE": "fixer-value", "REGION": "eu", "SHELLISH": "${HOME}/bin"}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s = %q, want %q", k, got[k], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %v", got)
	}

	// A local repository under a repos[].match-style path glob.
	got, err = cfg.AgentEnv(ctx, "fixer", map[string]string{"REGION": "eu"}, scopes("T4", "fixer", "/srv/git/team/app.git"))
	if err != nil || got["DEPLOY"] != "key=deploy-for-local;" {
		t.Fatalf("local path grant: %v, %v", got, err)
	}

	// Another repository: DEPLOY_KEY is not granted, and the error says so.
	_, err = cfg.AgentEnv(ctx, "fixer", map[string]string{"REGION": "eu"}, scopes("T2", "fixer", "https://github.com/other/app.git"))
	var ng *vault.NotGrantedError
	if !errors.As(err, &ng) || ng.Name != "DEPLOY_KEY" || !strings.Contains(err.Error(), "agents.fixer.env.DEPLOY") {
		t.Fatalf("ungranted repo secret: %v", err)
	}

	// A server secret is never resolved for an agent.
	_, err = cfg.AgentEnv(ctx, "leaky", nil, scopes("T3", "leaky", "https://github.com/acme/app.git"))
	if !errors.As(err, &ng) || ng.Name != "ANTHROPIC_API_KEY" || !strings.Contains(err.Error(), "agents.leaky.env.KEY") ||
		!strings.Contains(err.Error(), "ANTHROPIC_API_KEY is not granted") {
		t.Fatalf("server secret in agent env: %v", err)
	}
	if strings.Contains(err.Error(), "sk-ant-server-only") {
		t.Fatalf("the refusal carries the server value: %v", err)
	}
	// While the server's own reference to it resolves.
	if s, err := config.Secret("${vault:ANTHROPIC_API_KEY}").Resolve(ctx, nil, v); err != nil || s != "sk-ant-server-only" {
		t.Fatalf("server reference: %q, %v", s, err)
	}
	// An agent without env, and one unknown, have none.
	if env, err := cfg.AgentEnv(ctx, "claude", nil, nil); err != nil || len(env) != 0 {
		t.Fatalf("claude env = %v, %v", env, err)
	}
}

func TestAgentEnvEmptyReferenceIsNamed(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "nightshift.yaml")
	os.WriteFile(p, []byte("agents:\n  fixer:\n    command: [\"true\"]\n    env: {TOKEN: \"${vault:}\"}\n"), 0o600)
	_, err := config.Load(p, nil)
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Key != "agents.fixer.env.TOKEN" {
		t.Fatalf("want an error naming agents.fixer.env.TOKEN, got %v", err)
	}
}
