package github

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/nightshift/nightshift/config"
)

// Config configures a Client. The zero value of a field means the default
// written next to it.
type Config struct {
	// APIURL is the REST API base. Default https://api.github.com/.
	APIURL string
	// GitURL is the base URL repositories are cloned from over https.
	// Default: derived from APIURL (https://github.com/ for api.github.com,
	// the host root for a GitHub Enterprise /api/v3/ URL).
	GitURL string
	// AppID and PrivateKey (PEM, PKCS#1 or PKCS#8) authenticate as a GitHub
	// App. When both are set they win over Token.
	AppID      int64
	PrivateKey string
	// Token is a personal or fine-grained access token, for users without
	// an App.
	Token string
	// TokenFunc, when set, returns the token at each use instead of Token
	// (a vault reference resolved at use, so a rotated token is picked up).
	TokenFunc func(ctx context.Context) (string, error)
	// PublicURL is how people reach Nightshift; task links are
	// PublicURL + "/tasks/" + id. Optional.
	PublicURL string
	// Draft reports whether pull requests on repo are opened as drafts.
	// Default: always true.
	Draft func(repo string) bool
	// PushTokenTTL is the least lifetime a token handed to a run (for its
	// fetch and push) has left. Default 50m (installation tokens live 1h).
	PushTokenTTL time.Duration
	// LogExcerpt bounds the CI log excerpt put in a CI-fix prompt, in bytes.
	// Default 8 KiB.
	LogExcerpt int
	// Redact cleans every text sent to GitHub. Default: identity.
	Redact func(string) string
	// HTTPClient makes the API calls. Default: a client with a 30s timeout.
	HTTPClient *http.Client
	// Clock returns the current time. Default time.Now.
	Clock func() time.Time
	// Logger receives warnings. Default: discard.
	Logger *slog.Logger
}

// ErrNoCredentials is returned by New when neither an App nor a token is
// configured.
var ErrNoCredentials = errors.New("github: no app or token configured")

func (c Config) withDefaults() Config {
	if c.APIURL == "" {
		c.APIURL = "https://api.github.com/"
	}
	if !strings.HasSuffix(c.APIURL, "/") {
		c.APIURL += "/"
	}
	if c.GitURL == "" {
		c.GitURL = config.GitHubGitURL(c.APIURL)
	}
	if !strings.HasSuffix(c.GitURL, "/") {
		c.GitURL += "/"
	}
	c.PublicURL = strings.TrimSuffix(c.PublicURL, "/")
	if c.Draft == nil {
		c.Draft = func(string) bool { return true }
	}
	if c.PushTokenTTL <= 0 {
		c.PushTokenTTL = 50 * time.Minute
	}
	if c.LogExcerpt <= 0 {
		c.LogExcerpt = 8 << 10
	}
	if c.Redact == nil {
		c.Redact = func(s string) string { return s }
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	for _, f := range []struct{ key, v string }{{"github.api_url", c.APIURL}, {"github.git_url", c.GitURL}} {
		u, err := url.Parse(f.v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("github: config %s %q is not an absolute http(s) URL", f.key, f.v)
		}
	}
	switch {
	case c.AppID < 0:
		return fmt.Errorf("github: config github.app_id %d is negative", c.AppID)
	case c.AppID > 0 && c.PrivateKey == "":
		return errors.New("github: config github.private_key is required with github.app_id")
	case c.AppID == 0 && c.PrivateKey != "":
		return errors.New("github: config github.app_id is required with github.private_key")
	case c.AppID == 0 && c.Token == "" && c.TokenFunc == nil:
		return ErrNoCredentials
	}
	return nil
}

// LogValue implements slog.LogValuer: credentials print as REDACTED.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("api_url", c.APIURL), slog.String("git_url", c.GitURL),
		slog.Int64("app_id", c.AppID), slog.String("private_key", redacted(c.PrivateKey)),
		slog.String("token", redacted(c.Token)))
}

func redacted(s string) string {
	if s == "" {
		return ""
	}
	return "REDACTED"
}
