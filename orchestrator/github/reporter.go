package github

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	gh "github.com/google/go-github/v60/github"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/notify"
)

// Reporter reports a task's life on the GitHub issue or pull request it
// came from: a 👀 reaction on the triggering comment when the task is
// accepted, and one progress comment per task (found again through its
// hidden marker) updated in place up to the final state with the pull
// request link. It also answers refused triggers (webhook.Replier).
type Reporter struct {
	c     *Client
	store *notify.Store
}

var _ orchestrator.Notifier = (*Reporter)(nil)

// NewReporter returns a Reporter keeping its state in store.
func NewReporter(c *Client, store *notify.Store) (*Reporter, error) {
	if c == nil || store == nil {
		return nil, errors.New("github: NewReporter needs a client and a store")
	}
	return &Reporter{c: c, store: store}, nil
}

// Report channels in the report state store.
// maxQuote bounds an answer or question quoted in a comment (GitHub takes
// at most 65536 characters).
const maxQuote = 60000

const (
	channelReaction = "github.reaction"
	channelComment  = "github.comment"
	channelQuestion = "github.question"
)

// Notify implements orchestrator.Notifier. Tasks that did not come from a
// GitHub issue or pull request are ignored.
func (rp *Reporter) Notify(ctx context.Context, t orchestrator.Task) error {
	r, ok := rp.c.RepoOf(t.Repo)
	if !ok || t.Source != orchestrator.SourceGitHub || t.Target.Number == 0 {
		return nil
	}
	ctx, cancel := notify.WithTimeout(ctx)
	defer cancel()
	perms := permsFor(t.Target)
	var errs []error
	if id := t.Target.CommentID; id != 0 {
		_, err := rp.store.Sync(ctx, notify.Message{TaskID: t.ID, Channel: channelReaction, State: "eyes", Text: "eyes"}, notify.Remote{
			Create: func(ctx context.Context) (string, error) {
				api, err := rp.c.apiFor(ctx, r, perms)
				if err != nil {
					return "", err
				}
				var re *gh.Reaction
				if strings.Contains(t.Target.URL, "#discussion_r") {
					re, _, err = api.Reactions.CreatePullRequestCommentReaction(ctx, r.Owner, r.Name, id, "eyes")
				} else {
					re, _, err = api.Reactions.CreateIssueCommentReaction(ctx, r.Owner, r.Name, id, "eyes")
				}
				if err != nil {
					return "", wrap(fmt.Sprintf("react to comment %d", id), r, err)
				}
				return strconv.FormatInt(re.GetID(), 10), nil
			},
			Update: func(context.Context, string) error { return nil },
		})
		errs = append(errs, err)
	}
	body := rp.render(t)
	_, err := rp.store.Sync(ctx, notify.Message{TaskID: t.ID, Channel: channelComment, State: string(t.State), Text: body, At: t.UpdatedAt}, notify.Remote{
		Create: func(ctx context.Context) (string, error) {
			return rp.createComment(ctx, r, perms, t.Target.Number, body, "comment")
		},
		Update: func(ctx context.Context, id string) error {
			api, err := rp.c.apiFor(ctx, r, perms)
			if err != nil {
				return err
			}
			n, _ := strconv.ParseInt(id, 10, 64)
			if _, _, err := api.Issues.EditComment(ctx, r.Owner, r.Name, n, &gh.IssueComment{Body: &body}); err != nil {
				return wrap(fmt.Sprintf("update comment %d on #%d", n, t.Target.Number), r, err)
			}
			return nil
		},
		Find: func(ctx context.Context) (string, error) { return rp.find(ctx, r, t, perms) },
	})
	errs = append(errs, err)
	if t.State == orchestrator.StateNeedsInput && t.Question != "" {
		errs = append(errs, rp.ask(ctx, r, t, perms))
	}
	return errors.Join(errs...)
}

// createComment adds a comment to issue or pull request number and
// returns its id; what names the action in errors ("comment", "ask").
func (rp *Reporter) createComment(ctx context.Context, r Repo, perms Permissions, number int, body, what string) (string, error) {
	api, err := rp.c.apiFor(ctx, r, perms)
	if err != nil {
		return "", err
	}
	c, _, err := api.Issues.CreateComment(ctx, r.Owner, r.Name, number, &gh.IssueComment{Body: &body})
	if err != nil {
		return "", wrap(fmt.Sprintf("%s on #%d", what, number), r, err)
	}
	return strconv.FormatInt(c.GetID(), 10), nil
}

