package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/nightshift/nightshift/orchestrator"
)

// Observer takes the verified deliveries that start no built-in work but
// that an enabled automation may want (a bug label, a pull request
// opened). automation.Observer is the implementation: it stores the event
// on a stream only the automation engines read, so an observed event never
// starts built-in work; who may trigger the automation is its own allow
// rule.
type Observer interface {
	// Observes reports whether an enabled automation's on + where match ev.
	Observes(ev *orchestrator.Event) bool
	// Publish stores ev (Nats-Msg-Id = ev.DeliveryID) and returns after
	// the PubAck; orchestrator.ErrDuplicate for a delivery already stored.
	Publish(ctx context.Context, ev *orchestrator.Event) error
}

// watches reports whether deliveries of src are worth normalizing for
// the Observer: false without one, or when it says (Watches) that no
// automation takes events of src.
func (h *Handler) watches(src orchestrator.Source) bool {
	if h.cfg.Observer == nil {
		return false
	}
	if w, ok := h.cfg.Observer.(sourceWatcher); ok {
		return w.Watches(src)
	}
	return true
}

// sourceWatcher is an Observer that says which sources automations take
// (automation.Observer does).
type sourceWatcher interface {
	Watches(src orchestrator.Source) bool
}

// observed is an event normalized for automations, with what the webhook
// checks before it passes it on.
type observed struct {
	ev *orchestrator.Event
	// repo is the repository as the deny lists name it (github.com/o/n).
	repo string
	// via is the forge host (GitLab, Gitea, GitHub Enterprise) the
	// delivery came from: its bot login and the deny lists apply.
	via *forgeHost
}

// forgeObserver is implemented by a Source that normalizes, for
// automations, the deliveries its Normalize ignores. payload is
// SourceResult.payload: the body as Normalize decoded it, or nil (then
// observe decodes body).
type forgeObserver interface {
	observe(h http.Header, payload any, body []byte, opt SourceOptions) *orchestrator.Event
}

// observe passes an ignored delivery's event (nil: none) to the Observer
// when an automation matches it: the answer is then the contract's 202
// (200 duplicate for a redelivery). Bots, Nightshift itself and denied
// logins are dropped first, as for the built-in triggers; otherwise the
// automation's allow rule decides. Any other case keeps the ignored answer.
func (h *Handler) observe(reqCtx context.Context, delivery string, raw []byte, o *observed, ignoredRes result) (result, error) {
	if o == nil || h.cfg.Observer == nil {
		return ignoredRes, nil
	}
	ev := o.ev
	if ev.Actor.IsBot || remoteOnly(ev.Repo, ev.Target.HeadRepo) != "" {
		return ignoredRes, nil
	}
	ref := h.authz.basic(o.repo, ev.Actor)
	if o.via != nil {
		ref = h.forgeBasic(o.via, ev.Repo, ev.Actor)
	}
	if ref != nil && ref.code != refuseNoAuthor {
		return ignoredRes, nil
	}
	now := h.cfg.Clock().UTC()
	ev.DeliveryID = delivery
	ev.ID = eventID(now, ev.Source, delivery)
	ev.ReceivedAt = now
	ev.IdempotencyKey = string(ev.Source) + ":observed:" + delivery
	if len(raw) <= h.cfg.MaxRaw {
		ev.Raw = json.RawMessage(raw)
	}
	if !h.cfg.Observer.Observes(ev) {
		return ignoredRes, nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(reqCtx), storeTimeout)
	defer cancel()
	switch err := h.cfg.Observer.Publish(ctx, ev); {
	case errors.Is(err, orchestrator.ErrDuplicate):
		return result{outcome: outcomeDuplicate, ev: ev}, nil
	case err != nil:
		return result{}, errors.Join(ErrUnavailable, err)
	}
	h.log.Debug("delivery observed for automations", slog.String("source", string(ev.Source)), slog.String("kind", ev.Kind),
		slog.String("delivery_id", delivery), slog.String("ignored", ignoredRes.reason))
	return result{outcome: outcomeAccepted, ev: ev}, nil
}

