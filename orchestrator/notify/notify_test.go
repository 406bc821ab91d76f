package notify_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/notify"
	"github.com/nightshift/nightshift/orchestrator/notify/notifytest"
)

func openDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := orchestrator.OpenDB(filepath.Join(t.TempDir(), "n.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

var kvServers sync.Map // *sql.DB → *server.Server

func newStore(t *testing.T, db *sql.DB) *notify.Store {
	t.Helper()
	if kvBackend {
		// One NATS per database: a second store on the same db is another
		// process on the same cluster.
		ns, ok := kvServers.Load(db)
		if !ok {
			ns, _ = kvServers.LoadOrStore(db, startNATS(t))
		}
		return kvStore(t, ns.(*server.Server), notify.KVConfig{})
	}
	s, err := notify.NewStore(context.Background(), db, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func redact(s string) string { return strings.ReplaceAll(s, "hunter2", "[REDACTED]") }

func task(id string, st orchestrator.State, at time.Time) orchestrator.Task {
	return orchestrator.Task{ID: id, State: st, Repo: "https://github.com/acme/app.git", Agent: "claude",
		Prompt: "fix the <login> bug\nplease", Source: orchestrator.SourceGitHub, UpdatedAt: at, CreatedAt: at,
		Target: orchestrator.Target{Type: "issue", Number: 3, URL: "https://github.com/acme/app/issues/3"}}
}

// buttons returns action_id=value pairs of a message's blocks.
func buttons(t *testing.T, blocks string) []string {
	t.Helper()
	var bs []struct {
		Type     string
		Elements []struct {
			ActionID string `json:"action_id"`
			Value    string
		}
	}
	if err := json.Unmarshal([]byte(blocks), &bs); err != nil {
		t.Fatalf("blocks %s: %v", blocks, err)
	}
	var out []string
	for _, b := range bs {
		if b.Type == "actions" {
			for _, e := range b.Elements {
				out = append(out, e.ActionID+"="+e.Value)
			}
		}
	}
	return out
}

// blockText returns every text in a message's blocks, one per line.
func blockText(t *testing.T, blocks string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(blocks), &v); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if s, ok := e.(string); ok && k == "text" {
					b.WriteString(s + "\n")
				}
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(v)
	return b.String()
}

func TestSlackOneMessagePerTaskUpdatedInPlace(t *testing.T) {
	t.Parallel()
	fake := notifytest.NewSlack(t, "xoxb-test")
	db := openDB(t)
	store := newStore(t, db)
	sl, err := notify.NewSlack(store, notify.SlackConfig{Token: "xoxb-test", Channel: "#nightshift", APIURL: fake.APIURL,
		PublicURL: "https://ns.example.test", Redact: redact})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t0 := time.Now()
	id := "tslack0000000001"
	steps := []orchestrator.Task{task(id, orchestrator.StateQueued, t0), task(id, orchestrator.StateQueued, t0),
		task(id, orchestrator.StateRunning, t0.Add(time.Second))}
	for _, tk := range steps {
		if err := sl.Notify(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}
	msgs := fake.Messages()
	if len(msgs) != 1 || msgs[0].Updates != 1 {
		t.Fatalf("want one message updated once, got %+v", msgs)
	}
	m := msgs[0]
	m.Blocks = blockText(t, m.Blocks)
	if !strings.Contains(m.Blocks, "working") || !strings.Contains(m.Blocks, "https://ns.example.test/tasks/"+id) ||
		!strings.Contains(m.Blocks, "&lt;login&gt;") || m.Channel != fake.ChannelID || !strings.Contains(m.Metadata, id) {
		t.Fatalf("message: %+v", m)
	}
	if got := buttons(t, fake.Messages()[0].Blocks); len(got) != 1 || got[0] != "cancel="+id {
		t.Fatalf("running task buttons %v, want cancel", got)
	}
	// A late report of an older state changes nothing.
	if err := sl.Notify(ctx, task(id, orchestrator.StateQueued, t0.Add(-time.Second))); err != nil {
		t.Fatal(err)
	}
	failed := task(id, orchestrator.StateFailed, t0.Add(2*time.Second))
	failed.Error = "tests failed: password hunter2 rejected"
	if err := sl.Notify(ctx, failed); err != nil {
		t.Fatal(err)
	}
	m = fake.Messages()[0]
	m.Blocks = blockText(t, m.Blocks)
	if len(fake.Messages()) != 1 || m.Updates != 2 || strings.Contains(m.Blocks+m.Text, "hunter2") || !strings.Contains(m.Blocks, "[REDACTED] rejected") {
		t.Fatalf("failed report: %+v", m)
	}
	if got := buttons(t, fake.Messages()[0].Blocks); len(got) != 1 || got[0] != "retry="+id {
		t.Fatalf("failed task buttons %v, want retry", got)
	}

	// Another process on the same database (a restart) updates, never reposts.
	sl2, _ := notify.NewSlack(newStore(t, db), notify.SlackConfig{Token: "xoxb-test", Channel: "#nightshift", APIURL: fake.APIURL})
	review := task(id, orchestrator.StateReview, t0.Add(3*time.Second))
	review.PRURL = "https://github.com/acme/app/pull/9"
	if err := sl2.Notify(ctx, review); err != nil {
		t.Fatal(err)
	}
	if msgs := fake.Messages(); len(msgs) != 1 || !strings.Contains(blockText(t, msgs[0].Blocks), "pull/9") || len(buttons(t, msgs[0].Blocks)) != 0 {
		t.Fatalf("after restart: %+v", msgs)
	}
}

func TestSlackRecoversAPostWhoseIDWasLost(t *testing.T) {
	t.Parallel()
	fake := notifytest.NewSlack(t, "xoxb-test")
	db := openDB(t)
	store := newStore(t, db)
	sl, _ := notify.NewSlack(store, notify.SlackConfig{Token: "xoxb-test", Channel: "C0NIGHTSHIFT", APIURL: fake.APIURL})
	ctx := context.Background()
	t0 := time.Now()
	id := "tslack0000000002"
	if err := sl.Notify(ctx, task(id, orchestrator.StateQueued, t0)); err != nil {
		t.Fatal(err)
	}
	// Crash after the post, before its id was stored: the row is pending.
	if err := store.Put(ctx, notify.Record{TaskID: id, Channel: "slack"}); err != nil {
		t.Fatal(err)
	}
	if err := sl.Notify(ctx, task(id, orchestrator.StateRunning, t0.Add(time.Second))); err != nil {
		t.Fatal(err)
	}
	if msgs := fake.Messages(); len(msgs) != 1 || msgs[0].Updates != 1 {
		t.Fatalf("want the lost message found and updated: %+v", msgs)
	}
	// Wrong token: the error surfaces.
	bad, _ := notify.NewSlack(newStore(t, openDB(t)), notify.SlackConfig{Token: "xoxb-wrong", Channel: "C1", APIURL: fake.APIURL})
	if err := bad.Notify(ctx, task("tslack0000000003", orchestrator.StateQueued, t0)); err == nil || !strings.Contains(err.Error(), "invalid_auth") {
		t.Fatalf("bad token: %v", err)
	}
}

func TestLinearCommentOnTheTicket(t *testing.T) {
	t.Parallel()
	fake := notifytest.NewLinear(t, "lin_api_test")
	db := openDB(t)
	store := newStore(t, db)
	lin, err := notify.NewLinear(store, notify.LinearConfig{APIKey: "lin_api_test", APIURL: fake.APIURL,
		PublicURL: "https://ns.example.test", Redact: redact})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t0 := time.Now()
	// Tasks from elsewhere are not Linear's business.
	if err := lin.Notify(ctx, task("tgithub000000001", orchestrator.StateQueued, t0)); err != nil || len(fake.Ops()) != 0 {
		t.Fatalf("github task reached linear: %v %v", err, fake.Ops())
	}
	id := "tlinear000000001"
	mk := func(st orchestrator.State, d time.Duration) orchestrator.Task {
		tk := task(id, st, t0.Add(d))
		tk.Source = orchestrator.SourceLinear
		tk.Target = orchestrator.Target{Type: "ticket", ID: "ENG-12", URL: "https://linear.app/acme/issue/ENG-12/x"}
		return tk
	}
	for _, tk := range []orchestrator.Task{mk(orchestrator.StateQueued, 0), mk(orchestrator.StateQueued, 0), mk(orchestrator.StateRunning, time.Second)} {
		if err := lin.Notify(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}
	// Lose the id (crash): the marker finds the comment again.
	store.Put(ctx, notify.Record{TaskID: id, Channel: "linear"})
	done := mk(orchestrator.StateReview, 2*time.Second)
	done.PRURL = "https://github.com/acme/app/pull/9"
	done.Prompt = "hunter2"
	if err := lin.Notify(ctx, done); err != nil {
		t.Fatal(err)
	}
	cs := fake.Comments()
	if len(cs) != 1 || cs[0].IssueID != notifytest.IssueUUID("ENG-12") || cs[0].Updates != 2 {
		t.Fatalf("want one comment on ENG-12 updated twice: %+v (ops %v)", cs, fake.Ops())
	}
	for _, want := range []string{"ready for review", "https://github.com/acme/app/pull/9", "https://ns.example.test/tasks/" + id} {
		if !strings.Contains(cs[0].Body, want) {
			t.Errorf("comment lacks %q:\n%s", want, cs[0].Body)
		}
	}
	bad, _ := notify.NewLinear(newStore(t, openDB(t)), notify.LinearConfig{APIKey: "wrong", APIURL: fake.APIURL})
	if err := bad.Notify(ctx, mk(orchestrator.StateQueued, 0)); err == nil || !strings.Contains(err.Error(), "Authentication required") {
		t.Fatalf("bad key: %v", err)
	}
}

func TestKeyIsResolvedAtEachUse(t *testing.T) {
	t.Parallel()
	fake := notifytest.NewLinear(t, "lin_api_new")
	key := "lin_api_old"
	lin, _ := notify.NewLinear(newStore(t, openDB(t)), notify.LinearConfig{APIURL: fake.APIURL,
		APIKeyFunc: func(context.Context) (string, error) { return key, nil }})
	tk := task("tlinear000000009", orchestrator.StateQueued, time.Now())
	tk.Source, tk.Target = orchestrator.SourceLinear, orchestrator.Target{Type: "ticket", ID: "ENG-1"}
	if err := lin.Notify(context.Background(), tk); err == nil {
		t.Fatal("the old key was accepted")
	}
	key = "lin_api_new" // rotated in the vault
	if err := lin.Notify(context.Background(), tk); err != nil || len(fake.Comments()) != 1 {
		t.Fatalf("after rotation: %v, %d comments", err, len(fake.Comments()))
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	store := newStore(t, openDB(t))
	if _, err := notify.NewSlack(store, notify.SlackConfig{Channel: "#x"}); err == nil || !strings.Contains(err.Error(), "slack.bot_token") {
		t.Errorf("missing token: %v", err)
	}
	if _, err := notify.NewSlack(store, notify.SlackConfig{Token: "x"}); err == nil || !strings.Contains(err.Error(), "slack.channel") {
		t.Errorf("missing channel: %v", err)
	}
	if _, err := notify.NewLinear(store, notify.LinearConfig{}); err == nil || !strings.Contains(err.Error(), "linear.api_key") {
		t.Errorf("missing key: %v", err)
	}
}
