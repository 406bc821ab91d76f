package webhook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/forge"
)

// Config configures a Handler. Every field is optional; the zero value of a
// field means the default written next to it.
type Config struct {
	GitHub GitHubConfig
	Linear LinearConfig
	Slack  SlackConfig

	// MaxBody is the largest accepted request body in bytes (default 1 MiB).
	// Larger bodies are answered 413. The body buffer grows as bytes arrive;
	// it is never sized from the sender's Content-Length.
	MaxBody int64
	// BodyTimeout is how long a sender has to deliver the whole body once
	// the handler starts reading it (default 10s). It is a read deadline on
	// the connection (wall clock, not Clock); past it the delivery is
	// answered 408 and the connection closed.
	BodyTimeout time.Duration
	// MaxReading caps the bodies being read, not yet verified, at once
	// (default 64): unauthenticated senders hold at most MaxReading bodies
	// of at most MaxBody bytes each. A delivery past the cap is answered
	// 503 with Retry-After at once rather than queued.
	MaxReading int
	// MaxRaw is the largest payload kept in Event.Raw (default 512 KiB);
	// a larger one is published without Raw so the event still fits
	// NATS's default 1 MiB max_payload.
	MaxRaw int
	// AttemptCap is how many distinct failing head commits of one pull
	// request (or branch) may start CI-fix work (default 3).
	AttemptCap int
	// DedupeTTL is how long a delivery id is remembered (default 7 days,
	// at least 72h: longer than JetStream's duplicate window and GitHub's
	// redelivery horizon).
	DedupeTTL time.Duration
	// DeliveryBucket and AttemptBucket name the JetStream KV buckets
	// (defaults "nightshift_webhook_deliveries", "nightshift_webhook_attempts").
	DeliveryBucket string
	AttemptBucket  string
	// ReplyTimeout bounds a Replier call (default 5s).
	ReplyTimeout time.Duration
	// Waiting returns the id of the task on repo's target (an issue or
	// pull request) that waits for an answer to its agent's question, or
	// orchestrator.ErrNotFound. Nil: comments never answer questions.
	Waiting func(ctx context.Context, repo string, target orchestrator.Target) (string, error)
	// Observer takes the deliveries that start no built-in work but that
	// an enabled automation matches (see observe.go). Nil: New follows the
	// automations bucket itself (automation.NewObserver).
	Observer Observer

	// Clock returns the current time (default time.Now).
	Clock func() time.Time
	// Logger receives one line per refused or failed delivery (default: discard).
	Logger *slog.Logger
	// HTTPClient is used for GitHub API calls (default: a client with a 10s timeout).
	HTTPClient *http.Client
	// Metrics registers the handler's collectors (default: not registered).
	Metrics prometheus.Registerer
	// Replier, when set, answers refused comment triggers with a short
	// comment (only if GitHub.ReplyRefused, or the forge's
	// ForgeConfig.ReplyRefused, is true).
	Replier Replier

	// Forges are the GitLab and Gitea/Forgejo hosts whose webhooks arrive
	// on /hooks/gitlab and /hooks/gitea (see ForgeConfig). Allow and Deny
	// of GitHub apply to them too, by repo glob over host/owner/name.
	Forges []ForgeConfig
	// Sources speak the forges' webhook dialects (GitLabSource(),
	// GiteaSource()); a route whose Source is missing refuses every
	// delivery (401).
	Sources []Source
	// Drivers check the permission of comment authors on Forges hosts
	// (forge.Driver.Permission). A host without a driver refuses comment
	// triggers (its authors cannot be checked). Nil: none.
	Drivers *forge.Registry
}

