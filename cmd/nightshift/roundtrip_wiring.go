package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/ingress/webhook"
	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/forge"
	"github.com/nightshift/nightshift/orchestrator/github"
	"github.com/nightshift/nightshift/orchestrator/notify"
	"github.com/nightshift/nightshift/vault"
)

var (
	_ webhook.Replier = (*github.Reporter)(nil)
	_ webhook.Replier = (*forge.Reporter)(nil)
)

// newRoundTrip builds what reports work back where it came from: the
// forge registry (the github: block's GitHub and every other forges:
// entry with credentials), its change-request publisher (for the worker),
// its reporter and the Linear and Slack reporters (for the scheduler) and
// the forge replier to refused triggers (for the webhooks). Each
// integration is on only when its credentials are configured; with no
// forge, prs and replier are nil and the worker pushes branches as before.
func newRoundTrip(ctx context.Context, cfg *config.Config, store *notify.Store, resolve func(config.Secret) (string, error),
	logger *slog.Logger) (prs orchestrator.PullRequests, notifiers []orchestrator.Notifier, replier webhook.Replier, drivers *forge.Registry, err error) {
	secrets := map[string]string{}
	githubLater := false                // github.token names a vault secret not stored yet
	later := map[string]config.Secret{} // forge tokens not stored yet: redacted once they are
	get := func(key string, s config.Secret) (string, error) {
		if !s.IsSet() {
			return "", nil
		}
		v, err := resolve(s)
		if errors.Is(err, vault.ErrNotFound) && key == "github.token" {
			// Resolved again at each use: storing it turns GitHub on.
			githubLater = true
			later[key] = s
			logger.Warn("secret not in the vault yet; GitHub calls fail until it is stored", "key", key)
			return "", nil
		}
		if errors.Is(err, vault.ErrNotFound) && strings.HasPrefix(key, "forges[") {
			// Forge tokens are resolved at each use too.
			later[key] = s
			logger.Warn("secret not in the vault yet; calls to that forge fail until it is stored", "key", key)
			return "", nil
		}
		if errors.Is(err, vault.ErrNotFound) {
			logger.Warn("secret not in the vault; integration off", "key", key)
			return "", nil
		}
		if err != nil {
			return "", fmt.Errorf("%s: %w", key, err)
		}
		if v != "" {
			secrets[key] = v
		}
		return v, nil
	}
	key, err := get("github.private_key", cfg.GitHub.PrivateKey)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	token, err := get("github.token", cfg.GitHub.Token)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	linearKey, err := get("linear.api_key", cfg.Linear.APIKey)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	slackToken, err := get("slack.bot_token", cfg.Slack.BotToken)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	for key, s := range forgeSecretKeys(cfg) {
		if _, err := get(key, s); err != nil {
			return nil, nil, nil, nil, err
		}
	}
	// Tokens are resolved again at each use, so a rotated vault secret is
	// picked up without a restart (the redactor keeps the startup values).
	atUse := func(key string, s config.Secret) func(context.Context) (string, error) {
		return func(context.Context) (string, error) {
			v, err := resolve(s)
			if err != nil {
				return "", fmt.Errorf("%s: %w", key, err)
			}
			return v, nil
		}
	}
	red := vault.NewRedactor(secrets)
	redact := red.String
	if len(later) > 0 {
		// github.token or a forge token is not stored yet: redact it once it is.
		redact = func(text string) string {
			text = red.String(text)
			for key, s := range later {
				if v, err := resolve(s); err == nil && v != "" {
					text = vault.NewRedactor(map[string]string{key: v}).String(text)
				}
			}
			return text
		}
	}

	var ds []forge.Driver
	// A github.token whose vault secret is not stored yet turns GitHub on
	// too: it is resolved at each use.
	if (cfg.GitHub.AppID != 0 && key != "") || token != "" || githubLater {
		appID := cfg.GitHub.AppID
		if key == "" {
			appID = 0
		}
		var tokenFunc func(context.Context) (string, error)
		if token != "" || githubLater {
			tokenFunc = atUse("github.token", cfg.GitHub.Token)
		}
		gh, err := github.New(github.Config{APIURL: cfg.GitHub.APIURL, GitURL: cfg.GitHub.GitURL, AppID: appID, PrivateKey: key, Token: token, TokenFunc: tokenFunc,
			PublicURL: cfg.PublicURL, Redact: redact, Logger: logger,
			Draft: draftFor(cfg)})
		if err != nil {
			return nil, nil, nil, nil, err
		}
		ds = append(ds, gh)
	}
	more, err := newForgeDrivers(cfg, resolve, redact, logger)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if drivers, err = forge.NewRegistry(append(ds, more...)...); err != nil {
		return nil, nil, nil, nil, err
	}
	if drivers.Len() > 0 {
		opts := forgeOptions(cfg, redact, logger)
		rep, err := forge.NewReporter(drivers, store, opts)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		prs, replier = forge.NewPublisher(drivers, opts), rep
		notifiers = append(notifiers, rep)
	}
	if linearKey != "" {
		lin, err := notify.NewLinear(store, notify.LinearConfig{APIKeyFunc: atUse("linear.api_key", cfg.Linear.APIKey), APIURL: cfg.Linear.APIURL,
			PublicURL: cfg.PublicURL, Redact: redact, Logger: logger})
		if err != nil {
			return nil, nil, nil, nil, err
		}
		notifiers = append(notifiers, lin)
	}
	if slackToken != "" && cfg.Slack.Channel != "" {
		sl, err := notify.NewSlack(store, notify.SlackConfig{TokenFunc: atUse("slack.bot_token", cfg.Slack.BotToken), Channel: cfg.Slack.Channel, APIURL: cfg.Slack.APIURL,
			PublicURL: cfg.PublicURL, Redact: redact, Logger: logger})
		if err != nil {
			return nil, nil, nil, nil, err
		}
		notifiers = append(notifiers, sl)
	}
	return prs, notifiers, replier, drivers, nil
}

