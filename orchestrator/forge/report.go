package forge

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/notify"
)

// Reporter reports a task's life on the issue or change request it came
// from, on the forge of its repository: a 👀 reaction on the triggering
// comment when the task is accepted, and one progress comment per task
// (found again through its hidden marker after a crash) updated in place
// up to the final state with the change request link. It asks the agent's
// questions in a new comment (once per run) and answers refused triggers.
// It implements orchestrator.Notifier; what it posted is remembered in a
// notify.Store, so a redelivered change posts nothing new.
type Reporter struct {
	reg   *Registry
	store *notify.Store
	opts  Options
}

var _ orchestrator.Notifier = (*Reporter)(nil)

// NewReporter returns a Reporter over reg keeping its state in store.
func NewReporter(reg *Registry, store *notify.Store, opts Options) (*Reporter, error) {
	if store == nil {
		return nil, errors.New("forge: NewReporter needs a store")
	}
	return &Reporter{reg: reg, store: store, opts: opts.withDefaults()}, nil
}

// maxQuote bounds an answer or question quoted in a comment.
const maxQuote = 60000

// Report channels in the notify store are "<kind>.reaction",
// "<kind>.comment" and "<kind>.question.<run>" (github.comment, ...).
func channel(k Kind, what string) string { return string(k) + "." + what }

// threadOf is the thread of an issue or change request target.
func threadOf(r Repo, t orchestrator.Target) Thread {
	k := ThreadIssue
	if t.Type == "pull_request" {
		k = ThreadChange
	}
	return Thread{Repo: r, Kind: k, Number: t.Number}
}

// Notify implements orchestrator.Notifier. Tasks that did not come from an
// issue or change request of a registered forge are ignored.
func (rp *Reporter) Notify(ctx context.Context, t orchestrator.Task) error {
	d, r, ok := rp.reg.ForRepo(t.Repo)
	if !ok || string(t.Source) != string(d.Kind()) || t.Target.Number == 0 {
		return nil
	}
	ctx, cancel := notify.WithTimeout(ctx)
	defer cancel()
	th := threadOf(r, t.Target)
	var errs []error
	if id := t.Target.CommentID; id != 0 {
		_, err := rp.store.Sync(ctx, notify.Message{TaskID: t.ID, Channel: channel(d.Kind(), "reaction"), State: ReactionEyes, Text: ReactionEyes}, notify.Remote{
			Create: func(ctx context.Context) (string, error) {
				if err := d.React(ctx, CommentRef{Thread: th, ID: id, URL: t.Target.URL}, ReactionEyes); err != nil {
					return "", err
				}
				return ReactionEyes, nil
			},
			Update: func(context.Context, string) error { return nil },
		})
		errs = append(errs, err)
	}
	body := rp.render(d, t)
	_, err := rp.store.Sync(ctx, notify.Message{TaskID: t.ID, Channel: channel(d.Kind(), "comment"), State: string(t.State), Text: body, At: t.UpdatedAt}, notify.Remote{
		Create: func(ctx context.Context) (string, error) {
			id, err := d.Comment(ctx, th, body)
			return strconv.FormatInt(id, 10), err
		},
		Update: func(ctx context.Context, id string) error {
			n, err := strconv.ParseInt(id, 10, 64)
			if err != nil {
				return fmt.Errorf("forge: stored comment id %q: %w", id, err)
			}
			return d.EditComment(ctx, th, n, body)
		},
		Find: func(ctx context.Context) (string, error) {
			id, err := d.FindComment(ctx, th, Marker(t.ID))
			if err != nil || id == 0 {
				return "", err
			}
			return strconv.FormatInt(id, 10), nil
		},
	})
	errs = append(errs, err)
	if t.State == orchestrator.StateNeedsInput && t.Question != "" {
		errs = append(errs, rp.ask(ctx, d, th, t))
	}
	return errors.Join(errs...)
}

// ask posts the agent's question as a new comment (once per run, so the
// people on the thread are notified): the first reply from someone with
// write access resumes the agent with it.
func (rp *Reporter) ask(ctx context.Context, d Driver, th Thread, t orchestrator.Task) error {
	var b strings.Builder
	fmt.Fprintf(&b, "❓ **Nightshift** task `%s` asks:\n\n", orchestrator.ShortID(t.ID))
	b.WriteString(notify.Quote(t.Question, maxQuote) + "\n\n")
	b.WriteString("Reply on this thread to answer (no need to mention Nightshift): the first reply from someone with write access resumes the agent.\n")
	if t.Actor.Login != "" {
		fmt.Fprintf(&b, "\ncc @%s\n", t.Actor.Login)
	}
	body := rp.opts.Redact(b.String()) + "\n<!-- nightshift:question:" + t.ID + " -->"
	_, err := rp.store.Sync(ctx, notify.Message{TaskID: t.ID, Channel: fmt.Sprintf("%s.%d", channel(d.Kind(), "question"), t.Run), State: string(t.State), Text: body, At: t.UpdatedAt}, notify.Remote{
		Create: func(ctx context.Context) (string, error) {
			id, err := d.Comment(ctx, th, body)
			return strconv.FormatInt(id, 10), err
		},
		Update: func(context.Context, string) error { return nil },
	})
	return err
}

// render is the progress comment of t.
func (rp *Reporter) render(d Driver, t orchestrator.Task) string {
	st := notify.StatusOf(t)
	task := "`" + orchestrator.ShortID(t.ID) + "`"
	if u := rp.opts.taskURL(t.ID); u != "" {
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
			fmt.Fprintf(&b, "\n%s: %s\n", changeNoun(d.Kind()), t.PRURL)
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
	return rp.opts.Redact(b.String()) + "\n" + Marker(t.ID)
}

// Reply answers a refused trigger with a short comment on its issue or
// change request, mentioning the author (it implements webhook.Replier).
func (rp *Reporter) Reply(ctx context.Context, ev *orchestrator.Event, message string) error {
	d, r, ok := rp.reg.ForRepo(ev.Repo)
	if !ok || ev.Target.Number == 0 {
		return fmt.Errorf("forge: reply to event %s: no issue or change request to comment on", ev.ID)
	}
	if ev.Actor.Login != "" {
		message = "@" + ev.Actor.Login + " " + message
	}
	_, err := d.Comment(ctx, threadOf(r, ev.Target), rp.opts.Redact(message))
	return err
}
