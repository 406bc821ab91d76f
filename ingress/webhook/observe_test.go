package webhook

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/automation"
)

// TestObservedDeliveries: deliveries no built-in trigger takes reach the
// observed stream when an enabled automation matches them (202, once per
// delivery id), and never the events stream the scheduler reads; a bot,
// Nightshift itself or an unmatched delivery stays ignored.
func TestObservedDeliveries(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, nil)
	ctx := context.Background()
	eng, err := automation.New(ctx, hs.js, automation.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Seed(ctx, []config.Automation{
		{Name: "gh-bugs", On: &config.On{Source: "github", Kind: "issue.labeled"}, Where: []config.Filter{{Field: "label", Op: "eq", Value: config.Values{"bug"}}}, Prompt: "p"},
		{Name: "lin-bugs", On: &config.On{Source: "linear", Kind: "ticket.update"}, Where: []config.Filter{{Field: "label", Op: "eq", Value: config.Values{"Bug"}}}, Prompt: "p"},
	}); err != nil {
		t.Fatal(err)
	}
	// The handler's observer follows the bucket: wait for both.
	probe := func(src orchestrator.Source, kind, raw string) *orchestrator.Event {
		return &orchestrator.Event{Source: src, Kind: kind, Raw: json.RawMessage(raw)}
	}
	for deadline := time.Now().Add(5 * time.Second); !hs.h.cfg.Observer.Observes(probe("github", "issue.labeled", `{"label":{"name":"bug"}}`)) ||
		!hs.h.cfg.Observer.Observes(probe("linear", "ticket.update", `{"data":{"labels":[{"name":"Bug"}]}}`)); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the observer did not see the automations")
		}
	}
	count := func(stream string) uint64 {
		st, err := hs.js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	labeled := func(label, login, typ string) []byte {
		return editJSON(t, readFixture(t, "octokit-webhooks/issues.labeled.json"), func(m map[string]any) {
			m["label"].(map[string]any)["name"] = label
			m["sender"].(map[string]any)["login"] = login
			m["sender"].(map[string]any)["type"] = typ
		})
	}
	linear := func(label string) []byte {
		return editJSON(t, readFixture(t, "zulip-linear/issue_update.json"), func(m map[string]any) {
			m["webhookTimestamp"] = hs.clock.now.UnixMilli()
			m["data"].(map[string]any)["labels"].([]any)[2].(map[string]any)["name"] = label
		})
	}
	for _, tc := range []struct {
		name   string
		req    *http.Request
		status string
		stored uint64 // observed events stored so far
	}{
		{"github bug", githubRequest("issues", "gh-1", labeled("bug", "Codertocat", "User"), testGitHubSecret), "accepted", 1},
		{"github redelivery", githubRequest("issues", "gh-1", labeled("bug", "Codertocat", "User"), testGitHubSecret), "duplicate", 1},
		{"github other label", githubRequest("issues", "gh-2", labeled("documentation", "Codertocat", "User"), testGitHubSecret), "ignored", 1},
		{"github bot", githubRequest("issues", "gh-3", labeled("bug", "renovate[bot]", "Bot"), testGitHubSecret), "ignored", 1},
		{"github itself", githubRequest("issues", "gh-4", labeled("bug", "nightshift-bot", "User"), testGitHubSecret), "ignored", 1},
		{"linear Bug", linearRequest(linear("Bug"), "linear-secret", "lin-1"), "accepted", 2},
		{"linear redelivery", linearRequest(linear("Bug"), "linear-secret", "lin-1"), "duplicate", 2},
		{"linear other label", linearRequest(linear("Chore"), "linear-secret", "lin-2"), "ignored", 2},
	} {
		got := hs.do(tc.req)
		if got.Body["status"] != tc.status {
			t.Errorf("%s: %d %v, want %s", tc.name, got.Status, got.Body, tc.status)
		}
		if tc.status == "accepted" && got.Status != http.StatusAccepted {
			t.Errorf("%s: HTTP %d, want 202", tc.name, got.Status)
		}
		if n := count(automation.ObservedStream); n != tc.stored {
			t.Errorf("%s: %d observed events stored, want %d", tc.name, n, tc.stored)
		}
	}
	if n := count(orchestrator.EventsStream); n != 0 {
		t.Errorf("%d events reached the scheduler's stream", n)
	}
	st, _ := hs.js.Stream(ctx, automation.ObservedStream)
	m, err := st.GetLastMsgForSubject(ctx, automation.ObservedSubject(orchestrator.SourceLinear, "ticket.update"))
	if err != nil {
		t.Fatal(err)
	}
	var ev orchestrator.Event
	if err := json.Unmarshal(m.Data, &ev); err != nil || ev.Target.ID != "WEB-44" || ev.DeliveryID != "lin-1" || m.Header.Get(jetstream.MsgIDHeader) != "lin-1" {
		t.Fatalf("observed linear event %+v (msg id %q): %v", ev, m.Header.Get(jetstream.MsgIDHeader), err)
	}
}
