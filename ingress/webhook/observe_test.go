package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/automation"
	"github.com/nightshift/nightshift/orchestrator/forge"
)

// TestObservedDeliveries: deliveries no built-in trigger takes reach the
// observed stream when an enabled automation matches them (202, once per
// delivery id), and never the events stream the scheduler reads; a bot,
// Nightshift itself or an unmatched delivery stays ignored.
func TestObservedDeliveries(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, nil)
	ctx := context.Background()
	if hs.h.watches(orchestrator.SourceGitHub) {
		t.Error("deliveries are normalized for automations while there is none")
	}
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
	if hs.h.watches("gitea") || !hs.h.watches(orchestrator.SourceLinear) {
		t.Error("Watches does not follow the automations' on.source")
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

// TestObservedForgeDeliveries: a real Gitea label_updated delivery whose
// label is bug (not the built-in label) and GitLab's issue hook adding the
// Platform label reach the observed stream as issue.labeled when an
// automation wants them; a confidential GitLab issue never does, and
// Nightshift's own login on the forge is dropped.
func TestObservedForgeDeliveries(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, func(c *Config) {
		c.Forges = []ForgeConfig{
			{Kind: forge.KindGitea, Secrets: []string{"gitea-fixture-secret"}, GitURL: "http://127.0.0.1:35589/", BotLogin: "nsbot"},
			{Kind: forge.KindGitLab, Secrets: []string{"gl-secret"}, GitURL: "https://gitlab.example.com/"},
		}
		c.Sources = []Source{GiteaSource{}, GitLabSource()}
	})
	ctx := context.Background()
	eng, err := automation.New(ctx, hs.js, automation.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Seed(ctx, []config.Automation{
		{Name: "gitea-bugs", On: &config.On{Source: "gitea", Kind: "issue.labeled"}, Where: []config.Filter{{Field: "label", Op: "eq", Value: config.Values{"bug"}}}, Prompt: "p"},
		{Name: "gitlab-platform", On: &config.On{Source: "gitlab", Kind: "issue.labeled"}, Where: []config.Filter{{Field: "label", Op: "eq", Value: config.Values{"Platform"}}}, Prompt: "p"},
	}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); !hs.h.cfg.Observer.Observes(&orchestrator.Event{Source: "gitlab", Kind: "issue.labeled",
		Raw: json.RawMessage(`{"labels":[{"title":"Platform"}]}`)}); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the observer did not see the automations")
		}
	}
	giteaReq := func(delivery, label, sender string) *http.Request {
		body := editJSON(t, readFixture(t, "../gitea/issues.label_updated.nightshift.json"), func(m map[string]any) {
			m["issue"].(map[string]any)["labels"].([]any)[0].(map[string]any)["name"] = label
			m["sender"].(map[string]any)["login"] = sender
		})
		req := httptest.NewRequest(http.MethodPost, "/hooks/gitea", bytes.NewReader(body))
		req.Header.Set("X-Gitea-Event", "issues")
		req.Header.Set("X-Gitea-Event-Type", "issue_label")
		req.Header.Set("X-Gitea-Delivery", delivery)
		req.Header.Set("X-Gitea-Signature", SignGitea("gitea-fixture-secret", body))
		return req
	}
	gitlabReq := func(delivery string, confidential bool, user string) *http.Request {
		body := editJSON(t, readFixture(t, "../gitlab/client-go/issue.json"), func(m map[string]any) {
			m["object_attributes"].(map[string]any)["action"] = "update"
			m["object_attributes"].(map[string]any)["confidential"] = confidential
			if user != "" {
				m["user"].(map[string]any)["username"] = user
			}
		})
		req := gitlabRequest(body, "gl-secret", delivery)
		req.Header.Set("X-Gitlab-Event", "Issue Hook")
		return req
	}
	stored := func() uint64 {
		st, err := hs.js.Stream(ctx, automation.ObservedStream)
		if err != nil {
			t.Fatal(err)
		}
		info, _ := st.Info(ctx)
		return info.State.Msgs
	}
	for _, tc := range []struct {
		name   string
		req    *http.Request
		status string
		stored uint64
	}{
		{"gitea bug", giteaReq("g-1", "bug", "alice"), "accepted", 1},
		{"gitea redelivery", giteaReq("g-1", "bug", "alice"), "duplicate", 1},
		{"gitea other label", giteaReq("g-2", "question", "alice"), "ignored", 1},
		{"gitea by nightshift", giteaReq("g-3", "bug", "nsbot"), "ignored", 1},
		{"gitea bot", giteaReq("g-4", "bug", "gitea-actions"), "ignored", 1},
		{"gitlab label added", gitlabReq("l-1", false, ""), "accepted", 2},
		{"gitlab confidential", gitlabReq("l-2", true, ""), "ignored", 2},
		{"gitlab bot", gitlabReq("l-3", false, "project_42_bot_0123abcd"), "ignored", 2},
	} {
		if got := hs.do(tc.req); got.Body["status"] != tc.status {
			t.Errorf("%s: %d %v, want %s", tc.name, got.Status, got.Body, tc.status)
		}
		if n := stored(); n != tc.stored {
			t.Errorf("%s: %d observed events stored, want %d", tc.name, n, tc.stored)
		}
	}
	st, _ := hs.js.Stream(ctx, automation.ObservedStream)
	m, err := st.GetLastMsgForSubject(ctx, automation.ObservedSubject("gitea", "issue.labeled"))
	if err != nil {
		t.Fatal(err)
	}
	var ev orchestrator.Event
	if json.Unmarshal(m.Data, &ev) != nil || ev.Repo != "http://127.0.0.1:35589/nsadmin/hello-gitea.git" || ev.Target.Number != 1 || ev.Actor.Login != "alice" {
		t.Fatalf("observed gitea event %+v", ev)
	}
}

