package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
)

// LinearConfig configures the Linear reporter.
type LinearConfig struct {
	// APIKey is a personal API key (sent as is) or an OAuth access token
	// (sent as "Bearer <token>"; give it with the "Bearer " prefix). Required
	// unless APIKeyFunc is set.
	APIKey string
	// APIKeyFunc, when set, returns the key at each use (a vault reference
	// resolved at use, so a rotated key or refreshed OAuth token is picked up).
	APIKeyFunc func(ctx context.Context) (string, error)
	// APIURL is the GraphQL endpoint. Default https://api.linear.app/graphql.
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

// LogValue implements slog.LogValuer: the key prints as REDACTED.
func (c LinearConfig) LogValue() slog.Value {
	return slog.GroupValue(slog.String("api_url", c.APIURL), slog.String("api_key", "REDACTED"))
}

// Linear keeps one comment per task on the Linear ticket the task came
// from (commentCreate, then commentUpdate), with the state and the pull
// request link.
type Linear struct {
	store *Store
	cfg   LinearConfig
	log   *slog.Logger
}

var _ orchestrator.Notifier = (*Linear)(nil)

// NewLinear returns a Linear reporter.
func NewLinear(store *Store, cfg LinearConfig) (*Linear, error) {
	if store == nil {
		return nil, errors.New("notify: NewLinear needs a store")
	}
	if cfg.APIKey == "" && cfg.APIKeyFunc == nil {
		return nil, errors.New("notify: config linear.api_key is required")
	}
	if cfg.APIURL == "" {
		cfg.APIURL = "https://api.linear.app/graphql"
	}
	if cfg.APIKeyFunc == nil {
		key := cfg.APIKey
		cfg.APIKeyFunc = func(context.Context) (string, error) { return key, nil }
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
	return &Linear{store: store, cfg: cfg, log: cfg.Logger.With("component", "notify.linear")}, nil
}

// Notify implements orchestrator.Notifier. Tasks that did not come from a
// Linear ticket are ignored.
func (l *Linear) Notify(ctx context.Context, t orchestrator.Task) error {
	if t.Source != orchestrator.SourceLinear || t.Target.Type != "ticket" || t.Target.ID == "" {
		return nil
	}
	ctx, cancel := WithTimeout(ctx)
	defer cancel()
	body := l.render(t)
	_, err := l.store.Sync(ctx, Message{TaskID: t.ID, Channel: "linear", State: string(t.State), Text: body, At: t.UpdatedAt}, Remote{
		Create: func(ctx context.Context) (string, error) {
			issueID, err := l.issueUUID(ctx, t.Target.ID)
			if err != nil {
				return "", fmt.Errorf("notify: linear issue %s for task %s: %w", t.Target.ID, t.ID, err)
			}
			var out struct {
				CommentCreate struct {
					Success bool
					Comment struct{ ID string }
				}
			}
			err = l.do(ctx, `mutation NightshiftCommentCreate($input: CommentCreateInput!) {
  commentCreate(input: $input) { success comment { id } } }`,
				map[string]any{"input": map[string]any{"issueId": issueID, "body": body}}, &out)
			if err == nil && (!out.CommentCreate.Success || out.CommentCreate.Comment.ID == "") {
				err = errors.New("commentCreate did not succeed")
			}
			if err != nil {
				return "", fmt.Errorf("notify: linear comment on %s for task %s: %w", t.Target.ID, t.ID, err)
			}
			return out.CommentCreate.Comment.ID, nil
		},
		Update: func(ctx context.Context, id string) error {
			var out struct{ CommentUpdate struct{ Success bool } }
			err := l.do(ctx, `mutation NightshiftCommentUpdate($id: String!, $input: CommentUpdateInput!) {
  commentUpdate(id: $id, input: $input) { success } }`,
				map[string]any{"id": id, "input": map[string]any{"body": body}}, &out)
			if err == nil && !out.CommentUpdate.Success {
				err = errors.New("commentUpdate did not succeed")
			}
			if err != nil {
				return fmt.Errorf("notify: linear comment update on %s for task %s: %w", t.Target.ID, t.ID, err)
			}
			return nil
		},
		Find: func(ctx context.Context) (string, error) {
			var out struct {
				Issue struct {
					Comments struct {
						Nodes []struct{ ID, Body string }
					}
				}
			}
			if err := l.do(ctx, `query NightshiftIssueComments($id: String!) {
  issue(id: $id) { comments(first: 100) { nodes { id body } } } }`, map[string]any{"id": t.Target.ID}, &out); err != nil {
				return "", fmt.Errorf("notify: linear comments of %s: %w", t.Target.ID, err)
			}
			for _, c := range out.Issue.Comments.Nodes {
				if strings.Contains(c.Body, marker(t.ID)) {
					return c.ID, nil
				}
			}
			return "", nil
		},
	})
	return errors.Join(err, l.syncState(ctx, t))
}

// ticketState is the workflow state a task's ticket should be in: by
// type "started" while a run works, the state named "In Review" while its
// pull request waits for review, by type "completed" when done. Other
// states leave the ticket as it is ("").
func ticketState(t orchestrator.Task) string {
	switch t.State {
	case orchestrator.StateProvisioning, orchestrator.StateRunning, orchestrator.StateTesting, orchestrator.StatePushing:
		return "started"
	case orchestrator.StateReview:
		if t.PRURL != "" {
			return "review"
		}
	case orchestrator.StateDone:
		return "completed"
	}
	return ""
}

// syncState moves t's ticket to the workflow state of its task (issueUpdate
// with the team's state of that type, or named "In Review"), once per change.
func (l *Linear) syncState(ctx context.Context, t orchestrator.Task) error {
	want := ticketState(t)
	if want == "" {
		return nil
	}
	apply := func(ctx context.Context) (string, error) {
		var out struct {
			Issue struct {
				ID    string
				State struct{ ID string }
				Team  struct {
					States struct {
						Nodes []struct{ ID, Name, Type string }
					}
				}
			}
		}
		if err := l.do(ctx, `query NightshiftIssueStates($id: String!) {
  issue(id: $id) { id state { id } team { states { nodes { id name type } } } } }`, map[string]any{"id": t.Target.ID}, &out); err != nil {
			return "", fmt.Errorf("notify: linear workflow states of %s: %w", t.Target.ID, err)
		}
		if out.Issue.ID == "" {
			return "", fmt.Errorf("notify: linear issue %s not found", t.Target.ID)
		}
		stateID := ""
		for _, st := range out.Issue.Team.States.Nodes {
			review := strings.EqualFold(strings.TrimSpace(st.Name), "in review")
			switch {
			case want == "review" && review:
				stateID = st.ID
			case want == "started" && st.Type == "started" && !review && (stateID == "" || strings.EqualFold(st.Name, "in progress")):
				stateID = st.ID
			case want == "completed" && st.Type == "completed" && stateID == "":
				stateID = st.ID
			}
		}
		if stateID == "" || stateID == out.Issue.State.ID {
			return out.Issue.ID, nil // the team has no such state, or the ticket is there
		}
		var res struct{ IssueUpdate struct{ Success bool } }
		err := l.do(ctx, `mutation NightshiftIssueState($id: String!, $input: IssueUpdateInput!) {
  issueUpdate(id: $id, input: $input) { success } }`, map[string]any{"id": out.Issue.ID, "input": map[string]any{"stateId": stateID}}, &res)
		if err == nil && !res.IssueUpdate.Success {
			err = errors.New("issueUpdate did not succeed")
		}
		if err != nil {
			return "", fmt.Errorf("notify: linear state of %s for task %s: %w", t.Target.ID, t.ID, err)
		}
		return out.Issue.ID, nil
	}
	_, err := l.store.Sync(ctx, Message{TaskID: t.ID, Channel: "linear.state", State: string(t.State), Text: want, At: t.UpdatedAt}, Remote{
		Create: apply,
		Update: func(ctx context.Context, _ string) error { _, err := apply(ctx); return err },
	})
	return err
}

// issueUUID resolves a ticket identifier (ENG-12) or id to the issue's id
// (the issue query takes either; mutations are given the id).
func (l *Linear) issueUUID(ctx context.Context, ref string) (string, error) {
	var out struct{ Issue struct{ ID string } }
	if err := l.do(ctx, `query NightshiftIssue($id: String!) { issue(id: $id) { id } }`, map[string]any{"id": ref}, &out); err != nil {
		return "", err
	}
	if out.Issue.ID == "" {
		return "", errors.New("issue not found")
	}
	return out.Issue.ID, nil
}

// marker is the text that identifies a task's comment (Linear keeps no
// hidden HTML, so it is visible: the task id).
func marker(id string) string { return "Nightshift task `" + id + "`" }

func (l *Linear) render(t orchestrator.Task) string {
	st := StatusOf(t)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s is **%s**", st.Emoji, marker(t.ID), st.Phrase)
	if u := TaskURL(l.cfg.PublicURL, t.ID); u != "" {
		fmt.Fprintf(&b, " · [open the task](%s)", u)
	}
	b.WriteString("\n\n")
	if t.PRURL != "" {
		fmt.Fprintf(&b, "Pull request: %s\n\n", t.PRURL)
	}
	if t.State == orchestrator.StateFailed && t.Error != "" {
		fmt.Fprintf(&b, "Error: %s\n\n", Clip(t.Error, 500))
	}
	if t.State == orchestrator.StateNeedsInput && t.Question != "" {
		fmt.Fprintf(&b, "The agent asks:\n\n%s\n\nAnswer in a comment that mentions Nightshift (or on the board).\n\n", Quote(t.Question, 4000))
	}
	if t.Answer != "" {
		fmt.Fprintf(&b, "%s\n\n", Quote(t.Answer, 8000))
	}
	fmt.Fprintf(&b, "Repository `%s`, agent `%s`.", RepoName(t.Repo), t.Agent)
	return l.cfg.Redact(b.String())
}

// do runs one GraphQL operation.
func (l *Linear) do(ctx context.Context, query string, vars map[string]any, out any) error {
	payload, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.cfg.APIURL, bytes.NewReader(payload))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	key, err := l.cfg.APIKeyFunc(ctx)
	if err != nil {
		return fmt.Errorf("api key: %w", err)
	}
	req.Header.Set("Authorization", key)
	resp, err := l.cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	var env struct {
		Data   json.RawMessage `json:"data"`
		Errors []struct {
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(data, &env); err != nil {
		return fmt.Errorf("linear answered %s: %s", resp.Status, Clip(string(data), 200))
	}
	if len(env.Errors) > 0 {
		return fmt.Errorf("linear: %s", env.Errors[0].Message)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("linear answered %s", resp.Status)
	}
	return json.Unmarshal(env.Data, out)
}
