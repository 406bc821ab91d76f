package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/nightshift/nightshift/orchestrator"
)

// Linear payload shapes: only the fields Nightshift reads.
type (
	linUser struct {
		ID    string `json:"id"`
		Name  string `json:"name"`
		Email string `json:"email"`
		Type  string `json:"type"`
	}
	linLabel struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	linData struct {
		ID          string     `json:"id"`
		Identifier  string     `json:"identifier"`
		Number      int        `json:"number"`
		Title       string     `json:"title"`
		Description string     `json:"description"`
		Body        string     `json:"body"`
		UpdatedAt   string     `json:"updatedAt"`
		URL         string     `json:"url"`
		AssigneeID  string     `json:"assigneeId"`
		Assignee    *linUser   `json:"assignee"`
		Labels      []linLabel `json:"labels"`
		LabelIDs    []string   `json:"labelIds"`
		Team        *struct {
			Key string `json:"key"`
		} `json:"team"`
		IssueID  string   `json:"issueId"`
		Issue    *linData `json:"issue"`
		User     *linUser `json:"user"`
		UserID   string   `json:"userId"`
		BotActor *struct {
			Name string `json:"name"`
		} `json:"botActor"`
	}
	linPayload struct {
		Action           string                     `json:"action"`
		Type             string                     `json:"type"`
		Data             *linData                   `json:"data"`
		URL              string                     `json:"url"`
		UpdatedFrom      map[string]json.RawMessage `json:"updatedFrom"`
		Actor            *linUser                   `json:"actor"`
		WebhookTimestamp int64                      `json:"webhookTimestamp"`
		WebhookID        string                     `json:"webhookId"`
	}
)

// linearOptions is the slice of configuration Linear normalization reads.
type linearOptions struct {
	AgentUser string
	Label     string
	Trigger   string
	Repo      string
	TeamRepos map[string]string
}

// parseLinear decodes a Linear body (after its signature was verified).
func parseLinear(body []byte) (*linPayload, error) {
	var p linPayload
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, malformedf("decode linear payload: %v", err)
	}
	return &p, nil
}

// normalizeLinear turns a decoded Linear delivery into an event, or a
// reason to ignore it.
func normalizeLinear(p *linPayload, opt linearOptions) (normalized, error) {
	switch p.Type {
	case "Issue":
		return normalizeLinearIssue(p, opt)
	case "Comment":
		return normalizeLinearComment(p, opt)
	}
	return ignored("linear %s %s starts no work", orNone(p.Type), orNone(p.Action)), nil
}

func normalizeLinearIssue(p *linPayload, opt linearOptions) (normalized, error) {
	d := p.Data
	if d == nil || d.ID == "" {
		return normalized{}, malformedf("linear Issue payload has no data.id")
	}
	if p.Action != "create" && p.Action != "update" {
		return ignored("linear issue %s", orNone(p.Action)), nil
	}
	assigned := opt.AgentUser != "" && (d.AssigneeID == opt.AgentUser ||
		(d.Assignee != nil && (d.Assignee.ID == opt.AgentUser || strings.EqualFold(d.Assignee.Name, opt.AgentUser))))
	labelled := slices.ContainsFunc(d.Labels, func(l linLabel) bool { return strings.EqualFold(l.Name, opt.Label) })
	if !assigned && !labelled {
		return ignored("linear issue is neither assigned to the agent nor labelled %q", opt.Label), nil
	}
	if p.Action == "update" {
		// Only the change that made it ours starts work, not every later edit.
		_, reassigned := p.UpdatedFrom["assigneeId"]
		_, relabelled := p.UpdatedFrom["labelIds"]
		if !(assigned && reassigned) && !(labelled && relabelled) {
			return ignored("linear issue update did not assign or label it"), nil
		}
	}
	ident := firstNonEmpty(d.Identifier, identifierFromURL(firstNonEmpty(d.URL, p.URL)))
	if ident == "" && d.Team != nil && d.Number != 0 {
		ident = fmt.Sprintf("%s-%d", d.Team.Key, d.Number)
	}
	ev := &orchestrator.Event{
		Kind:           orchestrator.KindTicketAssigned,
		Repo:           linearRepo(opt, d.Team, ident),
		Target:         orchestrator.Target{Type: "ticket", ID: firstNonEmpty(ident, d.ID), URL: firstNonEmpty(d.URL, p.URL)},
		Actor:          linActor(p.Actor, d.User),
		Instruction:    strings.TrimSpace(d.Title + "\n\n" + d.Description),
		IdempotencyKey: "linear:issue:" + d.ID + ":" + d.UpdatedAt,
		RawEvent:       "Issue." + p.Action,
	}
	return normalized{ev: ev, rawIsJSON: true}, nil
}

