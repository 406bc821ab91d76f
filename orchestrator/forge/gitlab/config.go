// Package gitlab is the forge.Driver of GitLab (gitlab.com and
// self-managed, REST API v4), built on GitLab's maintained client library
// gitlab.com/gitlab-org/api/client-go.
//
// Change requests are merge requests: opened as drafts with the "Draft: "
// title prefix (the prefix is hidden from ChangeRequest.Title and kept on
// every edit), found by source branch. The acknowledgement is an award
// emoji on the triggering note, added once. Progress is one note, edited in
// place. CI failures are the failed jobs of the commit's latest pipeline
// (with the end of each job's trace) and the commit's other failed
// statuses. Authorization is the member access level on the project,
// inherited ones included (GET /projects/:id/members/all/:user_id):
// Developer (30) and above may trigger by default (Config.TriggerLevel).
//
// Every call authenticates with the configured token (a project or group
// access token, or a personal access token, with the api scope) in the
// PRIVATE-TOKEN header; git fetches and pushes use the same token as HTTP
// basic auth with the user name oauth2. The token is resolved at each use
// (Config.TokenFunc), so a rotated vault secret is picked up without a
// restart, and is never logged.
package gitlab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// GitLab member access levels (GitLab's own numbers).
const (
	LevelGuest      = 10
	LevelPlanner    = 15
	LevelReporter   = 20
	LevelDeveloper  = 30
	LevelMaintainer = 40
	LevelOwner      = 50
)

// Config configures a Driver.
type Config struct {
	// APIURL is the REST API base (default "https://gitlab.com/api/v4/").
	// "/api/v4" is appended when missing, so "https://gitlab.example.com"
	// works too.
	APIURL string
	// GitURL is the base repositories are cloned from: a project's clone
	// URL is GitURL + path_with_namespace + ".git". Default: APIURL
	// without its "/api/v4" suffix. Must be http(s) with a host.
	GitURL string
	// Token is the access token (project or group access token, or a
	// personal access token) with the api scope and a role of Developer or
	// more. Ignored when TokenFunc is set.
	Token string
	// TokenFunc, when set, returns the token at each use (a vault secret
	// resolved again, so a rotation needs no restart).
	TokenFunc func(ctx context.Context) (string, error)
	// TriggerLevel is the lowest member access level whose members may
	// start work (default 30, Developer; 20 lets Reporters trigger, 40
	// only Maintainers and Owners). Permission maps a level at or above it
	// to write access or more, and a level below it to less than write.
	TriggerLevel int
	// HTTPClient makes the API calls (default: a client with a 30s timeout).
	HTTPClient *http.Client
	// Logger receives warnings (default: discard).
	Logger *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.APIURL == "" {
		c.APIURL = "https://gitlab.com/api/v4/"
	}
	api, err := url.Parse(c.APIURL)
	if err != nil || (api.Scheme != "http" && api.Scheme != "https") || api.Host == "" {
		return c, fmt.Errorf("gitlab: config api_url %q is not an absolute http(s) URL", c.APIURL)
	}
	if !strings.HasSuffix(strings.TrimSuffix(api.Path, "/"), "/api/v4") {
		api.Path = strings.TrimSuffix(api.Path, "/") + "/api/v4/"
	}
	if !strings.HasSuffix(api.Path, "/") {
		api.Path += "/"
	}
	c.APIURL = api.String()
	if c.GitURL == "" {
		g := *api
		g.Path = strings.TrimSuffix(strings.TrimSuffix(api.Path, "/"), "/api/v4") + "/"
		g.RawQuery, g.Fragment = "", ""
		c.GitURL = g.String()
	}
	gu, err := url.Parse(c.GitURL)
	if err != nil || (gu.Scheme != "http" && gu.Scheme != "https") || gu.Host == "" || gu.User != nil {
		return c, fmt.Errorf("gitlab: config git_url %q is not an absolute http(s) URL without credentials", c.GitURL)
	}
	if !strings.HasSuffix(c.GitURL, "/") {
		c.GitURL += "/"
	}
	if c.TriggerLevel == 0 {
		c.TriggerLevel = LevelDeveloper
	}
	if c.TriggerLevel < LevelGuest || c.TriggerLevel > LevelOwner {
		return c, fmt.Errorf("gitlab: config trigger_level %d is not a GitLab access level (10 to 50)", c.TriggerLevel)
	}
	if c.TokenFunc == nil {
		tok := c.Token
		c.TokenFunc = func(context.Context) (string, error) { return tok, nil }
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// LogValue implements slog.LogValuer: the token prints as REDACTED.
func (c Config) LogValue() slog.Value {
	tok := ""
	if c.Token != "" || c.TokenFunc != nil {
		tok = "REDACTED"
	}
	return slog.GroupValue(slog.String("api_url", c.APIURL), slog.String("git_url", c.GitURL),
		slog.String("token", tok), slog.Int("trigger_level", c.TriggerLevel))
}

// errNoToken is a call made while no token is configured or stored.
var errNoToken = errors.New("gitlab: no access token (configure forges[].token)")
