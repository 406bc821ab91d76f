package webhook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/forge"
)

// The forge routes, POST /hooks/gitlab and POST /hooks/gitea, serve every
// configured host of their kind: a delivery is verified against each
// host's secrets in turn and belongs to the host whose secret matched (its
// git URL names the event's repository, its trigger and label apply). A
// route with no host configured, or no Source for its kind, refuses every
// delivery (401), like /hooks/github without a secret.

// ForgeConfig is one forge host whose webhooks arrive on its kind's route.
type ForgeConfig struct {
	// Kind is forge.KindGitLab, forge.KindGitea, or forge.KindGitHub for a
	// GitHub host besides Config.GitHub (GitHub Enterprise): its
	// deliveries arrive on /hooks/github, signed with its own secrets.
	Kind forge.Kind
	// Secrets verify deliveries; any one matches. Empty: refused (401).
	Secrets []string
	// GitURL is the host's clone base (https://git.example.com/); events
	// name repositories GitURL + owner/name + ".git". Required.
	GitURL string
	// Trigger starts a comment command (default "@nightshift").
	Trigger string
	// Label on an issue starts work (default "nightshift").
	Label string
	// BotLogin is Nightshift's own login there; its comments never trigger.
	BotLogin string
	// ReplyRefused makes Config.Replier answer refused comment triggers.
	ReplyRefused bool
}

// LogValue implements slog.LogValuer: secrets print as a count.
func (c ForgeConfig) LogValue() slog.Value {
	return slog.GroupValue(slog.String("kind", string(c.Kind)), slog.String("git_url", c.GitURL), slog.Int("secrets", len(c.Secrets)))
}

// forgeHost is a validated ForgeConfig.
type forgeHost struct {
	ForgeConfig
	host string
	opt  forgeOptions // for the GitHub normalizer
}

// forgeRoutes holds the forge hosts and sources by kind.
type forgeRoutes struct {
	hosts   map[forge.Kind][]*forgeHost
	sources map[forge.Kind]Source
	perms   *permCache
}

func newForgeRoutes(c Config) (*forgeRoutes, error) {
	fr := &forgeRoutes{hosts: map[forge.Kind][]*forgeHost{}, sources: map[forge.Kind]Source{},
		perms: &permCache{ttl: c.GitHub.PermissionTTL, clock: c.Clock, m: map[string]accessEntry{}}}
	for _, s := range c.Sources {
		if s == nil {
			continue
		}
		if _, dup := fr.sources[s.Kind()]; dup {
			return nil, fmt.Errorf("webhook: two sources for forge kind %s", s.Kind())
		}
		fr.sources[s.Kind()] = s
	}
	seen := map[string]bool{}
	// A delivery belongs to the host whose secret verifies it: two hosts
	// of one route sharing a secret could not be told apart.
	owner := map[string]string{} // kind + secret → the host using it
	for _, sec := range c.GitHub.Secrets {
		owner[string(forge.KindGitHub)+"\x00"+sec] = "the github: block"
	}
	for i, f := range c.Forges {
		switch f.Kind {
		case forge.KindGitLab, forge.KindGitea, forge.KindGitHub:
		default:
			return nil, fmt.Errorf("webhook: config forges[%d] kind %q has no webhook route (want github, gitlab or gitea)", i, f.Kind)
		}
		u, err := url.Parse(f.GitURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("webhook: config forges[%d] git_url %q is not an absolute http(s) URL", i, f.GitURL)
		}
		if !strings.HasSuffix(f.GitURL, "/") {
			f.GitURL += "/"
		}
		if f.Trigger == "" {
			f.Trigger = "@nightshift"
		}
		if f.Label == "" {
			f.Label = "nightshift"
		}
		if triggerName(f.Trigger) == "" {
			return nil, fmt.Errorf("webhook: config forges[%d] trigger %q has no name", i, f.Trigger)
		}
		h := strings.ToLower(u.Host)
		if g, _ := url.Parse(c.GitHub.GitURL); g != nil && strings.EqualFold(g.Host, h) {
			return nil, fmt.Errorf("webhook: config forges[%d] host %s is the github: block's", i, h)
		}
		if seen[h] {
			return nil, fmt.Errorf("webhook: config forges[%d] host %s is configured twice", i, h)
		}
		seen[h] = true
		for _, sec := range f.Secrets {
			k := string(f.Kind) + "\x00" + sec
			if o, dup := owner[k]; dup && sec != "" && o != h {
				return nil, fmt.Errorf("webhook: config forges[%d] (%s) shares a webhook secret with %s; each host needs its own, deliveries are told apart by it", i, h, o)
			}
			owner[k] = h
		}
		u, _ = url.Parse(f.GitURL)
		fr.hosts[f.Kind] = append(fr.hosts[f.Kind], &forgeHost{ForgeConfig: f, host: h, opt: forgeOptions{gitURL: u}})
	}
	return fr, nil
}

