package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/sandbox/bwrap"
)

// processPath is PATH for agents under the process driver.
const processPath = "/usr/local/bin:/usr/bin:/bin"

// preflight returns the worker's check of what a run needs, made before
// anything is provisioned so that a task that cannot run fails at once and
// says why (reason "preflight"), instead of sitting in running until a
// timeout with the cause in the server log:
//   - the agent is configured and its command resolves on the PATH the
//     sandbox gives it (the sandbox's tools first), to a file the sandbox
//     can see;
//   - a claude or codex agent has a model API key the gateway can resolve
//     (models.anthropic / models.openai), resolved now, at use;
//   - a repository on the GitHub host has push credentials (github.token,
//     or github.app_id with github.private_key);
//   - a remote repository's host answers a TCP connection within 10 s.
func preflight(cfg *config.Config, env map[string]string, resolve func(config.Secret) (string, error), tools map[string]string) func(context.Context, orchestrator.WorkItem) error {
	return func(ctx context.Context, item orchestrator.WorkItem) error {
		ag, ok := cfg.AgentFor(item.Agent)
		if !ok {
			return fmt.Errorf("agent %q is not configured in nightshift.yaml (agents.%s)", item.Agent, item.Agent)
		}
		if err := checkCommand(cfg, item.Agent, ag, tools); err != nil {
			return err
		}
		if err := checkModelKey(item.Agent, ag.Kind, cfg, resolve); err != nil {
			return err
		}
		if err := checkPushCredentials(item.Repo, cfg, resolve); err != nil {
			return err
		}
		return checkReachable(ctx, item.Repo, env)
	}
}

// checkCommand resolves the agent's command as the sandbox will: a bare
// name through the sandbox's tools, then the directories of its PATH (the
// agent's env may set another PATH).
func checkCommand(cfg *config.Config, name string, ag config.Agent, tools map[string]string) error {
	argv0 := ag.Command[0]
	if !strings.Contains(argv0, "/") {
		if _, ok := tools[argv0]; ok {
			return nil
		}
	}
	path := sandboxPath
	if cfg.Sandbox.Driver == "process" {
		path = processPath
	}
	if p, ok := ag.Env["PATH"]; ok && !strings.Contains(p, "${") {
		path = p
	}
	switch {
	case strings.Contains(argv0, "/") && !filepath.IsAbs(argv0):
		return nil // relative to the worktree: only the run can tell
	case filepath.IsAbs(argv0):
		if err := visibleExecutable(cfg, argv0); err != nil {
			return fmt.Errorf("agent %q cannot start: %s %v; fix agents.%s.command in nightshift.yaml", name, argv0, err, name)
		}
		return nil
	}
	var why []string
	for _, dir := range filepath.SplitList(path) {
		if dir == "" || !filepath.IsAbs(dir) || dir == bwrap.ToolDir {
			continue
		}
		err := visibleExecutable(cfg, filepath.Join(dir, argv0))
		if err == nil {
			return nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			why = append(why, filepath.Join(dir, argv0)+" "+err.Error())
		}
	}
	msg := fmt.Sprintf("agent %q cannot start: %q is not on the sandbox's PATH (%s)", name, argv0, path)
	if len(why) > 0 {
		msg += ": " + strings.Join(why, "; ")
	}
	return fmt.Errorf("%s; install it there or set agents.%s.command to its full path", msg, name)
}

// visibleExecutable reports why p is not an executable file the sandbox
// can run: missing, not executable, or (bwrap) outside the system paths
// bound into the sandbox once links are followed.
func visibleExecutable(cfg *config.Config, p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("does not exist: %w", os.ErrNotExist)
		}
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return errors.New("is not an executable file")
	}
	if cfg.Sandbox.Driver == "process" {
		return nil
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return err
	}
	for _, sys := range bwrap.DefaultSystemPaths() {
		if real == sys || strings.HasPrefix(real, sys+"/") {
			return nil
		}
	}
	return fmt.Errorf("is %s, outside the directories the sandbox mounts (%s)", real, strings.Join(bwrap.DefaultSystemPaths(), ", "))
}

// checkModelKey makes sure a claude or codex agent's requests can reach
// the model: the gateway injects the provider key, so it must resolve.
func checkModelKey(name, kind string, cfg *config.Config, resolve func(config.Secret) (string, error)) error {
	var m config.Model
	var provider, secret string
	switch kind {
	case "claude":
		m, provider, secret = cfg.Models.Anthropic, "anthropic", "ANTHROPIC_API_KEY"
	case "codex":
		m, provider, secret = cfg.Models.OpenAI, "openai", "OPENAI_API_KEY"
	default:
		return nil
	}
	if !m.APIKey.IsSet() {
		return fmt.Errorf("agent %q needs a model API key and models.%s.api_key is not set: store it with \"nightshift vault set %s\" and add models: {%s: {api_key: \"${vault:%s}\"}} to nightshift.yaml",
			name, provider, secret, provider, secret)
	}
	key, err := resolve(m.APIKey)
	if err != nil {
		return fmt.Errorf("agent %q needs a model API key and models.%s.api_key cannot be resolved: %v", name, provider, err)
	}
	if strings.TrimSpace(key) == "" {
		return fmt.Errorf("agent %q needs a model API key and models.%s.api_key resolves to an empty value", name, provider)
	}
	return nil
}

// checkPushCredentials fails a repository on the GitHub host when no
// GitHub credentials are configured or its token cannot be resolved: the
// work could be done but never pushed.
func checkPushCredentials(repo string, cfg *config.Config, resolve func(config.Secret) (string, error)) error {
	u, err := url.Parse(repo)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.User != nil {
		return nil
	}
	base := cfg.GitHub.GitURL
	if base == "" {
		base = config.GitHubGitURL(cfg.GitHub.APIURL)
	}
	gh, err := url.Parse(base)
	if err != nil || !strings.EqualFold(gh.Host, u.Host) {
		return nil
	}
	if cfg.GitHub.AppID != 0 && cfg.GitHub.PrivateKey.IsSet() {
		return nil
	}
	if !cfg.GitHub.Token.IsSet() {
		return fmt.Errorf("no push credentials for %s: set github.token (or github.app_id and github.private_key) in nightshift.yaml", u.Host)
	}
	tok, err := resolve(cfg.GitHub.Token)
	if err != nil {
		return fmt.Errorf("no push credentials for %s: github.token cannot be resolved: %v", u.Host, err)
	}
	if strings.TrimSpace(tok) == "" {
		return fmt.Errorf("no push credentials for %s: github.token resolves to an empty value", u.Host)
	}
	return nil
}

// checkReachable dials a remote repository's host, so an unreachable one
// fails in seconds rather than after the fetch timeout. Behind a proxy
// (HTTPS_PROXY and the like in the server's environment) it does not.
func checkReachable(ctx context.Context, repo string, env map[string]string) error {
	if !config.RemoteRepo(repo) {
		return nil
	}
	for _, k := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"} {
		if env[k] != "" {
			return nil
		}
	}
	var host, port string
	if u, err := url.Parse(repo); err == nil && u.Host != "" {
		host, port = u.Hostname(), u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443", "ssh": "22"}[strings.ToLower(u.Scheme)]
		}
	} else {
		before, _, _ := strings.Cut(repo, ":")
		host, port = before[strings.LastIndexByte(before, '@')+1:], "22"
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, port))
	if err != nil {
		return fmt.Errorf("the repository's host %s is not reachable: %v", net.JoinHostPort(host, port), err)
	}
	c.Close()
	return nil
}
