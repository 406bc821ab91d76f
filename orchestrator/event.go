package orchestrator

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Source names where an event came from.
type Source string

// Event sources.
const (
	SourceGitHub Source = "github"
	SourceLinear Source = "linear"
	SourceSlack  Source = "slack"
	SourceAPI    Source = "api"
	// SourceAutomation is a run an automation started on its own (a
	// schedule tick, a manual run, or a silent event-triggered run).
	SourceAutomation Source = "automation"
)

// Event kinds. Kinds are dotted, lower case, and become the last tokens of the
// event subject.
const (
	KindComment        = "comment.command"
	KindIssueLabeled   = "issue.labeled"
	KindCIFailed       = "ci.failed"
	KindTicketAssigned = "ticket.assigned"
	KindTicketComment  = "ticket.comment"
	KindSlackCommand   = "slack.command"
	KindSlackAction    = "slack.action"
	KindTaskRequested  = "task.requested"
	KindTaskCancel     = "task.cancel"
	KindTaskRetry      = "task.retry"
	KindTaskMessage    = "task.message"
	// KindPRFeedback is a review, review comment or comment on a pull
	// request: a follow-up of the task that owns the pull request.
	KindPRFeedback = "pr.feedback"
	// KindPRMerged and KindPRClosed end the task that owns the pull request
	// (done, cancelled).
	KindPRMerged = "pr.merged"
	KindPRClosed = "pr.closed"
)

// Event is a normalized trigger: whatever arrived (a webhook, a slash command,
// an API call) in the one shape the scheduler understands. It is published on
// EventSubject(source, kind) with Nats-Msg-Id set to DeliveryID.
type Event struct {
	ID             string    `json:"id"`
	Source         Source    `json:"source"`
	Kind           string    `json:"kind"`
	Repo           string    `json:"repo"`
	Target         Target    `json:"target"`
	Actor          Actor     `json:"actor"`
	Instruction    string    `json:"instruction"`
	DeliveryID     string    `json:"delivery_id"`
	IdempotencyKey string    `json:"idempotency_key"`
	ReceivedAt     time.Time `json:"received_at"`

	// TaskID, when set, is the id the created task takes (API dispatch
	// answers with it before the scheduler has consumed the event).
	TaskID string `json:"task_id,omitempty"`
	// Agent, when set, names the agent to run (API dispatch may choose one).
	Agent string `json:"agent,omitempty"`
	// Branch, when set, is the base branch or SHA the work starts from.
	Branch string `json:"branch,omitempty"`
	// FromBase, on a retry, starts the new run from the task's base
	// instead of its current branch (whose commits it then replaces).
	FromBase bool `json:"from_base,omitempty"`
	// Attempt counts CI-failure attempts on the same pull request.
	Attempt int `json:"attempt,omitempty"`
	// Raw keeps the original payload so the event can be normalized again.
	Raw json.RawMessage `json:"raw,omitempty"`
	// RawEvent names the original event type (e.g. X-GitHub-Event).
	RawEvent string `json:"raw_event,omitempty"`
	// Mode, when set, is the mode of the task the event creates (change,
	// plan, answer); an automation's mode is in Automation.
	Mode string `json:"mode,omitempty"`
	// Automation, when set, is the automation run this event starts; the
	// task carries it (mode, reply policy, run budget, secret scopes).
	Automation *AutomationRun `json:"automation,omitempty"`
}

// AutomationRun says which automation started a run and what the run may
// do. Mode and Respond are the automation's (change|plan|answer,
// reply|silent); zero budget limits are unlimited; empty SecretScopes
// leaves the task's usual grants.
type AutomationRun struct {
	Name          string   `json:"name"`
	RunID         string   `json:"run_id"`
	Mode          string   `json:"mode,omitempty"`
	Respond       string   `json:"respond,omitempty"`
	BudgetTokens  int64    `json:"budget_tokens,omitempty"`
	BudgetCostUSD float64  `json:"budget_cost_usd,omitempty"`
	SecretScopes  []string `json:"secret_scopes,omitempty"`
}