// serveForge handles POST /hooks/<kind>: verify against each host's
// secrets, normalize with the matching host's options, then the accept
// steps every source shares.
func (h *Handler) serveForge(ctx context.Context, r *http.Request, body []byte, kind forge.Kind) (result, error) {
	src := h.forges.sources[kind]
	hosts := h.forges.hosts[kind]
	if src == nil || len(hosts) == 0 {
		return result{}, ErrNoSecret
	}
	var fh *forgeHost
	verr := ErrNoSecret
	for _, c := range hosts {
		err := src.Verify(r.Header, body, c.Secrets)
		if err == nil {
			fh = c
			break
		}
		if errors.Is(verr, ErrNoSecret) || errors.Is(err, ErrBadSignature) {
			verr = err // the most telling refusal: bad over missing over none
		}
	}
	if fh == nil {
		return result{}, verr
	}
	opt := SourceOptions{Host: fh.host, GitURL: fh.GitURL, Trigger: fh.Trigger, Label: fh.Label, BotLogin: fh.BotLogin}
	res, err := src.Normalize(r.Header, body, opt)
	if err != nil {
		var mal *MalformedError
		if !errors.As(err, &mal) {
			err = malformedf("%v", err)
		}
		return result{}, err
	}
	if cr, ok := src.(commitResolver); ok && res.Event != nil {
		// A CI failure naming only a commit (Gitea's status hook): find
		// its pull request through the host's driver (see gitea.go).
		if d, r, ok := h.cfg.Drivers.ForRepo(res.Event.Repo); ok {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
			err := cr.resolveCommit(rctx, d, r, &res)
			cancel()
			if err != nil {
				return result{}, errors.Join(ErrUnavailable, err)
			}
		}
	}
	var n normalized
	switch {
	case res.Event != nil:
		n = normalized{ev: res.Event, attemptKey: res.AttemptKey, rawIsJSON: true, via: fh}
		switch res.Auth {
		case AuthComment:
			n.auth = authComment
		case AuthLabel:
			n.auth = authLabel
		}
	case res.Answer != nil:
		a, ok, err := h.forgeAnswer(ctx, kind, fh, res.Answer)
		if err != nil {
			return result{}, err
		}
		if ok {
			n = a
		} else {
			n = ignored("comment on %s starts no work", orNone(res.Answer.Target.Key()))
		}
	default:
		n = ignored("%s", orNone(res.Ignore))
	}
	delivery := src.DeliveryID(r.Header)
	if delivery == "" {
		delivery = bodyHashID(body)
	}
	out, err := h.accept(ctx, orchestrator.Source(kind), delivery, body, n)
	if fo, ok := src.(forgeObserver); ok && err == nil && out.outcome == outcomeIgnored && h.watches(orchestrator.Source(kind)) {
		var o *observed
		if ev := fo.observe(r.Header, res.payload, body, opt); ev != nil {
			ev.Source = orchestrator.Source(kind)
			o = &observed{ev: ev, via: fh}
		}
		return h.observe(ctx, delivery, body, o, out)
	}
	return out, err
}

