package config

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "nightshift.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadDefaults(t *testing.T) {
	c, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:8080" || c.DataDir != "./.nightshift" || c.Sandbox.Driver != "bwrap" ||
		c.DefaultAgent != "claude" || c.Worker.Concurrency != 2 || c.Sandbox.Timeout.Std() != 30*time.Minute {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestLoadExample(t *testing.T) {
	p := writeFile(t, `
agents:
  script:
    command: ["sh", "-c", "echo more >> NOTES.md"]
default_agent: script
repos:
  - match: "*"
    test: "test -f NOTES.md"
    timeout: 5m
    budget: {tokens: 2000000}
github:
  webhook_secrets: ["${env:GH_SECRET}", "old"]
`)
	c, err := Load(p, map[string]string{"NIGHTSHIFT_LISTEN": "127.0.0.1:0", "NIGHTSHIFT_SANDBOX_DRIVER": "process", "GH_SECRET": "s3"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:0" || c.Sandbox.Driver != "process" {
		t.Fatalf("env overrides not applied: %q %q", c.Listen, c.Sandbox.Driver)
	}
	r := c.RepoFor("/tmp/x.git")
	if r.Test != "test -f NOTES.md" || r.Timeout.Std() != 5*time.Minute || r.Budget.Tokens != 2000000 {
		t.Fatalf("repo: %+v", r)
	}
	a, ok := c.AgentFor("script")
	if !ok || a.Kind != "command" || a.Command[0] != "sh" {
		t.Fatalf("agent: %+v %v", a, ok)
	}
	secrets, err := ResolveAll(context.Background(), c.GitHub.WebhookSecrets, map[string]string{"GH_SECRET": "s3"}, nil)
	if err != nil || strings.Join(secrets, ",") != "s3,old" {
		t.Fatalf("secrets %v %v", secrets, err)
	}
}

func TestLoadErrorsNameTheKey(t *testing.T) {
	cases := []struct {
		name, yaml, key string
		env             map[string]string
	}{
		{"unknown top", "listn: x\n", "listn", nil},
		{"unknown nested", "sandbox:\n  drivr: bwrap\n", "sandbox.drivr", nil},
		{"unknown in list", "repos:\n  - match: '*'\n    tset: x\n", "repos[0].tset", nil},
		{"unknown in map", "agents:\n  a:\n    comand: [x]\n", "agents.a.comand", nil},
		{"bad driver", "sandbox: {driver: docker}\n", "sandbox.driver", nil},
		{"negative sandbox uid", "sandbox: {uid: -1}\n", "sandbox.uid", nil},
		{"sandbox uids out of range", "sandbox: {uids: 4294967295}\n", "sandbox.uids", nil},
		{"bad duration", "repos:\n  - match: '*'\n    timeout: soon\n", "repos[0].timeout", nil},
		{"bad type", "worker:\n  concurrency: many\n", "worker.concurrency", nil},
		{"missing match", "repos:\n  - test: x\n", "repos[0].match", nil},
		{"unknown agent", "default_agent: nobody\n", "default_agent", nil},
		{"command without argv", "agents:\n  x: {}\n", "agents.x.command", nil},
		{"bad reference", "github:\n  token: ${vualt:X}\n", "github.token", nil},
		{"bad env value", "", "worker.concurrency", map[string]string{"NIGHTSHIFT_WORKER_CONCURRENCY": "lots"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := ""
			if tc.yaml != "" {
				p = writeFile(t, tc.yaml)
			}
			_, err := Load(p, tc.env)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("want *config.Error, got %v", err)
			}
			if ce.Key != tc.key {
				t.Fatalf("key = %q, want %q (err %v)", ce.Key, tc.key, err)
			}
		})
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := Secret("hunter2")
	if s.String() != "REDACTED" || s.LogValue().String() != "REDACTED" {
		t.Fatal("secret printed")
	}
}

func TestSecretFileAndVault(t *testing.T) {
	f := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(f, []byte("abc\n"), 0o600)
	v, err := Secret("${file:"+f+"}").Resolve(context.Background(), nil, nil)
	if err != nil || v != "abc" {
		t.Fatalf("%q %v", v, err)
	}
	if _, err := Secret("${vault:X}").Resolve(context.Background(), nil, nil); !errors.Is(err, ErrNoResolver) {
		t.Fatalf("want ErrNoResolver, got %v", err)
	}
	if _, err := Secret("${env:NOPE}").Resolve(context.Background(), map[string]string{}, nil); err == nil {
		t.Fatal("missing env resolved")
	}
}

func TestRepoKey(t *testing.T) {
	for in, want := range map[string]string{
		"https://github.com/acme/app.git":         "github.com/acme/app",
		"git@github.com:acme/app.git":             "github.com/acme/app",
		"/srv/repos/app.git":                      "/srv/repos/app",
		"file:///srv/repos/app.git":               "/srv/repos/app",
		"https://x-access-token:t@github.com/a/b": "github.com/a/b",
		"ssh://git@ghe.corp.io/acme/app.git":      "ghe.corp.io/acme/app",
		"github.com/acme/app":                     "github.com/acme/app",
		"https://github.com/acme/app/":            "github.com/acme/app",
		"https://github.com/acme/app@v2":          "github.com/acme/app@v2",
	} {
		if got := RepoKey(in); got != want {
			t.Errorf("RepoKey(%q) = %q, want %q", in, got, want)
		}
	}
}
