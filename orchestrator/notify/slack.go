package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/nightshift/nightshift/orchestrator"
)

// SlackConfig configures the Slack reporter.
type SlackConfig struct {
	// Token is the bot token (xoxb-...). Required unless TokenFunc is set.
	Token string
	// TokenFunc, when set, returns the bot token at each use (a vault
	// reference resolved at use, so a rotated token is picked up).
	TokenFunc func(ctx context.Context) (string, error)
	// Channel is the channel (id or name) messages go to. Required.
	Channel string
	// APIURL is the Web API base. Default https://slack.com/api/.
	APIURL string
	// PublicURL links tasks on the board. Optional.
	PublicURL string
	// Redact cleans every outbound text. Default: identity.
	Redact func(string) string
	// HTTPClient makes the calls. Default: a client with a 15s timeout.
	HTTPClient *http.Client
	// Logger receives warnings. Default: discard.
	Logger *slog.Logger
}

// LogValue implements slog.LogValuer: the token prints as REDACTED.
func (c SlackConfig) LogValue() slog.Value {
	return slog.GroupValue(slog.String("channel", c.Channel), slog.String("api_url", c.APIURL), slog.String("token", "REDACTED"))
}

// Slack posts one message per task in a channel and updates it through the
// task's life, with Cancel and Retry buttons (action ids "cancel" and
// "retry", value the task id) and, on a plan waiting for review, Approve
// plan ("approve"), that the interactions endpoint acts on.
type Slack struct {
	store *Store
	cfg   SlackConfig
	log   *slog.Logger
}

var _ orchestrator.Notifier = (*Slack)(nil)

// SlackMetadataType is the event type of the metadata on task messages.
const SlackMetadataType = "nightshift_task"

