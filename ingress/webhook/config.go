package webhook

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Handler. Every field is optional; the zero value of a
// field means the default written next to it.
type Config struct {
	GitHub GitHubConfig
	Linear LinearConfig
	Slack  SlackConfig

	// MaxBody is the largest accepted request body in bytes (default 1 MiB).
	// Larger bodies are answered 413.
	MaxBody int64
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

	// Clock returns the current time (default time.Now).
	Clock func() time.Time
	// Logger receives one line per refused or failed delivery (default: discard).
	Logger *slog.Logger
	// HTTPClient is used for GitHub API calls (default: a client with a 10s timeout).
	HTTPClient *http.Client
	// Metrics registers the handler's collectors (default: not registered).
	Metrics prometheus.Registerer
	// Replier, when set, answers refused GitHub comment triggers with a
	// short comment (only if GitHub.ReplyRefused is true).
	Replier Replier
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
	// scheduler may resolve it otherwise).
	Repo string
	// TeamRepos maps a Linear team key (ENG) to a repository, overriding Repo.
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
}

func (c Config) withDefaults() Config {
	if c.MaxBody == 0 {
		c.MaxBody = 1 << 20
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

func redacted(s string) string {
	if s == "" {
		return ""
	}
	return "REDACTED"
}