// ask posts the agent's question as a new comment (once per run, so the
// people on the issue are notified): the first reply from someone with
// write access resumes the agent with it.
func (rp *Reporter) ask(ctx context.Context, r Repo, t orchestrator.Task, perms Permissions) error {
	var b strings.Builder
	fmt.Fprintf(&b, "❓ **Nightshift** task `%s` asks:\n\n", orchestrator.ShortID(t.ID))
	b.WriteString(notify.Quote(t.Question, maxQuote) + "\n\n")
	b.WriteString("Reply on this thread to answer (no need to mention Nightshift): the first reply from someone with write access resumes the agent.\n")
	if t.Actor.Login != "" {
		fmt.Fprintf(&b, "\ncc @%s\n", t.Actor.Login)
	}
	body := rp.c.cfg.Redact(b.String()) + "\n<!-- nightshift:question:" + t.ID + " -->"
	_, err := rp.store.Sync(ctx, notify.Message{TaskID: t.ID, Channel: fmt.Sprintf("%s.%d", channelQuestion, t.Run), State: string(t.State), Text: body, At: t.UpdatedAt}, notify.Remote{
		Create: func(ctx context.Context) (string, error) {
			return rp.createComment(ctx, r, perms, t.Target.Number, body, "ask")
		},
		Update: func(context.Context, string) error { return nil },
	})
	return err
}

// permsFor is what commenting on target needs: issues:write on issues,
// pull_requests:write on pull requests.
func permsFor(t orchestrator.Target) Permissions {
	if t.Type == "pull_request" {
		return Permissions{"pull_requests": "write"}
	}
	return Permissions{"issues": "write"}
}

// find looks for the task's progress comment by its marker.
func (rp *Reporter) find(ctx context.Context, r Repo, t orchestrator.Task, perms Permissions) (string, error) {
	api, err := rp.c.apiFor(ctx, r, perms)
	if err != nil {
		return "", err
	}
	mark := Marker(t.ID)
	opts := &gh.IssueListCommentsOptions{ListOptions: gh.ListOptions{PerPage: 100}}
	for page := 0; page < 20; page++ {
		cs, resp, err := api.Issues.ListComments(ctx, r.Owner, r.Name, t.Target.Number, opts)
		if err != nil {
			return "", wrap(fmt.Sprintf("list comments of #%d", t.Target.Number), r, err)
		}
		for _, c := range cs {
			if strings.Contains(c.GetBody(), mark) {
				return strconv.FormatInt(c.GetID(), 10), nil
			}
		}
		if resp.NextPage == 0 {
			break
		}
		opts.Page = resp.NextPage
	}
	return "", nil
}

// render is the progress comment of t.
func (rp *Reporter) render(t orchestrator.Task) string {
	st := notify.StatusOf(t)
	task := "`" + orchestrator.ShortID(t.ID) + "`"
	if u := rp.c.TaskURL(t.ID); u != "" {
		task = "[" + task + "](" + u + ")"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s **Nightshift** task %s is **%s**", st.Emoji, task, st.Phrase)
	if t.Run > 1 {
		fmt.Fprintf(&b, " (run %d)", t.Run)
	}
	b.WriteString(".\n")
	if t.Answer != "" {
		fmt.Fprintf(&b, "\n%s\n", notify.Quote(t.Answer, maxQuote))
	}
	switch t.State {
	case orchestrator.StateReview, orchestrator.StateDone:
		if t.PRURL != "" {
			fmt.Fprintf(&b, "\nPull request: %s\n", t.PRURL)
		} else if t.Review != "" {
			fmt.Fprintf(&b, "\nPushed: `%s`\n", t.Review)
		}
		if t.Diff.Files > 0 {
			fmt.Fprintf(&b, "\n%d files changed, +%d −%d\n", t.Diff.Files, t.Diff.Added, t.Diff.Deleted)
		}
	case orchestrator.StateFailed:
		if t.Error != "" {
			fmt.Fprintf(&b, "\n> %s\n", notify.Clip(t.Error, 500))
		}
		b.WriteString("\nComment again to retry with more guidance.\n")
	case orchestrator.StateNeedsInput:
		if t.Question != "" {
			fmt.Fprintf(&b, "\nThe agent asks:\n\n%s\n\nReply on this thread to answer.\n", notify.Quote(t.Question, maxQuote))
		}
	case orchestrator.StateQueued:
		if t.Position > 0 {
			fmt.Fprintf(&b, "\nPosition in the queue: %d\n", t.Position)
		}
	}
	return rp.c.cfg.Redact(b.String()) + "\n" + Marker(t.ID)
}

// Reply answers a refused trigger with a short comment on its issue or pull
// request, mentioning the author (it implements webhook.Replier).
func (rp *Reporter) Reply(ctx context.Context, ev *orchestrator.Event, message string) error {
	r, ok := rp.c.RepoOf(ev.Repo)
	if !ok || ev.Target.Number == 0 {
		return fmt.Errorf("github: reply to event %s: no issue or pull request to comment on", ev.ID)
	}
	if ev.Actor.Login != "" {
		message = "@" + ev.Actor.Login + " " + message
	}
	message = rp.c.cfg.Redact(message)
	api, err := rp.c.apiFor(ctx, r, permsFor(ev.Target))
	if err != nil {
		return err
	}
	if _, _, err := api.Issues.CreateComment(ctx, r.Owner, r.Name, ev.Target.Number, &gh.IssueComment{Body: &message}); err != nil {
		return wrap(fmt.Sprintf("reply on #%d", ev.Target.Number), r, err)
	}
	return nil
}