// GitHubConfig configures GitHub deliveries.
type GitHubConfig struct {
	// Secrets are the webhook secrets; a delivery signed with any of them
	// is accepted. Empty: every GitHub delivery is refused (401).
	Secrets []string
	// Trigger starts a comment command (default "@nightshift"); the slash
	// form ("/nightshift") is accepted too.
	Trigger string
	// Label on an issue starts work (default "nightshift").
	Label string
	// BotLogin is Nightshift's own GitHub login; its comments never trigger.
	BotLogin string
	// APIURL is the REST API base (default "https://api.github.com/").
	APIURL string
	// GitURL is the base URL repositories are cloned from: an event's
	// Repo is GitURL + "owner/name.git", built from the payload's
	// repository.full_name; URLs in payloads are never used. Default:
	// derived from APIURL ("https://github.com/" for api.github.com,
	// "https://HOST/" for "https://HOST/api/v3/"). Must be http(s).
	GitURL string
	// Token authenticates permission checks (optional).
	Token string
	// Allow and Deny map a repo glob (over "github.com/owner/name", or
	// "owner/name") to logins. Deny wins over everything; Allow admits a
	// login whatever its association.
	Allow map[string][]string
	Deny  map[string][]string
	// PermissionTTL caches permission lookups (default 5m).
	PermissionTTL time.Duration
	// ReplyRefused makes the Replier answer refused comment triggers.
	ReplyRefused bool
}

// LinearConfig configures Linear deliveries.
type LinearConfig struct {
	// Secrets are the webhook signing secrets. Empty: refuse all (401).
	Secrets []string
	// AgentUser is the Linear user id (or display name) of the agent; an
	// issue assigned to it starts work and a comment mentioning it is a
	// command.
	AgentUser string
	// Label on an issue starts work (default "nightshift").
	Label string
	// Trigger in a comment body is a command (default "@nightshift").
	Trigger string
	// Repo is the repository ticket work runs against (optional; the
	// scheduler may resolve it otherwise): a remote URL, host/owner/name or
	// owner/name (on GitHub.GitURL). A local path or file:// URL is a
	// configuration error: webhook events never name local repositories.
	Repo string
	// TeamRepos maps a Linear team key (ENG) to a repository, overriding
	// Repo; the same forms are accepted.
	TeamRepos map[string]string
	// MaxSkew is the allowed webhookTimestamp distance (default 60s).
	MaxSkew time.Duration
}

// SlackConfig configures Slack deliveries.
type SlackConfig struct {
	// Secrets are the signing secrets. Empty: refuse all (401).
	Secrets []string
	// MaxSkew is the allowed X-Slack-Request-Timestamp distance (default 5m).
	MaxSkew time.Duration
	// Hosts are the forge hosts a slash command may name, as
	// host/owner/name or an https URL (default: GitHub.GitURL's host).
	// owner/name always means GitHub.GitURL. Paths, file:// and other
	// hosts are refused.
	Hosts []string
}