// observeGitHub normalizes any GitHub delivery with a repository for
// automations, or returns nil. p is the payload as decodeGitHub decoded it;
// nil (an event it does not decode): body is decoded here. Its kind is issue.<action> for issues
// (issue.labeled, issue.opened), pr.<action> for pull_request (pr.opened),
// comment.<action> for issue and review comments (comment.created), and
// <event>.<action> otherwise (push, release.published,
// check_run.completed); target, actor and instruction are filled where
// the payload has them, and raw keeps the whole payload.
func observeGitHub(event string, p *ghPayload, body []byte, opt forgeOptions) *observed {
	if p == nil {
		p = new(ghPayload)
		if jsonv2.Unmarshal(body, p, jsontext.AllowDuplicateNames(true)) != nil {
			return nil
		}
	}
	if p.Repository == nil {
		return nil
	}
	owner, name, repo, ok := githubRepo(opt, p.Repository.FullName)
	if !ok {
		return nil
	}
	ev := &orchestrator.Event{Source: orchestrator.SourceGitHub, Kind: observedKind(event, p.Action), Repo: repo, RawEvent: event, Actor: ghActor(p.Sender, "")}
	switch {
	case p.Comment != nil:
		ev.Actor = ghActor(p.Comment.User, p.Comment.AuthorAssociation)
		ev.Instruction = strings.TrimSpace(p.Comment.Body)
		ev.Target.CommentID = p.Comment.ID
	case p.Review != nil:
		ev.Actor = ghActor(p.Review.User, p.Review.AuthorAssociation)
		ev.Instruction = strings.TrimSpace(p.Review.Body)
	case p.Issue != nil:
		ev.Instruction = strings.TrimSpace(p.Issue.Title + "\n\n" + p.Issue.Body)
	}
	switch {
	case p.PullRequest != nil && p.PullRequest.Number != 0:
		setPR(&ev.Target, p.PullRequest, opt)
	case p.Issue != nil && p.Issue.Number != 0:
		ev.Target.Type, ev.Target.Number, ev.Target.URL = "issue", p.Issue.Number, p.Issue.HTMLURL
		if p.Issue.PullRequest != nil {
			ev.Target.Type = "pull_request"
		}
	}
	if p.Comment != nil && p.Comment.HTMLURL != "" {
		ev.Target.URL = p.Comment.HTMLURL
	}
	return &observed{ev: ev, repo: "github.com/" + owner + "/" + name}
}

// observedKind is the kind of an observed GitHub or Gitea delivery:
// issue.<action> for issues, pr.<action> for pull requests,
// comment.<action> for issue and review comments, <event>.<action>
// otherwise (<event> without an action); Gitea's label_updated is labeled.
func observedKind(event, action string) string {
	kind := event
	switch event {
	case "issues":
		kind = "issue"
	case "pull_request":
		kind = "pr"
	case "issue_comment", "pull_request_review_comment", "pull_request_comment":
		kind = "comment"
	}
	switch action {
	case "":
		return kind
	case "label_updated":
		return kind + ".labeled"
	}
	return kind + "." + action
}

// observeLinear normalizes a Linear delivery for automations, or returns
// nil. Its kind is ticket.<action> for an issue (ticket.create,
// ticket.update), comment.<action> for a comment, and <type>.<action>
// (lower case) otherwise; comments by an integration or by the agent user
// are dropped.
func observeLinear(p *linPayload, opt linearOptions) *observed {
	d := p.Data
	if d == nil || p.Type == "" || p.Action == "" {
		return nil
	}
	var ev *orchestrator.Event
	switch p.Type {
	case "Issue":
		ident := firstNonEmpty(d.Identifier, identifierFromURL(firstNonEmpty(d.URL, p.URL)))
		ev = &orchestrator.Event{Kind: "ticket." + p.Action, Repo: linearRepo(opt, d.Team, ident),
			Target:      orchestrator.Target{Type: "ticket", ID: firstNonEmpty(ident, d.ID), URL: firstNonEmpty(d.URL, p.URL)},
			Instruction: strings.TrimSpace(d.Title + "\n\n" + d.Description)}
	case "Comment":
		if d.BotActor != nil {
			return nil
		}
		ident := identifierFromURL(p.URL)
		ev = &orchestrator.Event{Kind: "comment." + p.Action, Repo: linearRepo(opt, nil, ident),
			Target:      orchestrator.Target{Type: "ticket", ID: firstNonEmpty(ident, d.IssueID), URL: p.URL},
			Instruction: strings.TrimSpace(d.Body)}
	default:
		ev = &orchestrator.Event{Kind: strings.ToLower(p.Type) + "." + p.Action, Repo: opt.Repo}
	}
	ev.Source, ev.RawEvent, ev.Actor = orchestrator.SourceLinear, p.Type+"."+p.Action, linActor(p.Actor, d.User)
	if a := ev.Actor; opt.AgentUser != "" && (a.Login == opt.AgentUser || strings.EqualFold(a.Name, opt.AgentUser) || d.UserID == opt.AgentUser) {
		return nil // the agent itself
	}
	return &observed{ev: ev, repo: ev.Repo}
}