// NewSlack returns a Slack reporter.
func NewSlack(store *Store, cfg SlackConfig) (*Slack, error) {
	switch {
	case store == nil:
		return nil, errors.New("notify: NewSlack needs a store")
	case cfg.Token == "" && cfg.TokenFunc == nil:
		return nil, errors.New("notify: config slack.bot_token is required")
	case cfg.Channel == "":
		return nil, errors.New("notify: config slack.channel is required")
	}
	if cfg.APIURL == "" {
		cfg.APIURL = "https://slack.com/api/"
	}
	if !strings.HasSuffix(cfg.APIURL, "/") {
		cfg.APIURL += "/"
	}
	if cfg.Redact == nil {
		cfg.Redact = func(s string) string { return s }
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 15 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.TokenFunc == nil {
		tok := cfg.Token
		cfg.TokenFunc = func(context.Context) (string, error) { return tok, nil }
	}
	return &Slack{store: store, cfg: cfg, log: cfg.Logger.With("component", "notify.slack")}, nil
}

// Notify implements orchestrator.Notifier.
func (s *Slack) Notify(ctx context.Context, t orchestrator.Task) error {
	ctx, cancel := WithTimeout(ctx)
	defer cancel()
	tok, err := s.cfg.TokenFunc(ctx)
	if err != nil {
		return fmt.Errorf("notify: slack token: %w", err)
	}
	client := slack.New(tok, slack.OptionAPIURL(s.cfg.APIURL), slack.OptionHTTPClient(s.cfg.HTTPClient))
	text, blocks := s.render(t)
	opts := []slack.MsgOption{slack.MsgOptionText(text, false), slack.MsgOptionBlocks(blocks...)}
	bj, _ := json.Marshal(blocks)
	fingerprint := text + "\x00" + string(bj)
	_, err = s.store.Sync(ctx, Message{TaskID: t.ID, Channel: "slack", State: string(t.State), Text: fingerprint, At: t.UpdatedAt}, Remote{
		Create: func(ctx context.Context) (string, error) {
			meta := slack.MsgOptionMetadata(slack.SlackMetadata{EventType: SlackMetadataType, EventPayload: map[string]any{"task_id": t.ID}})
			ch, ts, err := client.PostMessageContext(ctx, s.cfg.Channel, append(opts, meta)...)
			if err != nil {
				return "", fmt.Errorf("notify: slack post for task %s: %w", t.ID, err)
			}
			return ch + "/" + ts, nil
		},
		Update: func(ctx context.Context, id string) error {
			ch, ts, _ := strings.Cut(id, "/")
			if _, _, _, err := client.UpdateMessageContext(ctx, ch, ts, opts...); err != nil {
				return fmt.Errorf("notify: slack update for task %s: %w", t.ID, err)
			}
			return nil
		},
		Find: func(ctx context.Context) (string, error) { return s.find(ctx, client, t) },
	})
	if err == nil && t.State == orchestrator.StateNeedsInput && t.Question != "" {
		err = s.ask(ctx, client, t)
	}
	if err == nil && t.State != orchestrator.StateNeedsInput {
		err = s.closeQuestion(ctx, client, t)
	}
	return err
}

// closeQuestion replaces the reply box of a question the task no longer
// waits on (answered: the next run started; or the task ended) with a
// note, so nobody types an answer that would be ignored.
func (s *Slack) closeQuestion(ctx context.Context, client *slack.Client, t orchestrator.Task) error {
	for _, run := range []int{t.Run - 1, t.Run} {
		channel := fmt.Sprintf("slack.question.%d", run)
		rec, ok, err := s.store.Get(ctx, t.ID, channel)
		if err != nil || !ok || rec.RemoteID == "" || rec.State != string(orchestrator.StateNeedsInput) {
			if err != nil {
				return err
			}
			continue
		}
		text := "✅ Answered: the agent resumed with the answer."
		if run == t.Run {
			text = fmt.Sprintf("The question is closed: the task is %s.", StatusOf(t).Phrase)
		}
		ch, ts, _ := strings.Cut(rec.RemoteID, "/")
		blocks := []slack.Block{slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, text, false, false), nil, nil)}
		_, err = s.store.Sync(ctx, Message{TaskID: t.ID, Channel: channel, State: string(t.State), Text: text, At: t.UpdatedAt}, Remote{
			Create: func(context.Context) (string, error) { return rec.RemoteID, nil },
			Update: func(ctx context.Context, _ string) error {
				if _, _, _, err := client.UpdateMessageContext(ctx, ch, ts, slack.MsgOptionText(text, false), slack.MsgOptionBlocks(blocks...)); err != nil {
					return fmt.Errorf("notify: slack question update for task %s: %w", t.ID, err)
				}
				return nil
			},
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// ask posts the agent's question in the task message's thread, once per
// run, with a reply box (an input block with dispatch_action, block_id
// "answer:<task id>", action_id "answer"): what is typed there arrives as a
// block_actions interaction and resumes the agent with it.
func (s *Slack) ask(ctx context.Context, client *slack.Client, t orchestrator.Task) error {
	parent, ok, err := s.store.Get(ctx, t.ID, "slack")
	if err != nil || !ok || parent.RemoteID == "" {
		return err
	}
	ch, ts, _ := strings.Cut(parent.RemoteID, "/")
	q := s.cfg.Redact(ClipText(t.Question, 2800))
	text := "❓ The agent asks: " + q
	input := slack.NewInputBlock("answer:"+t.ID, slack.NewTextBlockObject(slack.PlainTextType, "Your answer", false, false), nil,
		slack.NewPlainTextInputBlockElement(slack.NewTextBlockObject(slack.PlainTextType, "Type the answer and press Enter", false, false), "answer"))
	input.Element.(*slack.PlainTextInputBlockElement).Multiline = false
	input.DispatchAction = true
	blocks := []slack.Block{
		slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, "❓ *The agent asks*\n"+escape(q), false, false), nil, nil),
		input,
	}
	if b := approveButton(t); b != nil {
		blocks = append(blocks, slack.NewActionBlock("nightshift_plan", b))
	}
	_, err = s.store.Sync(ctx, Message{TaskID: t.ID, Channel: fmt.Sprintf("slack.question.%d", t.Run), State: string(t.State), Text: text, At: t.UpdatedAt}, Remote{
		Create: func(ctx context.Context) (string, error) {
			_, qts, err := client.PostMessageContext(ctx, ch, slack.MsgOptionText(text, false), slack.MsgOptionBlocks(blocks...), slack.MsgOptionTS(ts))
			if err != nil {
				return "", fmt.Errorf("notify: slack question for task %s: %w", t.ID, err)
			}
			return ch + "/" + qts, nil
		},
		Update: func(context.Context, string) error { return nil },
	})
	return err
}

// find looks through the channel's recent history for the task's message
// (by its metadata).
func (s *Slack) find(ctx context.Context, client *slack.Client, t orchestrator.Task) (string, error) {
	oldest := t.CreatedAt.Add(-time.Minute)
	h, err := client.GetConversationHistoryContext(ctx, &slack.GetConversationHistoryParameters{ChannelID: s.cfg.Channel,
		Oldest: fmt.Sprintf("%d.000000", oldest.Unix()), Limit: 200, IncludeAllMetadata: true})
	if err != nil {
		// Without history access (scope, channel name) posting again is the
		// lesser evil than never reporting.
		s.log.Warn("slack history lookup", "task_id", t.ID, "err", err)
		return "", nil
	}
	for _, m := range h.Messages {
		if m.Metadata.EventType == SlackMetadataType && fmt.Sprint(m.Metadata.EventPayload["task_id"]) == t.ID {
			ch := m.Channel
			if ch == "" {
				ch = s.cfg.Channel
			}
			return ch + "/" + m.Timestamp, nil
		}
	}
	return "", nil
}

// render builds the message: a fallback text and Block Kit blocks.
func (s *Slack) render(t orchestrator.Task) (string, []slack.Block) {
	st := StatusOf(t)
	short := orchestrator.ShortID(t.ID)
	repo := RepoName(t.Repo)
	red := s.cfg.Redact
	text := red(fmt.Sprintf("%s Nightshift task %s on %s: %s", st.Emoji, short, repo, st.Phrase))
	title := "Task " + short
	if u := TaskURL(s.cfg.PublicURL, t.ID); u != "" {
		title = "<" + u + "|" + title + ">"
	}
	head := fmt.Sprintf("%s *%s* on `%s` — *%s*", st.Emoji, title, repo, st.Phrase)
	if p := Clip(t.Prompt, 200); p != "" {
		head += "\n> " + escape(p)
	}
	blocks := []slack.Block{slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, red(head), false, false), nil, nil)}
	if t.Answer != "" {
		blocks = append(blocks, slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, red("*Answer*\n"+escape(ClipText(t.Answer, 2900))), false, false), nil, nil))
	}
	var ctxParts []string
	ctxParts = append(ctxParts, "agent `"+t.Agent+"`", "from "+string(t.Source))
	if t.Target.URL != "" {
		ctxParts = append(ctxParts, "<"+t.Target.URL+"|trigger>")
	}
	if t.PRURL != "" {
		ctxParts = append(ctxParts, "<"+t.PRURL+"|pull request>")
	}
	if t.State == orchestrator.StateFailed && t.Error != "" {
		ctxParts = append(ctxParts, "error: "+escape(Clip(t.Error, 300)))
	}
	blocks = append(blocks, slack.NewContextBlock("", slack.NewTextBlockObject(slack.MarkdownType, red(strings.Join(ctxParts, " · ")), false, false)))
	if t.State == orchestrator.StateNeedsInput && t.Question != "" {
		blocks = append(blocks, slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType,
			red("*The agent asks*\n"+escape(ClipText(t.Question, 2800))), false, false), nil, nil))
	}
	var buttons []slack.BlockElement
	if b := approveButton(t); b != nil {
		buttons = append(buttons, b)
	}
	if !t.State.Terminal() && t.State != orchestrator.StateCancelled {
		b := slack.NewButtonBlockElement("cancel", t.ID, slack.NewTextBlockObject(slack.PlainTextType, "Cancel", false, false))
		b.Style = slack.StyleDanger
		buttons = append(buttons, b)
	}
	if t.State == orchestrator.StateFailed || t.State == orchestrator.StateCancelled {
		buttons = append(buttons, slack.NewButtonBlockElement("retry", t.ID, slack.NewTextBlockObject(slack.PlainTextType, "Retry", false, false)))
	}
	if len(buttons) > 0 {
		blocks = append(blocks, slack.NewActionBlock("nightshift_task", buttons...))
	}
	return text, blocks
}

// approveButton is the "Approve plan" button (action id "approve", value
// the task id) of a plan waiting for review, or nil. The interactions
// endpoint turns a click into an approving answer: the change run starts.
// Typing in the reply box instead plans again with what was typed.
func approveButton(t orchestrator.Task) *slack.ButtonBlockElement {
	if t.State != orchestrator.StateNeedsInput || t.Mode != orchestrator.ModePlan || t.PlanApproved || t.Plan == "" {
		return nil
	}
	b := slack.NewButtonBlockElement("approve", t.ID, slack.NewTextBlockObject(slack.PlainTextType, "Approve plan", false, false))
	b.Style = slack.StylePrimary
	return b
}

// escape keeps user text from being read as Slack markup.
func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
