package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/google/go-github/v60/github"

	"github.com/nightshift/nightshift/orchestrator"
)

// Replier answers a refused trigger where it came from (a short comment on
// the issue or pull request). The lead wires the GitHub implementation.
type Replier interface {
	Reply(ctx context.Context, ev *orchestrator.Event, message string) error
}

// Refusal codes, used as the metric label and at the start of the reason.
const (
	refuseNoAuthor   = "no_author"
	refuseSelf       = "self"
	refuseBot        = "bot"
	refuseDenied     = "denied"
	refusePermission = "permission"
	refuseAttemptCap = "attempt_cap"
)

// refusal is a trigger that was understood but may not start work.
type refusal struct {
	code   string
	reason string
}

// trustedAssociations may trigger without a permission lookup.
var trustedAssociations = map[string]bool{"OWNER": true, "MEMBER": true, "COLLABORATOR": true}

// authorizer decides whether a GitHub actor may start work on a repository.
type authorizer struct {
	cfg    GitHubConfig
	client *github.Client
	clock  func() time.Time

	mu    sync.Mutex
	cache map[string]permEntry
}

type permEntry struct {
	permission string
	at         time.Time
}

func newAuthorizer(cfg GitHubConfig, hc *http.Client, clock func() time.Time) (*authorizer, error) {
	base, err := url.Parse(cfg.APIURL)
	if err != nil || base.Scheme == "" || base.Host == "" {
		return nil, fmt.Errorf("webhook: config github.api_url %q is not an absolute URL", cfg.APIURL)
	}
	client := github.NewClient(hc)
	if cfg.Token != "" {
		client = client.WithAuthToken(cfg.Token)
	}
	client.BaseURL = base
	return &authorizer{cfg: cfg, client: client, clock: clock, cache: map[string]permEntry{}}, nil
}

// listed reports whether login appears in a list whose glob matches repo.
func listed(lists map[string][]string, repo, login string) bool {
	short := strings.TrimPrefix(repo, "github.com/")
	for glob, logins := range lists {
		m1, _ := path.Match(glob, repo)
		m2, _ := path.Match(glob, short)
		if !m1 && !m2 {
			continue
		}
		for _, l := range logins {
			if strings.EqualFold(l, login) {
				return true
			}
		}
	}
	return false
}

// basic applies the checks that need no API call: a missing author, our
// own account, the deny list. It returns nil when they pass.
func (a *authorizer) basic(repo string, actor orchestrator.Actor) *refusal {
	switch {
	case actor.Login == "":
		return &refusal{refuseNoAuthor, "trigger has no author"}
	case a.cfg.BotLogin != "" && strings.EqualFold(actor.Login, a.cfg.BotLogin):
		return &refusal{refuseSelf, "trigger by nightshift itself"}
	case listed(a.cfg.Deny, repo, actor.Login):
		return &refusal{refuseDenied, fmt.Sprintf("%s is denied on %s", actor.Login, repo)}
	}
	return nil
}

// comment decides whether actor may start work with a comment on
// owner/name: never bots or Nightshift itself, never denied logins; allowed
// logins, trusted associations, or write permission (checked through the
// API) otherwise. An error means the decision could not be made.
func (a *authorizer) comment(ctx context.Context, owner, name string, actor orchestrator.Actor) (*refusal, error) {
	repo := "github.com/" + owner + "/" + name
	if r := a.basic(repo, actor); r != nil {
		return r, nil
	}
	if actor.IsBot {
		return &refusal{refuseBot, fmt.Sprintf("comment by bot %s", actor.Login)}, nil
	}
	if listed(a.cfg.Allow, repo, actor.Login) || trustedAssociations[actor.Association] {
		return nil, nil
	}
	perm, err := a.permission(ctx, owner, name, actor.Login)
	if err != nil {
		return nil, err
	}
	switch perm {
	case "admin", "maintain", "write":
		return nil, nil
	}
	return &refusal{refusePermission, fmt.Sprintf("%s has %s permission on %s; write is required", actor.Login, orNone(perm), repo)}, nil
}

// permission returns login's permission on owner/name, cached for
// PermissionTTL. A user GitHub does not know as a collaborator has "none".
func (a *authorizer) permission(ctx context.Context, owner, name, login string) (string, error) {
	key := strings.ToLower(owner + "/" + name + "/" + login)
	now := a.clock()
	a.mu.Lock()
	e, ok := a.cache[key]
	a.mu.Unlock()
	if ok && now.Sub(e.at) < a.cfg.PermissionTTL && now.Sub(e.at) >= 0 {
		return e.permission, nil
	}
	level, _, err := a.client.Repositories.GetPermissionLevel(ctx, owner, name, login)
	perm := level.GetPermission()
	var ghErr *github.ErrorResponse
	switch {
	case err == nil:
	case errors.As(err, &ghErr) && ghErr.Response != nil && ghErr.Response.StatusCode == http.StatusNotFound:
		perm = "none"
	default:
		return "", fmt.Errorf("check permission of %s on %s/%s: %w", login, owner, name, err)
	}
	a.mu.Lock()
	if len(a.cache) > 10000 {
		clear(a.cache)
	}
	a.cache[key] = permEntry{permission: perm, at: now}
	a.mu.Unlock()
	return perm, nil
}