// FuzzObserve: the observers of every source take any verified body
// without panicking; an event they make has a kind, and a repository that
// is empty or remote (and on the configured forge).
func FuzzObserve(f *testing.F) {
	seedBodies(f, func(_ string, b []byte) { f.Add("issues", b) })
	for _, dir := range []string{"testdata/gitea", "testdata/gitlab/client-go"} {
		files, _ := filepath.Glob(dir + "/*.json")
		for _, p := range files {
			if b, err := os.ReadFile(p); err == nil {
				f.Add("issue_comment", b)
			}
		}
	}
	gh := testForge()
	opt := SourceOptions{Host: "git.example.com", GitURL: "https://git.example.com/"}
	f.Fuzz(func(t *testing.T, event string, body []byte) {
		check := func(ev *orchestrator.Event, prefix string) {
			if ev == nil {
				return
			}
			if ev.Kind == "" {
				t.Fatalf("observed event without a kind: %+v", ev)
			}
			checkRemote(t, ev.Repo, ev.Target.HeadRepo)
			if ev.Repo != "" && !strings.HasPrefix(ev.Repo, prefix) {
				t.Fatalf("repo %q is not on %s", ev.Repo, prefix)
			}
		}
		if o := observeGitHub(event, nil, body, gh); o != nil {
			check(o.ev, "https://github.com/")
		}
		if p, err := parseLinear(body); err == nil {
			if o := observeLinear(p, linearOptions{Repo: "https://github.com/acme/app.git"}); o != nil {
				check(o.ev, "https://github.com/")
			}
		}
		h := http.Header{}
		h.Set("X-Gitea-Event", event)
		h.Set("X-Gitlab-Event", "Issue Hook")
		check(GiteaSource{}.observe(h, nil, body, opt), opt.GitURL)
		check(gitlabSource{}.observe(h, nil, body, opt), opt.GitURL)
		// The payload Normalize decoded observes as the body does.
		for _, src := range []Source{GiteaSource{}, gitlabSource{}} {
			if res, err := src.Normalize(h, body, opt); err == nil && res.payload != nil {
				fo := src.(forgeObserver)
				if got, want := fo.observe(h, res.payload, body, opt), fo.observe(h, nil, body, opt); !reflect.DeepEqual(got, want) {
					t.Fatalf("%s: observed from the decoded payload %+v, from the body %+v", src.Kind(), got, want)
				}
			}
		}
	})
}

// BenchmarkObserveGitHub is what an ignored GitHub delivery costs once an
// automation takes GitHub events: normalizing it again for automations.
func BenchmarkObserveGitHub(b *testing.B) {
	body := readFixture(b, "octokit-webhooks/issues.labeled.json")
	opt := testForge()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if observeGitHub("issues", nil, body, opt) == nil {
			b.Fatal("not observed")
		}
	}
}
