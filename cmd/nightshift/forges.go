package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/ingress/webhook"
	"github.com/nightshift/nightshift/orchestrator/forge"
	"github.com/nightshift/nightshift/orchestrator/forge/gitea"
	"github.com/nightshift/nightshift/orchestrator/forge/gitlab"
	"github.com/nightshift/nightshift/orchestrator/github"
	"github.com/nightshift/nightshift/vault"
)

// The forges: entries other than the github: block (which newRoundTrip
// wires as before) become drivers in the forge registry: every change
// request, reaction, progress comment and permission check goes through
// the registry's driver for the repository's host.

// secretAtUse returns a function resolving s at each call, so a rotated
// vault secret is picked up without a restart; errors name key.
func secretAtUse(resolve func(config.Secret) (string, error), key string, s config.Secret) func(context.Context) (string, error) {
	return func(context.Context) (string, error) {
		v, err := resolve(s)
		if err == nil && v == "" {
			err = errors.New("empty")
		}
		if err != nil {
			return "", fmt.Errorf("%s: %w", key, err)
		}
		return v, nil
	}
}

// forgeSecretKeys lists the credentials of the forges: entries (not the
// github: block) as key → secret, for newRoundTrip to resolve into its
// redactor: forges[i].token, forges[i].private_key.
func forgeSecretKeys(cfg *config.Config) map[string]config.Secret {
	out := map[string]config.Secret{}
	for _, f := range cfg.Forges {
		if f.Shorthand {
			continue
		}
		if f.Token.IsSet() {
			out[f.Key()+".token"] = f.Token
		}
		if f.PrivateKey.IsSet() {
			out[f.Key()+".private_key"] = f.PrivateKey
		}
	}
	return out
}

// newForgeDrivers builds the driver of every forges: entry that has
// credentials (the github: block's is built by newRoundTrip). Tokens are
// resolved at each use. An entry without credentials gets no driver: its
// webhooks still arrive, but nothing is posted back, pushes carry no
// credentials and comment triggers are refused (their authors cannot be
// checked). key resolves a GitHub App key once (vault.ErrNotFound: the
// entry is skipped with a warning).
func newForgeDrivers(cfg *config.Config, resolve func(config.Secret) (string, error), redact func(string) string,
	logger *slog.Logger) ([]forge.Driver, error) {
	var out []forge.Driver
	for _, f := range cfg.Forges {
		if f.Shorthand {
			continue
		}
		key := f.Key()
		log := logger.With("forge", key, "kind", f.Kind, "git_url", f.GitURL)
		var tokenFunc func(context.Context) (string, error)
		if f.Token.IsSet() {
			tokenFunc = secretAtUse(resolve, key+".token", f.Token)
		}
		var d forge.Driver
		var err error
		switch f.Kind {
		case config.ForgeGitHub:
			var pem string
			if f.AppID != 0 {
				pem, err = resolve(f.PrivateKey)
				if errors.Is(err, vault.ErrNotFound) {
					log.Warn("private key not in the vault; the GitHub App is off for this forge", "key", key+".private_key")
					pem, err = "", nil
				} else if err != nil {
					return nil, fmt.Errorf("%s.private_key: %w", key, err)
				}
			}
			appID := f.AppID
			if pem == "" {
				appID = 0
			}
			if appID == 0 && tokenFunc == nil {
				log.Info("no token or app: webhooks only")
				continue
			}
			d, err = github.New(github.Config{APIURL: f.APIURL, GitURL: f.GitURL, AppID: appID, PrivateKey: pem, TokenFunc: tokenFunc,
				PublicURL: cfg.PublicURL, Redact: redact, Logger: logger, Draft: draftFor(cfg)})
		case config.ForgeGitLab:
			if tokenFunc == nil {
				log.Info("no token: webhooks only")
				continue
			}
			d, err = gitlab.New(gitlab.Config{APIURL: f.APIURL, GitURL: f.GitURL, TokenFunc: tokenFunc, TriggerLevel: f.TriggerLevel, Logger: logger})
		case config.ForgeGitea:
			if tokenFunc == nil {
				log.Info("no token: webhooks only")
				continue
			}
			d, err = gitea.New(gitea.Config{APIURL: f.APIURL, GitURL: f.GitURL, TokenFunc: tokenFunc, Logger: logger})
		default:
			return nil, fmt.Errorf("%s.kind: unknown forge kind %q", key, f.Kind)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// draftFor is repos[].draft: change requests are drafts unless the
// repository's entry says draft: false.
func draftFor(cfg *config.Config) func(string) bool {
	return func(repo string) bool { d := cfg.RepoFor(repo).Draft; return d == nil || *d }
}

// forgeOptions are the registry-wide publishing and reporting options.
func forgeOptions(cfg *config.Config, redact func(string) string, logger *slog.Logger) forge.Options {
	return forge.Options{PublicURL: cfg.PublicURL, Draft: draftFor(cfg), Redact: redact, Logger: logger.With("component", "forge")}
}

// forgeWebhooks is the webhook configuration of the forges: entries other
// than the github: block (GitLab on /hooks/gitlab, Gitea on /hooks/gitea,
// further GitHub hosts on /hooks/github, told apart by their secrets) and
// the sources speaking the GitLab and Gitea dialects.
func forgeWebhooks(cfg *config.Config, resolveAll func([]config.Secret) ([]string, error), logger *slog.Logger) ([]webhook.ForgeConfig, []webhook.Source, error) {
	var out []webhook.ForgeConfig
	for _, f := range cfg.Forges {
		if f.Shorthand {
			continue
		}
		var kind forge.Kind
		switch f.Kind {
		case config.ForgeGitLab:
			kind = forge.KindGitLab
		case config.ForgeGitea:
			kind = forge.KindGitea
		case config.ForgeGitHub:
			kind = forge.KindGitHub
		default:
			return nil, nil, fmt.Errorf("%s.kind: unknown forge kind %q", f.Key(), f.Kind)
		}
		secrets, err := resolveAll(f.WebhookSecrets)
		if err != nil {
			return nil, nil, fmt.Errorf("%s.webhook_secrets: %w", f.Key(), err)
		}
		out = append(out, webhook.ForgeConfig{Kind: kind, Secrets: secrets, GitURL: f.GitURL, Trigger: f.Trigger, Label: f.Label,
			BotLogin: f.BotLogin, ReplyRefused: f.ReplyOnRefusal})
	}
	return out, []webhook.Source{webhook.GitLabSource(), webhook.GiteaSource{}}, nil
}