// forgeAnswer turns a comment that starts no work into the answer of a
// task waiting on its issue or change request, when its author may
// trigger (like githubAnswer).
func (h *Handler) forgeAnswer(ctx context.Context, kind forge.Kind, fh *forgeHost, c *SourceComment) (normalized, bool, error) {
	if h.cfg.Waiting == nil || c.ID == 0 || strings.TrimSpace(c.Body) == "" || c.Target.Number == 0 {
		return normalized{}, false, nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	taskID, err := h.cfg.Waiting(ctx, c.Repo, c.Target)
	if errors.Is(err, orchestrator.ErrNotFound) || (err == nil && taskID == "") {
		return normalized{}, false, nil
	}
	if err != nil {
		return normalized{}, false, errors.Join(ErrUnavailable, fmt.Errorf("look up a task waiting for an answer: %w", err))
	}
	ref, err := h.forgeComment(ctx, fh, c.Repo, c.Actor)
	if err != nil {
		return normalized{}, false, errors.Join(ErrUnavailable, err)
	}
	if ref != nil {
		return ignored("not an answer to task %s: %s", taskID, ref.reason), true, nil
	}
	ev := &orchestrator.Event{
		Kind:           orchestrator.KindTaskAnswer,
		Repo:           c.Repo,
		Target:         orchestrator.Target{Type: "task", ID: taskID, URL: c.URL, CommentID: c.ID},
		Actor:          c.Actor,
		Instruction:    strings.TrimSpace(c.Body),
		IdempotencyKey: string(kind) + ":answer:" + strconv.FormatInt(c.ID, 10),
		RawEvent:       c.RawEvent,
	}
	return normalized{ev: ev, rawIsJSON: true, via: fh}, true, nil
}

// gitHubHostAnswer is githubAnswer for a GitHub host of Config.Forges: a
// new comment that starts no work may answer a task waiting on its issue
// or pull request, its author authorized through the host's driver.
func (h *Handler) gitHubHostAnswer(ctx context.Context, fh *forgeHost, event string, p *ghPayload) (normalized, bool, error) {
	if p == nil || p.Comment == nil || p.Repository == nil || p.Action != "created" ||
		(event != "issue_comment" && event != "pull_request_review_comment") {
		return normalized{}, false, nil
	}
	_, _, repo, ok := githubRepo(fh.opt, p.Repository.FullName)
	if !ok {
		return normalized{}, false, nil
	}
	c := &SourceComment{Repo: repo, ID: p.Comment.ID, URL: p.Comment.HTMLURL, Body: p.Comment.Body, RawEvent: event,
		Actor: ghActor(p.Comment.User, p.Comment.AuthorAssociation)}
	switch {
	case event == "pull_request_review_comment" && p.PullRequest != nil:
		c.Target = orchestrator.Target{Type: "pull_request", Number: p.PullRequest.Number}
	case p.Issue != nil:
		c.Target = orchestrator.Target{Type: "issue", Number: p.Issue.Number}
		if p.Issue.PullRequest != nil {
			c.Target.Type = "pull_request"
		}
	}
	return h.forgeAnswer(ctx, forge.KindGitHub, fh, c)
}

// forgeBasic is authorizer.basic for a forge host: no author, Nightshift
// itself, denied logins.
func (h *Handler) forgeBasic(fh *forgeHost, repo string, actor orchestrator.Actor) *refusal {
	key := config.RepoKey(repo)
	switch {
	case actor.Login == "":
		return &refusal{refuseNoAuthor, "trigger has no author"}
	case fh.BotLogin != "" && strings.EqualFold(actor.Login, fh.BotLogin):
		return &refusal{refuseSelf, "trigger by nightshift itself"}
	case listed(h.cfg.GitHub.Deny, key, actor.Login):
		return &refusal{refuseDenied, fmt.Sprintf("%s is denied on %s", actor.Login, key)}
	}
	return nil
}

// forgeComment decides whether actor may start work with a comment on repo
// of a forge host: never bots or Nightshift itself, never denied logins;
// allowed logins, or write access checked through the host's driver
// (cached for GitHub.PermissionTTL). Without a driver for the host (no
// token configured) the comment is refused: its author cannot be checked.
func (h *Handler) forgeComment(ctx context.Context, fh *forgeHost, repo string, actor orchestrator.Actor) (*refusal, error) {
	if r := h.forgeBasic(fh, repo, actor); r != nil {
		return r, nil
	}
	key := config.RepoKey(repo)
	if actor.IsBot {
		return &refusal{refuseBot, fmt.Sprintf("comment by bot %s", actor.Login)}, nil
	}
	if listed(h.cfg.GitHub.Allow, key, actor.Login) || trustedAssociations[actor.Association] {
		return nil, nil // GitHub says who owns, is a member or collaborates
	}
	d, r, ok := h.cfg.Drivers.ForRepo(repo)
	if !ok {
		return &refusal{refusePermission, fmt.Sprintf("no credentials for %s to check %s's permission on %s", fh.host, actor.Login, key)}, nil
	}
	a, err := h.forges.perms.get(ctx, d, r, actor.Login)
	if err != nil {
		return nil, err
	}
	if a.CanTrigger() {
		return nil, nil
	}
	return &refusal{refusePermission, fmt.Sprintf("%s has %s permission on %s; write is required", actor.Login, a, key)}, nil
}

// permCache caches forge permission lookups.
type permCache struct {
	ttl   time.Duration
	clock func() time.Time

	mu sync.Mutex
	m  map[string]accessEntry
}

type accessEntry struct {
	access forge.Access
	at     time.Time
}

func (c *permCache) get(ctx context.Context, d forge.Driver, r forge.Repo, login string) (forge.Access, error) {
	key := strings.ToLower(r.Key() + "/" + login)
	now := c.clock()
	c.mu.Lock()
	e, ok := c.m[key]
	c.mu.Unlock()
	if ok && now.Sub(e.at) < c.ttl && now.Sub(e.at) >= 0 {
		return e.access, nil
	}
	a, err := d.Permission(ctx, r, login)
	if err != nil {
		return forge.AccessNone, fmt.Errorf("check permission of %s on %s: %w", login, r.Key(), err)
	}
	c.mu.Lock()
	if len(c.m) > 10000 {
		clear(c.m)
	}
	c.m[key] = accessEntry{access: a, at: now}
	c.mu.Unlock()
	return a, nil
}
