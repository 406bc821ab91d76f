package webhook

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nightshift/nightshift/orchestrator"
)

// Answers to an agent's question (a task in needs_input):
//
//   - GitHub: any new comment on the task's issue or pull request, without
//     the trigger word, from an author authorized like a trigger's (write
//     access, never a bot). A comment from anyone else is ignored without a
//     reply. Config.Waiting names the waiting task.
//   - Slack: the reply box of the task's message (an input block with
//     dispatch_action, block_id "answer:<task id>", action_id "answer"): its
//     block_actions payload arrives on /hooks/slack/interactions.
//   - Linear: any new comment on the ticket from a workspace member (not an
//     integration, not the agent user), without the trigger.
//
// Either becomes a task.answer event on the task, which resumes the
// agent's session with the answer as its prompt (only while the task
// still waits: later answers are dropped).

// slackAnswerPrefix starts the block_id of a task message's reply box.
const slackAnswerPrefix = "answer:"

// githubAnswer turns a comment that starts no work into an answer when its
// issue or pull request has a task waiting for one. ok is false when the
// comment is no answer (no waiting task, not a new comment). p is the
// delivery as decodeGitHub decoded it (nil when it did not).
func (h *Handler) githubAnswer(ctx context.Context, event string, p *ghPayload) (n normalized, ok bool, err error) {
	if h.cfg.Waiting == nil || p == nil || (event != "issue_comment" && event != "pull_request_review_comment") {
		return normalized{}, false, nil
	}
	if p.Action != "created" || p.Comment == nil || p.Comment.ID == 0 || p.Repository == nil || strings.TrimSpace(p.Comment.Body) == "" {
		return normalized{}, false, nil
	}
	owner, name, repo, valid := githubRepo(h.forge, p.Repository.FullName)
	if !valid {
		return normalized{}, false, nil
	}
	var target orchestrator.Target
	switch {
	case event == "pull_request_review_comment" && p.PullRequest != nil:
		target = orchestrator.Target{Type: "pull_request", Number: p.PullRequest.Number}
	case p.Issue != nil && p.Issue.Number != 0:
		target = orchestrator.Target{Type: "issue", Number: p.Issue.Number}
		if p.Issue.PullRequest != nil {
			target.Type = "pull_request"
		}
	default:
		return normalized{}, false, nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	taskID, err := h.cfg.Waiting(ctx, repo, target)
	if errors.Is(err, orchestrator.ErrNotFound) || (err == nil && taskID == "") {
		return normalized{}, false, nil
	}
	if err != nil {
		return normalized{}, false, errors.Join(ErrUnavailable, fmt.Errorf("look up a task waiting for an answer: %w", err))
	}
	actor := ghActor(p.Comment.User, p.Comment.AuthorAssociation)
	ref, err := h.authz.comment(ctx, owner, name, actor)
	if err != nil {
		return normalized{}, false, errors.Join(ErrUnavailable, err)
	}
	if ref != nil {
		return ignored("not an answer to task %s: %s", taskID, ref.reason), true, nil
	}
	ev := &orchestrator.Event{
		Source:         orchestrator.SourceGitHub,
		Kind:           orchestrator.KindTaskAnswer,
		Repo:           repo,
		Target:         orchestrator.Target{Type: "task", ID: taskID, URL: p.Comment.HTMLURL, CommentID: p.Comment.ID},
		Actor:          actor,
		Instruction:    strings.TrimSpace(p.Comment.Body),
		IdempotencyKey: "github:answer:" + strconv.FormatInt(p.Comment.ID, 10),
		RawEvent:       event,
	}
	return normalized{ev: ev, owner: owner, name: name, rawIsJSON: true}, true, nil
}

// slackAnswer is the answer typed into a task message's reply box, or ok
// false when the interaction is something else.
func slackAnswer(p *slackInteraction) (n normalized, ok bool) {
	if p.Type != "block_actions" || len(p.Actions) == 0 {
		return normalized{}, false
	}
	a := p.Actions[0]
	taskID, isAnswer := strings.CutPrefix(a.BlockID, slackAnswerPrefix)
	if !isAnswer || strings.TrimPrefix(a.ActionID, "nightshift_") != "answer" {
		return normalized{}, false
	}
	if taskID == "" || strings.TrimSpace(a.Value) == "" {
		return ignored("slack answer without a task or text"), true
	}
	ev := &orchestrator.Event{
		Kind:           orchestrator.KindTaskAnswer,
		Target:         orchestrator.Target{Type: "task", ID: taskID},
		Actor:          orchestrator.Actor{Login: p.User.ID, Name: firstNonEmpty(p.User.Username, p.User.Name)},
		Instruction:    strings.TrimSpace(a.Value),
		IdempotencyKey: fmt.Sprintf("slack:answer:%s:%s", taskID, firstNonEmpty(a.ActionTS, p.TriggerID)),
		RawEvent:       p.Type,
	}
	return normalized{ev: ev, rawIsJSON: true}, true
}

// linearAnswer turns a Linear comment that starts no work (no mention of
// the trigger) into an answer when its ticket has a task waiting for one.
// Linear signs its webhooks per workspace: any member's comment answers,
// never an integration's or the agent user's own.
func (h *Handler) linearAnswer(ctx context.Context, p *linPayload, opt linearOptions) (n normalized, ok bool, err error) {
	d := p.Data
	if h.cfg.Waiting == nil || p.Type != "Comment" || p.Action != "create" || d == nil || d.ID == "" || d.BotActor != nil ||
		strings.TrimSpace(d.Body) == "" {
		return normalized{}, false, nil
	}
	actor := linActor(p.Actor, d.User)
	if actor.IsBot || (opt.AgentUser != "" && (actor.Login == opt.AgentUser || strings.EqualFold(actor.Name, opt.AgentUser) || d.UserID == opt.AgentUser)) {
		return normalized{}, false, nil
	}
	ident := identifierFromURL(p.URL)
	issueID := d.IssueID
	if d.Issue != nil {
		issueID = firstNonEmpty(issueID, d.Issue.ID)
	}
	repo := linearRepo(opt, nil, ident)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	taskID, err := h.cfg.Waiting(ctx, repo, orchestrator.Target{Type: "ticket", ID: firstNonEmpty(ident, issueID)})
	if errors.Is(err, orchestrator.ErrNotFound) || (err == nil && taskID == "") {
		return normalized{}, false, nil
	}
	if err != nil {
		return normalized{}, false, errors.Join(ErrUnavailable, fmt.Errorf("look up a task waiting for an answer: %w", err))
	}
	ev := &orchestrator.Event{
		Kind:           orchestrator.KindTaskAnswer,
		Repo:           repo,
		Target:         orchestrator.Target{Type: "task", ID: taskID, URL: p.URL},
		Actor:          actor,
		Instruction:    strings.TrimSpace(d.Body),
		IdempotencyKey: "linear:answer:" + d.ID,
		RawEvent:       "Comment." + p.Action,
	}
	return normalized{ev: ev, rawIsJSON: true}, true, nil
}