// observe implements forgeObserver for Gitea and Forgejo: kinds as on
// GitHub (issue.<action>, pr.<action>, comment.<action>,
// <event>.<action>), with Gitea's label_updated as issue.labeled (or
// pr.labeled). Comments Nightshift wrote are dropped.
func (GiteaSource) observe(h http.Header, payload any, body []byte, opt SourceOptions) *orchestrator.Event {
	event := giteaHeader(h, "Event")
	if event == "" {
		return nil
	}
	p, _ := payload.(*gtPayload)
	if p == nil {
		p = new(gtPayload)
		if jsonv2.Unmarshal(body, p, jsontext.AllowDuplicateNames(true)) != nil {
			return nil
		}
	}
	if p.Repository == nil {
		return nil
	}
	repo, ok := giteaRepo(opt.GitURL, p.Repository.FullName)
	if !ok {
		return nil
	}
	ev := &orchestrator.Event{Kind: observedKind(event, p.Action), Repo: repo, RawEvent: event, Actor: giteaNorm{}.actor(p.Sender)}
	if c := p.Comment; c != nil {
		if strings.Contains(c.Body, nightshiftMark) {
			return nil
		}
		ev.Actor = giteaNorm{}.actor(c.User)
		ev.Instruction = strings.TrimSpace(c.Body)
		ev.Target.CommentID, ev.Target.URL = c.ID, c.HTMLURL
	}
	switch {
	case p.PullRequest != nil && p.PullRequest.Number != 0:
		ev.Target.Type, ev.Target.Number = "pull_request", p.PullRequest.Number
		ev.Target.URL = firstNonEmpty(ev.Target.URL, p.PullRequest.HTMLURL)
		if p.PullRequest.Head != nil {
			ev.Target.Branch, ev.Target.HeadSHA = p.PullRequest.Head.Ref, p.PullRequest.Head.SHA
		}
	case p.Issue != nil && p.Issue.Number != 0:
		ev.Target.Type, ev.Target.Number = "issue", p.Issue.Number
		if p.Issue.PullRequest != nil || p.IsPull {
			ev.Target.Type = "pull_request"
		}
		ev.Target.URL = firstNonEmpty(ev.Target.URL, p.Issue.HTMLURL)
		if ev.Instruction == "" {
			ev.Instruction = strings.TrimSpace(p.Issue.Title + "\n\n" + p.Issue.Body)
		}
	}
	return ev
}

// observe implements forgeObserver for GitLab: issue.<action>
// (issue.open, issue.update, issue.close; an update that adds labels is
// issue.labeled), pr.<action> for merge requests, comment.create for
// notes, <object_kind>[.<action>] otherwise. Confidential issues and
// notes, internal notes and system notes are never observed.
func (gitlabSource) observe(h http.Header, payload any, body []byte, opt SourceOptions) *orchestrator.Event {
	switch h.Get("X-Gitlab-Event") {
	case glConfidentialNote, glConfidentialIss:
		return nil
	}
	p, _ := payload.(*glPayload)
	if p == nil {
		p = new(glPayload)
		if jsonv2.Unmarshal(body, p, jsontext.AllowDuplicateNames(true)) != nil {
			return nil
		}
	}
	if p.Project == nil || p.ObjectKind == "" {
		return nil
	}
	repo, ok := gitlabRepo(opt.GitURL, p.Project.PathWithNamespace)
	if !ok {
		return nil
	}
	ev := &orchestrator.Event{Kind: p.ObjectKind, Repo: repo, RawEvent: h.Get("X-Gitlab-Event")}
	if p.User != nil {
		ev.Actor = glActor(*p.User, opt.BotLogin)
	}
	switch p.ObjectKind {
	case "issue", "work_item":
		var a glIssue
		if objectAttributes(ev.RawEvent, p, &a) != nil || a.Confidential {
			return nil
		}
		ev.Kind = "issue." + orNone(a.Action)
		if a.Action == "update" && len(glAddedLabels(p)) > 0 {
			ev.Kind = "issue.labeled"
		}
		ev.Target = orchestrator.Target{Type: "issue", Number: a.IID, URL: a.URL}
		ev.Instruction = strings.TrimSpace(a.Title + "\n\n" + a.Description)
	case "merge_request":
		var a glMR
		if objectAttributes(ev.RawEvent, p, &a) != nil {
			return nil
		}
		ev.Kind = "pr." + orNone(a.Action)
		if a.Action == "update" && len(glAddedLabels(p)) > 0 {
			ev.Kind = "pr.labeled"
		}
		ev.Target = orchestrator.Target{Type: "pull_request", Number: a.IID, URL: a.URL, Branch: a.SourceBranch, BaseBranch: a.TargetBranch}
		ev.Instruction = a.Title
	case "note":
		var a glNote
		if objectAttributes(ev.RawEvent, p, &a) != nil || a.System || a.Internal || strings.Contains(a.Note, nightshiftMark) ||
			p.Issue != nil && p.Issue.Confidential {
			return nil
		}
		ev.Kind = "comment." + firstNonEmpty(a.Action, "create")
		ev.Instruction = strings.TrimSpace(a.Note)
		ev.Target = orchestrator.Target{CommentID: a.ID, URL: a.URL}
		switch {
		case p.MergeRequest != nil:
			ev.Target.Type, ev.Target.Number = "pull_request", p.MergeRequest.IID
		case p.Issue != nil:
			ev.Target.Type, ev.Target.Number = "issue", p.Issue.IID
		}
	default:
		var a struct {
			Action string `json:"action"`
		}
		if objectAttributes(ev.RawEvent, p, &a) == nil && a.Action != "" {
			ev.Kind += "." + a.Action
		}
	}
	return ev
}

// glAddedLabels returns the titles of the labels an update added.
func glAddedLabels(p *glPayload) []string {
	if p.Changes.Labels == nil {
		return nil
	}
	had := map[int64]bool{}
	for _, l := range p.Changes.Labels.Previous {
		had[l.ID] = true
	}
	var out []string
	for _, l := range p.Changes.Labels.Current {
		if !had[l.ID] {
			out = append(out, l.Title)
		}
	}
	return out
}
