package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nightshift/nightshift/config"
)

// TestPreflightCommandIsResolvedAsTheSandboxSeesIt: a command is checked
// against what the driver shows the agent: under bwrap an executable
// outside the mounted system directories (or reached through a link that
// leads out of them) cannot start, while the process driver runs it; a
// PATH set in the agent's env is the one searched, and a tool the sandbox
// provides needs no host file.
func TestPreflightCommandIsResolvedAsTheSandboxSeesIt(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	exe := filepath.Join(dir, "agent-bin")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "not-exec")
	if err := os.WriteFile(plain, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, driver string
		ag           config.Agent
		tools        map[string]string
		want         string // "" means the command is accepted
	}{
		{"abs outside mounts, bwrap", "bwrap", config.Agent{Command: []string{exe}}, nil, "outside the directories the sandbox mounts"},
		{"abs outside mounts, process", "process", config.Agent{Command: []string{exe}}, nil, ""},
		{"not executable", "process", config.Agent{Command: []string{plain}}, nil, "is not an executable file"},
		{"system binary, bwrap", "bwrap", config.Agent{Command: []string{"sh"}}, nil, ""},
		{"env PATH searched, bwrap", "bwrap", config.Agent{Command: []string{"agent-bin"}, Env: map[string]string{"PATH": dir}}, nil, "outside the directories the sandbox mounts"},
		{"env PATH searched, process", "process", config.Agent{Command: []string{"agent-bin"}, Env: map[string]string{"PATH": dir}}, nil, ""},
		{"missing", "bwrap", config.Agent{Command: []string{"no-such-agent-binary"}}, nil, "is not on the sandbox's PATH"},
		{"sandbox tool", "bwrap", config.Agent{Command: []string{"no-such-agent-binary"}}, map[string]string{"no-such-agent-binary": exe}, ""},
		{"relative to the worktree", "bwrap", config.Agent{Command: []string{"./run.sh"}}, nil, ""},
	} {
		cfg := &config.Config{Sandbox: config.Sandbox{Driver: tc.driver}}
		err := checkCommand(cfg, "a", tc.ag, tc.tools)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want accepted", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestPreflightPushCredentials: only a repository on the configured GitHub
// host needs push credentials; an app or a resolvable token gives them.
func TestPreflightPushCredentials(t *testing.T) {
	t.Parallel()
	resolve := func(s config.Secret) (string, error) { return "tok", nil }
	for _, tc := range []struct {
		name, repo string
		gh         config.GitHub
		want       string
	}{
		{"github, nothing set", "https://github.com/acme/app.git", config.GitHub{}, "no push credentials for github.com"},
		{"other host", "https://git.example.com/acme/app.git", config.GitHub{}, ""},
		{"local path", "/srv/git/app.git", config.GitHub{}, ""},
		{"credentials in the URL", "https://x:y@github.com/acme/app.git", config.GitHub{}, ""},
		{"enterprise host from git_url", "https://ghe.example.com/acme/app.git", config.GitHub{GitURL: "https://ghe.example.com/"}, "no push credentials for ghe.example.com"},
		{"token", "https://github.com/acme/app.git", config.GitHub{Token: config.Secret("t")}, ""},
	} {
		cfg := &config.Config{GitHub: tc.gh}
		err := checkPushCredentials(tc.repo, cfg, resolve)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want accepted", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
