package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/orchestrator"
)

// slackUsage is the ephemeral help for a malformed /nightshift command.
const slackUsage = "usage: /nightshift <repo> <instruction>, e.g. /nightshift acme/app fix the flaky login test"

// normalizeSlackCommand turns a slash-command form into an event, or a
// reason to ignore it. The text is "<repo> <instruction>"; the repository
// must be owner/name, host/owner/name or an https URL on a configured
// forge host (see slackRepo).
func normalizeSlackCommand(form url.Values, forge forgeOptions) (normalized, error) {
	if form.Get("command") == "" {
		return normalized{}, malformedf("slash command has no command field")
	}
	text := strings.TrimSpace(form.Get("text"))
	repoArg, instruction, _ := strings.Cut(text, " ")
	instruction = strings.TrimSpace(instruction)
	if repoArg == "" || instruction == "" {
		return ignored("%s", slackUsage), nil
	}
	repo, ok := slackRepo(repoArg, forge)
	if !ok {
		return ignored("%q is not a repository on a configured forge (owner/name, host/owner/name or an https URL; never a path); %s", repoArg, slackUsage), nil
	}
	ev := &orchestrator.Event{
		Kind:        orchestrator.KindSlackCommand,
		Repo:        repo,
		Actor:       orchestrator.Actor{Login: form.Get("user_id"), Name: form.Get("user_name")},
		Instruction: instruction,
		RawEvent:    form.Get("command"),
	}
	if id := form.Get("trigger_id"); id != "" {
		ev.IdempotencyKey = "slack:command:" + id
	}
	return normalized{ev: ev}, nil
}

// slackRepo turns the repo argument of a slash command into a clone URL:
// "acme/app" is acme/app on the configured GitHub (GitHub.GitURL),
// "host/acme/app" and https URLs (also Slack's <url|label> links) are
// accepted on configured forge hosts only. Paths, file:// and ssh are not.
func slackRepo(arg string, forge forgeOptions) (string, bool) {
	s := strings.TrimSpace(arg)
	if strings.HasPrefix(s, "<") && strings.HasSuffix(s, ">") {
		s = strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">")
		s, _, _ = strings.Cut(s, "|")
	}
	return forgeRepo(s, forge, true)
}

// Slack interaction payload: only the fields Nightshift reads.
type slackInteraction struct {
	Type      string `json:"type"`
	TriggerID string `json:"trigger_id"`
	User      struct {
		ID       string `json:"id"`
		Username string `json:"username"`
		Name     string `json:"name"`
	} `json:"user"`
	Actions []struct {
		ActionID string `json:"action_id"`
		BlockID  string `json:"block_id"`
		Value    string `json:"value"`
		ActionTS string `json:"action_ts"`
	} `json:"actions"`
}

// normalizeSlackInteraction turns a block_actions payload whose first
// action is a cancel, retry or approve (a plan) button (value = task id)
// into a slack.action event. action_id is "cancel", "retry" or "approve",
// optionally prefixed "nightshift_".
func normalizeSlackInteraction(payload []byte) (normalized, string, error) {
	var p slackInteraction
	if err := json.Unmarshal(payload, &p); err != nil {
		return normalized{}, "", malformedf("decode slack interaction: %v", err)
	}
	if p.Type != "block_actions" {
		return ignored("slack interaction %s starts no work", orNone(p.Type)), p.TriggerID, nil
	}
	if n, ok := slackAnswer(&p); ok {
		return n, p.TriggerID, nil
	}
	if len(p.Actions) == 0 {
		return normalized{}, "", malformedf("block_actions payload has no actions")
	}
	a := p.Actions[0]
	action := strings.TrimPrefix(a.ActionID, "nightshift_")
	if action != "cancel" && action != "retry" && action != "approve" {
		return ignored("slack action %q is not cancel, retry or approve", a.ActionID), p.TriggerID, nil
	}
	if strings.TrimSpace(a.Value) == "" {
		return ignored("slack %s button carries no task id", action), p.TriggerID, nil
	}
	ev := &orchestrator.Event{
		Kind:           orchestrator.KindSlackAction,
		Target:         orchestrator.Target{Type: "task", ID: a.Value},
		Actor:          orchestrator.Actor{Login: p.User.ID, Name: firstNonEmpty(p.User.Username, p.User.Name)},
		Instruction:    action,
		IdempotencyKey: fmt.Sprintf("slack:action:%s:%s:%s", action, a.Value, firstNonEmpty(a.ActionTS, p.TriggerID)),
		RawEvent:       p.Type,
	}
	return normalized{ev: ev, rawIsJSON: true}, p.TriggerID, nil
}

