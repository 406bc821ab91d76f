package orchestrator

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"slices"
	"strings"
	"time"
)

// Task is one unit of agent work, as stored and as the API shows it.
type Task struct {
	ID         string       `json:"id"`
	State      State        `json:"state"`
	Repo       string       `json:"repo"`
	Base       string       `json:"base"`
	BaseCommit string       `json:"base_commit,omitempty"`
	Branch     string       `json:"branch"`
	Agent      string       `json:"agent"`
	Prompt     string       `json:"prompt"`
	Source     Source       `json:"source"`
	Kind       string       `json:"kind"`
	TargetKey  string       `json:"target_key,omitempty"`
	Target     Target       `json:"target"`
	Actor      Actor        `json:"actor"`
	Identity   TaskIdentity `json:"identity"`
	Commit     string       `json:"commit"`
	PRURL      string       `json:"pr_url"`
	// Review says where the result can be reviewed: the PR URL, or for a
	// local origin the pushed branch ("<repo>#nightshift/<id>").
	Review    string    `json:"review,omitempty"`
	Error     string    `json:"error"`
	Reason    string    `json:"reason,omitempty"`
	Question  string    `json:"question,omitempty"`
	Answer    string    `json:"answer,omitempty"` // final answer of a run that changed nothing
	SessionID string    `json:"session_id,omitempty"`
	Usage     Usage     `json:"usage"`
	Run       int       `json:"run"`
	Diff      DiffStat  `json:"diff"`
	Position  int       `json:"position,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// IdempotencyKey is the business key the task was created for.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// Mode is what the task's runs may do: change (the default: edit,
	// commit, push), plan (look read-only, propose a plan, wait for its
	// approval, then change) or answer (look read-only, answer, done).
	Mode string `json:"mode,omitempty"`
	// Plan is the plan a plan run proposed; PlanApproved is set once a
	// person approved it (the next run makes the change).
	Plan         string `json:"plan,omitempty"`
	PlanApproved bool   `json:"plan_approved,omitempty"`
	// Respond is "silent" when nothing is reported where the task came
	// from (an automation's choice); "" or "reply" reports.
	Respond string `json:"respond,omitempty"`
	// Automation names the automation that started the task, if one did.
	Automation string `json:"automation,omitempty"`
	// SecretScopes, when set (by an automation), are the only vault
	// scopes the task's runs may be granted.
	SecretScopes []string `json:"secret_scopes,omitempty"`
	// BudgetTokens and BudgetCostUSD, when set (by an automation), bound
	// each run's model usage (the tighter of these and the repo's budget).
	BudgetTokens  int64   `json:"budget_tokens,omitempty"`
	BudgetCostUSD float64 `json:"budget_cost_usd,omitempty"`
}

// NarrowScopes keeps, of the scopes a task's lookups ask for, those t may
// be granted: the ones its SecretScopes name, and the repository's when
// they name a repo: pattern (the stored scope a secret is then found in is
// checked with ScopeAllowed).
func (t Task) NarrowScopes(scopes []string) []string {
	if len(t.SecretScopes) == 0 {
		return scopes
	}
	allowed, repo := map[string]bool{}, false
	for _, s := range t.SecretScopes {
		allowed[s] = true
		repo = repo || strings.HasPrefix(s, "repo:")
	}
	var out []string
	for _, s := range scopes {
		if allowed[s] || repo && strings.HasPrefix(s, "repo:") {
			out = append(out, s)
		}
	}
	return out
}

// ScopeAllowed reports whether t may be given a secret stored in scope
// (e.g. "repo:github.com/acme/*", exactly as its SecretScopes name it).
func (t Task) ScopeAllowed(scope string) bool {
	return len(t.SecretScopes) == 0 || slices.Contains(t.SecretScopes, scope)
}

// Task modes.
const (
	ModeChange = "change"
	ModePlan   = "plan"
	ModeAnswer = "answer"
)

// RunMode is the mode of t's next run: a plan task plans until its plan is
// approved, then changes.
func (t Task) RunMode() string {
	switch {
	case t.Mode == ModePlan && t.PlanApproved:
		return ModeChange
	case t.Mode == ModePlan, t.Mode == ModeAnswer:
		return t.Mode
	}
	return ModeChange
}

// TaskIdentity is the per-task agent identity as shown on a task.
type TaskIdentity struct {
	ID    string `json:"id,omitempty"`
	Name  string `json:"name"`
	Email string `json:"email"`
	Phone string `json:"phone,omitempty"`
}

// Usage is what the agent consumed from the model.
type Usage struct {
	InputTokens  int64   `json:"input_tokens"`
	OutputTokens int64   `json:"output_tokens"`
	CostUSD      float64 `json:"cost_usd"`
}

// DiffStat summarizes a task's change against its base.
type DiffStat struct {
	Files   int `json:"files"`
	Added   int `json:"added"`
	Deleted int `json:"deleted"`
}

// Transition is one stored state change.
type Transition struct {
	From   State     `json:"from"`
	To     State     `json:"to"`
	Reason string    `json:"reason,omitempty"`
	Run    int       `json:"run"`
	At     time.Time `json:"at"`
}

// Message is a follow-up instruction for a task.
type Message struct {
	ID    int64  `json:"id"`
	Text  string `json:"text"`
	Actor string `json:"actor,omitempty"`
	// Kind is the kind of the event the message came from (ci.failed,
	// pr.feedback, comment.command, task.message, ...).
	Kind      string    `json:"kind,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

var idEncoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// NewID returns a random 16-character identifier (80 bits). Its first 8
// characters are random too, so short ids of concurrent tasks differ.
func NewID() string {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return idEncoding.EncodeToString(b[:])
}

// IDFromKey derives a task id from an idempotency key, for callers that must
// name the task before the scheduler has stored it.
func IDFromKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return idEncoding.EncodeToString(sum[:10])
}

// ShortID returns the first 8 characters of a task id.
func ShortID(id string) string {
	if len(id) > 8 {
		return strings.ToLower(id[:8])
	}
	return strings.ToLower(id)
}

// BranchName returns the branch a task's work is pushed to.
func BranchName(id string) string { return "nightshift/" + id }