func normalizeLinearComment(p *linPayload, opt linearOptions) (normalized, error) {
	d := p.Data
	if d == nil || d.ID == "" {
		return normalized{}, malformedf("linear Comment payload has no data.id")
	}
	if p.Action != "create" {
		return ignored("linear comment %s", orNone(p.Action)), nil
	}
	if d.BotActor != nil {
		return ignored("linear comment by an integration"), nil
	}
	if author := linActor(p.Actor, d.User); opt.AgentUser != "" &&
		(author.Login == opt.AgentUser || strings.EqualFold(author.Name, opt.AgentUser) || d.UserID == opt.AgentUser) {
		return ignored("linear comment by the agent itself"), nil
	}
	instruction, ok := commandIn(d.Body, opt.Trigger)
	if !ok && opt.AgentUser != "" && !strings.ContainsAny(opt.AgentUser, " \t") {
		instruction, ok = commandIn(d.Body, "@"+opt.AgentUser)
	}
	if !ok {
		return ignored("linear comment does not mention %s", opt.Trigger), nil
	}
	ident := identifierFromURL(p.URL)
	issueID := d.IssueID
	if d.Issue != nil {
		issueID = firstNonEmpty(issueID, d.Issue.ID)
	}
	ev := &orchestrator.Event{
		Kind:           orchestrator.KindTicketComment,
		Repo:           linearRepo(opt, nil, ident),
		Target:         orchestrator.Target{Type: "ticket", ID: firstNonEmpty(ident, issueID), URL: p.URL},
		Actor:          linActor(p.Actor, d.User),
		Instruction:    instruction,
		IdempotencyKey: "linear:comment:" + d.ID,
		RawEvent:       "Comment." + p.Action,
	}
	return normalized{ev: ev, rawIsJSON: true}, nil
}

func linActor(actor, user *linUser) orchestrator.Actor {
	u := actor
	if u == nil {
		u = user
	}
	if u == nil {
		return orchestrator.Actor{}
	}
	return orchestrator.Actor{Login: u.ID, Name: u.Name, Email: u.Email, IsBot: u.Type != "" && u.Type != "user"}
}

// linearRepo picks the repository for a ticket: the team's mapping, then
// the configured default (possibly empty: the scheduler resolves it).
func linearRepo(opt linearOptions, team *struct {
	Key string `json:"key"`
}, ident string) string {
	key := ""
	if team != nil {
		key = team.Key
	} else if k, _, ok := strings.Cut(ident, "-"); ok {
		key = k
	}
	if r, ok := opt.TeamRepos[key]; ok && key != "" {
		return r
	}
	return opt.Repo
}

// identifierFromURL extracts ENG-12 from https://linear.app/org/issue/ENG-12/slug#comment-x.
func identifierFromURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	for i := 0; i+1 < len(parts); i++ {
		if parts[i] == "issue" {
			return parts[i+1]
		}
	}
	return ""
}

// serveLinear handles POST /hooks/linear.
func (h *Handler) serveLinear(ctx context.Context, r *http.Request, body []byte) (result, error) {
	if err := VerifyLinear(h.cfg.Linear.Secrets, r.Header.Get("Linear-Signature"), body); err != nil {
		return result{}, err
	}
	p, err := parseLinear(body)
	if err != nil {
		return result{}, err
	}
	if err := CheckLinearTimestamp(p.WebhookTimestamp, h.cfg.Clock(), h.cfg.Linear.MaxSkew); err != nil {
		return result{}, err
	}
	opt := linearOptions{
		AgentUser: h.cfg.Linear.AgentUser, Label: h.cfg.Linear.Label, Trigger: h.cfg.Linear.Trigger,
		Repo: h.cfg.Linear.Repo, TeamRepos: h.cfg.Linear.TeamRepos,
	}
	n, err := normalizeLinear(p, opt)
	if err != nil {
		return result{}, err
	}
	if n.ev == nil {
		// Not a trigger: perhaps the answer to a waiting agent's question.
		if a, ok, err := h.linearAnswer(ctx, p, opt); err != nil {
			return result{}, err
		} else if ok {
			n = a
		}
	}
	delivery := bodyHashID(body)
	if d := r.Header.Get("Linear-Delivery"); d != "" {
		delivery = strings.TrimPrefix(p.WebhookID+":"+d, ":")
	}
	res, err := h.accept(ctx, orchestrator.SourceLinear, delivery, body, n)
	if err == nil && res.outcome == outcomeIgnored && h.watches(orchestrator.SourceLinear) {
		return h.observe(ctx, delivery, body, observeLinear(p, opt), res)
	}
	return res, err
}
