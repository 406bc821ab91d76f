package notify

import (
	"context"
	"strings"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
)

// Timeout bounds one Notify call whose context has no deadline: reports run
// on the scheduler's path, so a hung API must not stall it.
const Timeout = 20 * time.Second

// WithTimeout returns ctx bounded by Timeout when it has no deadline.
func WithTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, Timeout)
}

// Status is how a task's state reads to people.
type Status struct {
	Emoji  string
	Phrase string
}

// StatusOf describes t's state.
func StatusOf(t orchestrator.Task) Status {
	switch t.State {
	case orchestrator.StateQueued:
		return Status{"⏳", "queued"}
	case orchestrator.StateProvisioning:
		return Status{"🛠️", "setting up"}
	case orchestrator.StateRunning:
		return Status{"🤖", "working"}
	case orchestrator.StateTesting:
		return Status{"🧪", "running the tests"}
	case orchestrator.StatePushing:
		return Status{"📤", "pushing"}
	case orchestrator.StateReview:
		return Status{"✅", "ready for review"}
	case orchestrator.StateDone:
		if t.Reason == "merged" {
			return Status{"🎉", "done: the pull request was merged"}
		}
		return Status{"🎉", "done"}
	case orchestrator.StateNeedsInput:
		return Status{"❓", "needs input"}
	case orchestrator.StateFailed:
		return Status{"❌", "failed"}
	case orchestrator.StateCancelled:
		if t.Reason == "pull request closed" {
			return Status{"🚫", "cancelled: the pull request was closed"}
		}
		return Status{"🚫", "cancelled"}
	}
	return Status{"•", string(t.State)}
}

// RepoName is a short name for a task's repository: owner/name for URLs,
// the last path element for local paths.
func RepoName(repo string) string {
	s := strings.TrimSuffix(strings.TrimSuffix(repo, "/"), ".git")
	parts := strings.Split(s, "/")
	if len(parts) >= 2 && strings.Contains(repo, "://") {
		return parts[len(parts)-2] + "/" + parts[len(parts)-1]
	}
	if i := strings.LastIndexAny(s, "/:"); i >= 0 {
		return s[i+1:]
	}
	return s
}

// Clip returns at most n bytes of s's first line.
func Clip(s string, n int) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = strings.TrimSpace(s[:i]) + " …"
	}
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "") + "…"
	}
	return s
}

// TaskURL is PublicURL + "/tasks/" + id, or "" without a public URL.
func TaskURL(publicURL, id string) string {
	if publicURL == "" {
		return ""
	}
	return strings.TrimSuffix(publicURL, "/") + "/tasks/" + id
}

// ClipText returns s, trimmed, cut to at most n bytes (all its lines).
func ClipText(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "") + "…"
	}
	return s
}

// Quote is s (a task's answer or question) as a Markdown block quote of at
// most n bytes of text.
func Quote(s string, n int) string {
	return "> " + strings.ReplaceAll(ClipText(s, n), "\n", "\n> ")
}
