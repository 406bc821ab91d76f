package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/slack-go/slack"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/ingress/api"
	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/automation"
	"github.com/nightshift/nightshift/orchestrator/forge"
)

// newAutomations opens the automation buckets and seeds them with the
// automations of nightshift.yaml (an invalid entry fails the start and
// names its key). reg is nil for an engine that only serves the API.
func newAutomations(ctx context.Context, bus *orchestrator.Bus, cfg *config.Config, resolve func(config.Secret) (string, error),
	reg prometheus.Registerer, onPause func(ctx context.Context, name, reason string), drivers *forge.Registry, logger *slog.Logger) (*automation.Engine, error) {
	e, err := automation.New(ctx, bus.JetStream(), automation.Config{Replicas: cfg.NATS.Replicas, Logger: logger, Metrics: reg, OnPause: onPause,
		TeamMember: githubTeamMember(cfg, resolve, nil), CanWrite: forgeCanWrite(drivers)})
	if err != nil {
		return nil, err
	}
	if err := e.Seed(ctx, cfg.Automations); err != nil {
		return nil, err
	}
	return e, nil
}

// mountAutomations serves /api/v1/automations and /api/v1/inbox (ingress).
func mountAutomations(ctx context.Context, apiSrv *api.Server, bus *orchestrator.Bus, cfg *config.Config, logger *slog.Logger) error {
	e, err := newAutomations(ctx, bus, cfg, nil, nil, nil, nil, logger)
	if err != nil {
		return err
	}
	apiSrv.MountAutomations(e)
	return nil
}

// automationRunner returns the runner that fires schedules, matches events
// and follows runs (scheduler role). Any number of schedulers may run it.
// An automation that pauses itself is announced in Slack when slack.bot_token
// and slack.channel are set.
func automationRunner(ctx context.Context, bus *orchestrator.Bus, cfg *config.Config, resolve func(config.Secret) (string, error),
	reg prometheus.Registerer, drivers *forge.Registry, logger *slog.Logger) (func(context.Context) error, error) {
	e, err := newAutomations(ctx, bus, cfg, resolve, reg, slackPauseNotice(cfg, resolve, logger), drivers, logger)
	if err != nil {
		return nil, err
	}
	return e.Run, nil
}

// slackPauseNotice posts "automation X paused after ..." to slack.channel,
// or is nil without Slack. The token is resolved at each use.
func slackPauseNotice(cfg *config.Config, resolve func(config.Secret) (string, error), logger *slog.Logger) func(context.Context, string, string) {
	if !cfg.Slack.BotToken.IsSet() || cfg.Slack.Channel == "" {
		return nil
	}
	apiURL := cfg.Slack.APIURL
	if apiURL == "" {
		apiURL = "https://slack.com/api/"
	}
	if !strings.HasSuffix(apiURL, "/") {
		apiURL += "/"
	}
	return func(ctx context.Context, name, reason string) {
		tok, err := resolve(cfg.Slack.BotToken)
		if err != nil {
			logger.Warn("automation pause not announced in Slack", "automation", name, "err", err)
			return
		}
		ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		client := slack.New(tok, slack.OptionAPIURL(apiURL), slack.OptionHTTPClient(&http.Client{Timeout: 15 * time.Second}))
		link := strings.TrimRight(cfg.PublicURL, "/") + "/automations/" + url.PathEscape(name)
		text := fmt.Sprintf("Automation *%s* paused after %s. Resume it with `nightshift automations enable %s` or on the board: %s",
			name, reason, name, link)
		if _, _, err := client.PostMessageContext(ctx, cfg.Slack.Channel, slack.MsgOptionText(text, false)); err != nil {
			logger.Warn("automation pause not announced in Slack", "automation", name, "err", err)
		}
	}
}

// githubTeamMember answers allow.teams with GitHub's team membership API
// (GET /orgs/{org}/teams/{team}/memberships/{login}, an active membership
// counts) under github.token, resolved at each call. It is nil without
// github.token or resolve (the API-only engine): team rules then let
// nobody through and the timeline says so.
func githubTeamMember(cfg *config.Config, resolve func(config.Secret) (string, error), hc *http.Client) func(ctx context.Context, org, team, login string) (bool, error) {
	if resolve == nil || !cfg.GitHub.Token.IsSet() {
		return nil
	}
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	base := strings.TrimRight(cfg.GitHub.APIURL, "/")
	return func(ctx context.Context, org, team, login string) (bool, error) {
		tok, err := resolve(cfg.GitHub.Token)
		if err != nil {
			return false, fmt.Errorf("github.token: %w", err)
		}
		u := fmt.Sprintf("%s/orgs/%s/teams/%s/memberships/%s", base, url.PathEscape(org), url.PathEscape(team), url.PathEscape(login))
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return false, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Accept", "application/vnd.github+json")
		req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
		resp, err := hc.Do(req)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			var m struct {
				State string `json:"state"`
			}
			if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&m); err != nil {
				return false, fmt.Errorf("team membership answer: %w", err)
			}
			return m.State == "active", nil
		case http.StatusNotFound:
			return false, nil
		}
		return false, fmt.Errorf("GitHub answered %s to the team membership check of %s/%s", resp.Status, org, team)
	}
}

// forgeCanWrite answers whether a forge event's actor has write access to
// its repository, through the forge driver of the repository's host (nil
// without drivers: such events then need allow:).
func forgeCanWrite(drivers *forge.Registry) func(context.Context, orchestrator.Event) (bool, error) {
	if drivers == nil {
		return nil
	}
	return func(ctx context.Context, ev orchestrator.Event) (bool, error) {
		d, r, ok := drivers.ForRepo(ev.Repo)
		if !ok {
			return false, fmt.Errorf("no forge with credentials is configured for %s", ev.Repo)
		}
		if ev.Actor.Login == "" {
			return false, nil
		}
		a, err := d.Permission(ctx, r, ev.Actor.Login)
		if err != nil {
			return false, err
		}
		return a.CanTrigger(), nil
	}
}