func (h *Handler) verifySlack(r *http.Request, body []byte) error {
	return VerifySlack(h.cfg.Slack.Secrets, r.Header.Get("X-Slack-Request-Timestamp"),
		r.Header.Get("X-Slack-Signature"), body, h.cfg.Clock(), h.cfg.Slack.MaxSkew)
}

// serveSlackCommand handles POST /hooks/slack/commands.
func (h *Handler) serveSlackCommand(ctx context.Context, r *http.Request, body []byte) (result, error) {
	if err := h.verifySlack(r, body); err != nil {
		return result{}, err
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return result{}, malformedf("slash command body is not a form: %v", err)
	}
	n, err := normalizeSlackCommand(form, h.forge)
	if err != nil {
		return result{}, err
	}
	delivery := form.Get("trigger_id")
	if delivery == "" {
		delivery = bodyHashID(body)
	}
	return h.accept(ctx, orchestrator.SourceSlack, delivery, body, n)
}

// serveSlackInteraction handles POST /hooks/slack/interactions.
func (h *Handler) serveSlackInteraction(ctx context.Context, r *http.Request, body []byte) (result, error) {
	if err := h.verifySlack(r, body); err != nil {
		return result{}, err
	}
	form, err := url.ParseQuery(string(body))
	if err != nil || form.Get("payload") == "" {
		return result{}, malformedf("interaction body has no payload")
	}
	payload := []byte(form.Get("payload"))
	n, trigger, err := normalizeSlackInteraction(payload)
	if err != nil {
		return result{}, err
	}
	delivery := trigger
	if delivery == "" {
		delivery = bodyHashID(body)
	}
	return h.accept(ctx, orchestrator.SourceSlack, delivery, payload, n)
}

// serveSlackEvent handles POST /hooks/slack/events: it answers Slack's
// url_verification challenge; Events API callbacks start no work.
func (h *Handler) serveSlackEvent(ctx context.Context, r *http.Request, body []byte) (result, error) {
	if err := h.verifySlack(r, body); err != nil {
		return result{}, err
	}
	var p struct {
		Type      string `json:"type"`
		Challenge string `json:"challenge"`
		Event     struct {
			Type string `json:"type"`
		} `json:"event"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return result{}, malformedf("decode slack event: %v", err)
	}
	if p.Type == "url_verification" {
		return result{outcome: outcomeIgnored, reason: "url_verification", body: map[string]string{"challenge": p.Challenge}}, nil
	}
	return result{outcome: outcomeIgnored, reason: fmt.Sprintf("slack %s %s starts no work", orNone(p.Type), orNone(p.Event.Type))}, nil
}

// writeSlackCommandResult answers a slash command with an ephemeral
// message in Slack's format (Slack shows non-200 answers as failures).
func writeSlackCommandResult(w http.ResponseWriter, res result) {
	text := ""
	switch res.outcome {
	case outcomeAccepted:
		text = fmt.Sprintf("Nightshift queued work on %s: %s (event %s)", config.RepoKey(res.ev.Repo), res.ev.Instruction, res.ev.ID)
	case outcomeDuplicate:
		text = "Nightshift already received this command."
	default:
		text = "Nightshift did not start: " + res.reason
	}
	writeJSON(w, http.StatusOK, map[string]string{"response_type": "ephemeral", "text": text})
}

// writeSlackResult answers interactions and events: Slack wants 200.
func writeSlackResult(w http.ResponseWriter, res result) {
	switch {
	case res.body != nil:
		writeJSON(w, http.StatusOK, res.body)
	case res.outcome == outcomeAccepted:
		writeJSON(w, http.StatusOK, map[string]string{"status": "accepted", "event_id": res.ev.ID, "delivery_id": res.ev.DeliveryID})
	case res.outcome == outcomeDuplicate:
		writeJSON(w, http.StatusOK, map[string]string{"status": "duplicate"})
	default:
		writeJSON(w, http.StatusOK, map[string]string{"status": "ignored", "reason": res.reason})
	}
}