func (c Config) withDefaults() Config {
	if c.MaxBody == 0 {
		c.MaxBody = 1 << 20
	}
	if c.BodyTimeout == 0 {
		c.BodyTimeout = 10 * time.Second
	}
	if c.MaxReading == 0 {
		c.MaxReading = 64
	}
	if c.MaxRaw == 0 {
		c.MaxRaw = 512 << 10
	}
	if c.AttemptCap == 0 {
		c.AttemptCap = 3
	}
	if c.DedupeTTL == 0 {
		c.DedupeTTL = 7 * 24 * time.Hour
	}
	if c.DeliveryBucket == "" {
		c.DeliveryBucket = "nightshift_webhook_deliveries"
	}
	if c.AttemptBucket == "" {
		c.AttemptBucket = "nightshift_webhook_attempts"
	}
	if c.ReplyTimeout == 0 {
		c.ReplyTimeout = 5 * time.Second
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if c.GitHub.Trigger == "" {
		c.GitHub.Trigger = "@nightshift"
	}
	if c.GitHub.Label == "" {
		c.GitHub.Label = "nightshift"
	}
	if c.GitHub.APIURL == "" {
		c.GitHub.APIURL = "https://api.github.com/"
	}
	if !strings.HasSuffix(c.GitHub.APIURL, "/") {
		c.GitHub.APIURL += "/"
	}
	if c.GitHub.GitURL == "" {
		c.GitHub.GitURL = config.GitHubGitURL(c.GitHub.APIURL)
	}
	if !strings.HasSuffix(c.GitHub.GitURL, "/") {
		c.GitHub.GitURL += "/"
	}
	if len(c.Slack.Hosts) == 0 {
		if u, err := url.Parse(c.GitHub.GitURL); err == nil && u.Host != "" {
			c.Slack.Hosts = []string{u.Host}
		}
	}
	if c.GitHub.PermissionTTL == 0 {
		c.GitHub.PermissionTTL = 5 * time.Minute
	}
	if c.Linear.Label == "" {
		c.Linear.Label = "nightshift"
	}
	if c.Linear.Trigger == "" {
		c.Linear.Trigger = "@nightshift"
	}
	if c.Linear.MaxSkew == 0 {
		c.Linear.MaxSkew = 60 * time.Second
	}
	if c.Slack.MaxSkew == 0 {
		c.Slack.MaxSkew = 5 * time.Minute
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.MaxBody < 0:
		return errors.New("webhook: config max_body must not be negative")
	case c.BodyTimeout < 0:
		return errors.New("webhook: config body_timeout must not be negative")
	case c.MaxReading < 0:
		return errors.New("webhook: config max_reading must not be negative")
	case c.AttemptCap < 0:
		return errors.New("webhook: config attempt_cap must not be negative")
	case c.DedupeTTL < 72*time.Hour:
		return fmt.Errorf("webhook: config dedupe_ttl %s is shorter than 72h", c.DedupeTTL)
	case c.Linear.MaxSkew < 0 || c.Slack.MaxSkew < 0:
		return errors.New("webhook: config max_skew must not be negative")
	case triggerName(c.GitHub.Trigger) == "":
		return fmt.Errorf("webhook: config github.trigger %q has no name", c.GitHub.Trigger)
	case triggerName(c.Linear.Trigger) == "":
		return fmt.Errorf("webhook: config linear.trigger %q has no name", c.Linear.Trigger)
	}
	if u, err := url.Parse(c.GitHub.GitURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("webhook: config github.git_url %q is not an absolute http(s) URL", c.GitHub.GitURL)
	}
	for _, lists := range []map[string][]string{c.GitHub.Allow, c.GitHub.Deny} {
		for glob := range lists {
			if _, err := path.Match(glob, ""); err != nil {
				return fmt.Errorf("webhook: config github allow/deny glob %q: %w", glob, err)
			}
		}
	}
	return nil
}

// LogValue implements slog.LogValuer: secrets and the token print as REDACTED.
func (c GitHubConfig) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Int("secrets", len(c.Secrets)), slog.String("token", redacted(c.Token)),
		slog.String("trigger", c.Trigger), slog.String("label", c.Label),
		slog.String("bot_login", c.BotLogin), slog.String("api_url", c.APIURL))
}

// LogValue implements slog.LogValuer: secrets print as a count.
func (c LinearConfig) LogValue() slog.Value {
	return slog.GroupValue(slog.Int("secrets", len(c.Secrets)),
		slog.String("agent_user", c.AgentUser), slog.String("label", c.Label))
}

// LogValue implements slog.LogValuer: secrets print as a count.
func (c SlackConfig) LogValue() slog.Value {
	return slog.GroupValue(slog.Int("secrets", len(c.Secrets)))
}

// withRepos resolves the configured Linear repositories to clone URLs
// (see LinearConfig.Repo); a local or unusable one is an error naming it.
func (c Config) withRepos() (Config, error) {
	opt := c.forge()
	resolve := func(key, repo string) (string, error) {
		if repo == "" {
			return "", nil
		}
		if config.RemoteRepo(repo) {
			return repo, nil
		}
		if r, ok := forgeRepo(repo, opt, false); ok {
			return r, nil
		}
		return "", fmt.Errorf("webhook: config %s %q is not a remote repository (https://, ssh://, git@host:path, host/owner/name or owner/name); webhook events never name local paths", key, repo)
	}
	var err error
	if c.Linear.Repo, err = resolve("linear.repo", c.Linear.Repo); err != nil {
		return c, err
	}
	if len(c.Linear.TeamRepos) > 0 {
		teams := make(map[string]string, len(c.Linear.TeamRepos))
		for team, repo := range c.Linear.TeamRepos {
			if teams[team], err = resolve("linear team "+team+" repo", repo); err != nil {
				return c, err
			}
		}
		c.Linear.TeamRepos = teams
	}
	return c, nil
}

func redacted(s string) string {
	if s == "" {
		return ""
	}
	return "REDACTED"
}
