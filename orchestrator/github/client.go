package github

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	gh "github.com/google/go-github/v60/github"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/forge"
	"github.com/nightshift/nightshift/worktree"
)

// Client talks to one GitHub (github.com or an Enterprise server) as an App
// or with a token. It is the GitHub forge.Driver, and implements
// orchestrator.PullRequests through a forge.Publisher over itself alone.
type Client struct {
	cfg    Config
	api    *url.URL
	git    *url.URL
	tokens *tokenSource
	log    *slog.Logger
	pub    *forge.Publisher
	reg    *forge.Registry
}

var (
	_ orchestrator.PullRequests = (*Client)(nil)
	_ forge.Driver              = (*Client)(nil)
)

// New returns a Client. It returns ErrNoCredentials when neither an App
// nor a token is configured.
func New(cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	api, _ := url.Parse(cfg.APIURL)
	git, _ := url.Parse(cfg.GitURL)
	c := &Client{cfg: cfg, api: api, git: git, log: cfg.Logger.With("component", "github")}
	ts, err := newTokenSource(cfg, c.newAPI)
	if err != nil {
		return nil, err
	}
	c.tokens = ts
	if c.reg, err = forge.NewRegistry(c); err != nil {
		return nil, err
	}
	c.pub = forge.NewPublisher(c.reg, c.Options())
	return c, nil
}

// Options are the forge.Options this client's configuration implies
// (PublicURL, Draft, LogExcerpt, Redact, Logger).
func (c *Client) Options() forge.Options {
	return forge.Options{PublicURL: c.cfg.PublicURL, Draft: c.cfg.Draft, LogExcerpt: c.cfg.LogExcerpt,
		Redact: c.cfg.Redact, Logger: c.cfg.Logger}
}

// Repo is a GitHub repository (Host is the clone host).
type Repo = forge.Repo

// Kind implements forge.Driver.
func (c *Client) Kind() forge.Kind { return forge.KindGitHub }

// Host implements forge.Driver: the host of the clone URL.
func (c *Client) Host() string { return strings.ToLower(c.git.Host) }

// RepoOf returns the GitHub repository a clone URL names, when it is on this
// client's GitHub host (https://host/owner/name(.git), ssh://git@host/owner/name.git
// or git@host:owner/name.git).
func (c *Client) RepoOf(repo string) (Repo, bool) {
	s := strings.TrimSpace(repo)
	var host, p string
	switch {
	case strings.Contains(s, "://"):
		u, err := url.Parse(s)
		if err != nil {
			return Repo{}, false
		}
		switch u.Scheme {
		case "https", "http":
			if !strings.EqualFold(u.Host, c.git.Host) {
				return Repo{}, false
			}
			p = strings.TrimPrefix(u.Path, strings.TrimSuffix(c.git.Path, "/"))
		case "ssh":
			host, p = u.Hostname(), u.Path
		default:
			return Repo{}, false
		}
	case strings.Contains(s, "@") && strings.Contains(s, ":"):
		rest := s[strings.IndexByte(s, '@')+1:]
		host, p, _ = strings.Cut(rest, ":")
	default:
		return Repo{}, false
	}
	if host != "" && !strings.EqualFold(host, c.git.Hostname()) {
		return Repo{}, false
	}
	parts := strings.Split(strings.Trim(strings.TrimSuffix(strings.TrimSuffix(p, "/"), ".git"), "/"), "/")
	if len(parts) != 2 || parts[0] == "" || parts[1] == "" {
		return Repo{}, false
	}
	return Repo{Host: c.Host(), Owner: parts[0], Name: parts[1]}, true
}

// CloneURL implements forge.Driver: the https clone URL of r on this
// client's host.
func (c *Client) CloneURL(r Repo) string { return c.cfg.GitURL + r.Owner + "/" + r.Name + ".git" }

// newAPI returns a go-github client for the API base carrying token (none
// when token is empty).
func (c *Client) newAPI(token string) *gh.Client {
	cl := gh.NewClient(c.cfg.HTTPClient)
	if token != "" {
		cl = cl.WithAuthToken(token)
	}
	base := *c.api
	cl.BaseURL = &base
	up := *c.api
	cl.UploadURL = &up
	return cl
}

// apiFor returns an API client for repository r with a token holding perms.
func (c *Client) apiFor(ctx context.Context, r Repo, perms Permissions) (*gh.Client, error) {
	tok, err := c.tokens.token(ctx, r, perms, 0)
	if err != nil {
		return nil, err
	}
	return c.newAPI(tok), nil
}

// PushAuth implements forge.Driver: it returns credentials that fetch from and push to r, valid for at
// least PushTokenTTL (contents:write only).
func (c *Client) PushAuth(ctx context.Context, r Repo) (worktree.Auth, error) {
	tok, err := c.tokens.token(ctx, r, Permissions{"contents": "write"}, c.cfg.PushTokenTTL)
	if err != nil {
		return worktree.Auth{}, err
	}
	return worktree.Auth{Username: "x-access-token", Password: tok}, nil
}

// TaskURL returns the link to a task on the board ("" without PublicURL).
func (c *Client) TaskURL(id string) string {
	if c.cfg.PublicURL == "" {
		return ""
	}
	return c.cfg.PublicURL + "/tasks/" + id
}

// isStatus reports whether err is a GitHub API error with HTTP status code.
func isStatus(err error, code int) bool {
	var e *gh.ErrorResponse
	if errors.As(err, &e) && e.Response != nil {
		return e.Response.StatusCode == code
	}
	var ae *gh.AcceptedError
	return code == http.StatusAccepted && errors.As(err, &ae)
}

// wrap names the failed operation; a 404 also wraps forge.ErrNotFound.
func wrap(op string, r Repo, err error) error {
	if isStatus(err, http.StatusNotFound) {
		return fmt.Errorf("github: %s on %s: %w: %w", op, r.FullName(), forge.ErrNotFound, err)
	}
	return fmt.Errorf("github: %s on %s: %w", op, r.FullName(), err)
}

// Transport returns a RoundTripper that authenticates REST requests under
// repos/{owner}/{name}/ of this client's API with a token for that one
// repository holding perms (an installation token with an App, else the
// configured token). Requests that already carry Authorization, or go
// elsewhere, pass through untouched. It lets a component with its own API
// client (the webhook authorizer's permission checks need
// Permissions{"metadata": "read"}) act as the App.
func (c *Client) Transport(perms Permissions) http.RoundTripper {
	base := c.cfg.HTTPClient.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	prefix := strings.TrimSuffix(c.api.Path, "/") + "/repos/"
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.Header.Get("Authorization") != "" || !strings.EqualFold(req.URL.Host, c.api.Host) || !strings.HasPrefix(req.URL.Path, prefix) {
			return base.RoundTrip(req)
		}
		parts := strings.SplitN(strings.TrimPrefix(req.URL.Path, prefix), "/", 3)
		if len(parts) < 2 || parts[0] == "" || parts[1] == "" {
			return base.RoundTrip(req)
		}
		tok, err := c.tokens.token(req.Context(), Repo{Owner: parts[0], Name: parts[1]}, perms, 0)
		if err != nil {
			return nil, err
		}
		r2 := req.Clone(req.Context())
		r2.Header.Set("Authorization", "Bearer "+tok)
		return base.RoundTrip(r2)
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