// Encode is json.Marshal(ev) without re-validating ev.Raw, which must be
// valid JSON; for large webhook payloads it is the cheaper encoding by far.
func (ev *Event) Encode() ([]byte, error) {
	raw := ev.Raw
	cp := *ev
	cp.Raw = nil
	data, err := json.Marshal(&cp)
	if err != nil || len(raw) == 0 {
		return data, err
	}
	out := make([]byte, 0, len(data)+len(raw)+8)
	out = append(out, data[:len(data)-1]...)
	out = append(out, `,"raw":`...)
	out = append(out, raw...)
	return append(out, '}'), nil
}

// Target is what an event is about: an issue, pull request, ticket, branch or
// commit. Fields that do not apply stay empty.
type Target struct {
	Type       string `json:"type,omitempty"` // issue, pull_request, ticket, commit, branch
	Number     int    `json:"number,omitempty"`
	ID         string `json:"id,omitempty"` // ticket identifier (ENG-12), comment id, ...
	URL        string `json:"url,omitempty"`
	Branch     string `json:"branch,omitempty"`
	HeadSHA    string `json:"head_sha,omitempty"`
	CommentID  int64  `json:"comment_id,omitempty"`
	Check      string `json:"check,omitempty"` // failing check or workflow name
	HeadRepo   string `json:"head_repo,omitempty"`
	BaseBranch string `json:"base_branch,omitempty"`
}

// Key returns a stable identifier of the target within its repository, used
// to keep one active task per target. It is empty when the event has no
// target (a plain API dispatch).
func (t Target) Key() string {
	switch {
	case t.Type == "" && t.Number == 0 && t.ID == "" && t.Branch == "":
		return ""
	case t.Number != 0:
		return fmt.Sprintf("%s#%d", t.Type, t.Number)
	case t.ID != "":
		return t.Type + ":" + t.ID
	default:
		return t.Type + "@" + t.Branch
	}
}

// Actor is who caused an event.
type Actor struct {
	Login       string `json:"login,omitempty"`
	Name        string `json:"name,omitempty"`
	Email       string `json:"email,omitempty"`
	Association string `json:"association,omitempty"`
	IsBot       bool   `json:"is_bot,omitempty"`
}

// Subject and stream names.
const (
	// EventsStream holds normalized events (nightshift.events.>).
	EventsStream = "NIGHTSHIFT_EVENTS"
	// WorkStream is the work queue of task runs (nightshift.work.>).
	WorkStream = "NIGHTSHIFT_WORK"
	// TasksStream holds every task's states, logs and diffs (nightshift.tasks.>).
	TasksStream = "NIGHTSHIFT_TASKS"
	// CancelBucket is the KV bucket of cancelled task ids.
	CancelBucket = "nightshift_cancel"

	eventsPrefix   = "nightshift.events."
	workPrefix     = "nightshift.work."
	StatesWildcard = "nightshift.tasks.*.state"
	controlPrefix  = "nightshift.control."
)

// EventSubject returns the subject an event of source and kind is published on.
func EventSubject(source Source, kind string) string {
	return eventsPrefix + string(source) + "." + sanitizeToken(kind)
}

// StateSubject returns the subject on which task id's state changes are published.
func StateSubject(id string) string { return "nightshift.tasks." + id + ".state" }

// LogSubject returns the subject on which task id's log lines are published.
func LogSubject(id string) string { return "nightshift.tasks." + id + ".log" }

// WorkSubject returns the work-queue subject for task id.
func WorkSubject(id string) string { return workPrefix + id }

// DiffSubject returns the subject on which task id's diff is published.
func DiffSubject(id string) string { return "nightshift.tasks." + id + ".diff" }

// TaskSubjects returns the wildcard covering every message about task id.
func TaskSubjects(id string) string { return "nightshift.tasks." + id + ".>" }

// ControlSubject returns the subject carrying control messages (cancel) for task id.
func ControlSubject(id string) string { return controlPrefix + id }

func sanitizeToken(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '.', r == '-', r == '_', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, s)
}