// githubAppTransport returns a transport that authenticates GitHub REST
// calls under repos/{owner}/{name}/ as the GitHub App, with an installation
// token narrowed to that repository and metadata:read (what the webhook
// authorizer's permission lookups need). It returns nil when no App is
// configured (the authorizer then uses github.token).
func githubAppTransport(cfg *config.Config, resolve func(config.Secret) (string, error)) (http.RoundTripper, error) {
	if cfg.GitHub.AppID == 0 || !cfg.GitHub.PrivateKey.IsSet() {
		return nil, nil
	}
	key, err := resolve(cfg.GitHub.PrivateKey)
	if errors.Is(err, vault.ErrNotFound) || key == "" {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("github.private_key: %w", err)
	}
	gh, err := github.New(github.Config{APIURL: cfg.GitHub.APIURL, AppID: cfg.GitHub.AppID, PrivateKey: key})
	if err != nil {
		return nil, err
	}
	return gh.Transport(github.Permissions{"metadata": "read"}), nil
}

// githubTokenTransport returns a transport that authenticates GitHub REST
// calls under repos/{owner}/{name}/ with github.token, resolved at each
// call: a ${vault:NAME} stored after serve started is used from then on
// (and until then the call fails, naming github.token). It returns nil when
// github.token is not configured.
func githubTokenTransport(cfg *config.Config, resolve func(config.Secret) (string, error)) (http.RoundTripper, error) {
	if !cfg.GitHub.Token.IsSet() {
		return nil, nil
	}
	gh, err := github.New(github.Config{APIURL: cfg.GitHub.APIURL, TokenFunc: func(context.Context) (string, error) {
		v, err := resolve(cfg.GitHub.Token)
		if err == nil && v == "" {
			err = errors.New("empty")
		}
		if err != nil {
			return "", fmt.Errorf("github.token: %w", err)
		}
		return v, nil
	}})
	if err != nil {
		return nil, err
	}
	return gh.Transport(nil), nil
}
