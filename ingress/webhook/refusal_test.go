package webhook

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nightshift/nightshift/orchestrator"
)

// commentBy is the octokit issue_comment fixture with a trigger, written by
// login with the given user type and author association.
func commentBy(t testing.TB, login, userType, association string) []byte {
	return editJSON(t, readFixture(t, "octokit-webhooks/issue_comment.created.json"), func(m map[string]any) {
		c := obj(m, "comment")
		c["body"] = "@nightshift please fix it"
		c["author_association"] = association
		obj(c, "user")["login"] = login
		obj(c, "user")["type"] = userType
	})
}

func TestCommentAuthorization(t *testing.T) {
	api, comments := fakeGitHubAPI(t)
	reg := prometheus.NewRegistry()
	hs := newHarness(t, func(c *Config) {
		c.GitHub.APIURL = api.URL
		c.GitHub.Deny = map[string][]string{"github.com/Codertocat/*": {"mallory"}}
		c.GitHub.Allow = map[string][]string{"Codertocat/Hello-World": {"friend"}}
		c.GitHub.ReplyRefused = true
		c.Metrics = reg
		r, err := NewGitHubReplier(http.DefaultClient, api.URL, "t0ken")
		if err != nil {
			t.Fatal(err)
		}
		c.Replier = r
	})
	tests := []struct {
		name, login, typ, assoc string
		wantStatus              int
		wantReason              string // substring; empty means accepted
		wantReply               bool
	}{
		{"owner", "Codertocat", "User", "OWNER", 202, "", false},
		{"member", "m", "User", "MEMBER", 202, "", false},
		{"collaborator", "c", "User", "COLLABORATOR", 202, "", false},
		{"bot login", "dependabot[bot]", "User", "NONE", 200, "bot", false},
		{"bot type", "renovate", "Bot", "OWNER", 200, "bot", false},
		{"self", "NightShift-Bot", "User", "OWNER", 200, "nightshift itself", false},
		{"denied owner", "mallory", "User", "OWNER", 200, "denied", false},
		{"allowed outsider", "friend", "User", "NONE", 202, "", false},
		{"contributor with write", "writer", "User", "CONTRIBUTOR", 202, "", false},
		{"reader", "reader", "User", "NONE", 200, "read permission", true},
		{"stranger", "stranger", "User", "FIRST_TIME_CONTRIBUTOR", 200, "none permission", true},
		{"no author", "", "User", "", 200, "no author", false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs.t = t
			before := len(*comments)
			got := hs.do(githubRequest("issue_comment", fmt.Sprintf("authz-%d", i), commentBy(t, tt.login, tt.typ, tt.assoc), testGitHubSecret))
			if got.Status != tt.wantStatus {
				t.Fatalf("status %d %v, want %d", got.Status, got.Body, tt.wantStatus)
			}
			if tt.wantReason != "" && (got.Body["status"] != "ignored" || !strings.Contains(got.Body["reason"], tt.wantReason)) {
				t.Fatalf("answer %v, want ignored with %q", got.Body, tt.wantReason)
			}
			if replied := len(*comments) > before; replied != tt.wantReply {
				t.Fatalf("replied = %v, want %v (%v)", replied, tt.wantReply, *comments)
			}
			if tt.wantReply && !strings.Contains((*comments)[before], "/repos/Codertocat/Hello-World/issues/1/comments @"+tt.login) {
				t.Fatalf("reply = %q", (*comments)[before])
			}
		})
	}
	if got := testutil.ToFloat64(hs.h.metrics.refused.WithLabelValues("github", refuseBot)); got != 2 {
		t.Errorf("refused{bot} = %v, want 2", got)
	}
	// A redelivered refusal is a duplicate, not a second reply.
	n := len(*comments)
	if got := hs.do(githubRequest("issue_comment", "authz-9", commentBy(t, "reader", "User", "NONE"), testGitHubSecret)); got.Body["status"] != "duplicate" {
		t.Errorf("redelivered refusal: %v", got.Body)
	}
	if len(*comments) != n {
		t.Errorf("redelivered refusal replied again")
	}
}

func TestRejectedDeliveries(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, func(c *Config) { c.MaxBody = 64 << 10 })
	body := commentBy(t, "Codertocat", "User", "OWNER")
	now := hs.clock.now
	linearBody := func(ts time.Time) []byte {
		return []byte(fmt.Sprintf(`{"action":"create","type":"Issue","data":{"id":"x"},"webhookTimestamp":%d}`, ts.UnixMilli()))
	}
	sha1Only := githubRequest("issue_comment", "r-1", body, "")
	sha1Only.Header.Set("X-Hub-Signature", "sha1=0123456789abcdef0123456789abcdef01234567")
	badHex := githubRequest("issue_comment", "r-2", body, "")
	badHex.Header.Set("X-Hub-Signature-256", "sha256=zz")
	noEvent := githubRequest("", "r-3", body, testGitHubSecret)
	noEvent.Header.Del("X-GitHub-Event")
	get := githubRequest("issue_comment", "r-4", body, testGitHubSecret)
	get.Method = http.MethodGet
	big := make([]byte, 65<<10)
	for i := range big {
		big[i] = ' '
	}
	chunked := githubRequest("issue_comment", "r-5", append(append([]byte{}, body...), big...), testGitHubSecret)
	chunked.ContentLength = -1
	slackForm := []byte("command=%2Fnightshift&text=acme%2Fapp+x&trigger_id=t1")
	tests := []struct {
		name string
		req  *http.Request
		want int
	}{
		{"github sha1 only", sha1Only, 401},
		{"github no signature", githubRequest("issue_comment", "r-6", body, ""), 401},
		{"github wrong secret", githubRequest("issue_comment", "r-7", body, "wrong"), 401},
		{"github bad hex", badHex, 401},
		{"github no event header", noEvent, 400},
		{"github not json", githubRequest("issue_comment", "r-8", []byte("{not json"), testGitHubSecret), 400},
		{"github no repository", githubRequest("issue_comment", "r-9", []byte(`{"action":"created"}`), testGitHubSecret), 400},
		{"github wrong types", githubRequest("issue_comment", "r-10", []byte(`{"action":"created","repository":{"full_name":7}}`), testGitHubSecret), 400},
		{"github too large", githubRequest("issue_comment", "r-11", append(append([]byte{}, body...), big...), testGitHubSecret), 413},
		{"github too large chunked", chunked, 413},
		{"method", get, 405},
		{"route", httptest.NewRequest(http.MethodPost, "/hooks/bitbucket", nil), 404},
		{"linear bad signature", linearRequest(linearBody(now), "other", ""), 401},
		{"linear no signature", linearRequest(linearBody(now), "", ""), 401},
		{"linear stale", linearRequest(linearBody(now.Add(-61*time.Second)), "linear-secret", ""), 401},
		{"linear future", linearRequest(linearBody(now.Add(61*time.Second)), "linear-secret", ""), 401},
		{"linear no timestamp", linearRequest([]byte(`{"action":"create","type":"Issue","data":{"id":"x"}}`), "linear-secret", ""), 401},
		{"linear not json", linearRequest([]byte(`{`), "linear-secret", ""), 400},
		{"slack stale", slackRequest("/hooks/slack/commands", slackForm, "8f742231b10e8888abcd99yyyzzz85a5", now.Add(-6*time.Minute)), 401},
		{"slack wrong secret", slackRequest("/hooks/slack/commands", slackForm, "nope", now), 401},
		{"slack no signature", slackRequest("/hooks/slack/commands", slackForm, "", now), 401},
		{"slack interaction no payload", slackRequest("/hooks/slack/interactions", slackForm, "8f742231b10e8888abcd99yyyzzz85a5", now), 400},
		{"slack command no command", slackRequest("/hooks/slack/commands", []byte("text=a+b"), "8f742231b10e8888abcd99yyyzzz85a5", now), 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			hs.h.ServeHTTP(rec, tt.req)
			if rec.Code != tt.want {
				t.Fatalf("status %d (%s), want %d", rec.Code, rec.Body.String(), tt.want)
			}
		})
	}
	if _, n := hs.lastEvent(); n != 0 {
		t.Fatalf("%d events published by rejected deliveries", n)
	}
}

func TestNoSecretFailsClosed(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, func(c *Config) {
		c.GitHub.Secrets = nil
		c.Linear.Secrets = []string{""}
		c.Slack.Secrets = nil
	})
	body := commentBy(t, "Codertocat", "User", "OWNER")
	for _, req := range []*http.Request{
		githubRequest("issue_comment", "n-1", body, testGitHubSecret),
		githubRequest("issue_comment", "n-2", body, ""),
		linearRequest([]byte(`{}`), "", ""),
		slackRequest("/hooks/slack/commands", []byte("a=b"), "", hs.clock.now),
	} {
		rec := httptest.NewRecorder()
		hs.h.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", req.URL.Path, rec.Code)
		}
	}
}

func TestCIAttemptCap(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, func(c *Config) { c.AttemptCap = 2 })
	fixture := readFixture(t, "octokit-webhooks/check_run.completed.1.json")
	failing := func(id int, sha string) []byte {
		return editJSON(t, fixture, func(m map[string]any) {
			obj(m, "check_run")["id"] = id
			obj(m, "check_run")["head_sha"] = sha
			obj(m, "check_run")["pull_requests"].([]any)[0].(map[string]any)["head"].(map[string]any)["sha"] = sha
		})
	}
	steps := []struct {
		id          int
		sha         string
		wantAttempt int // 0: refused
	}{
		{1, "aaa", 1},
		{2, "aaa", 1}, // a second failing check on the same commit is the same attempt
		{3, "bbb", 2},
		{4, "ccc", 0},
		{5, "aaa", 1}, // old commits keep their number
	}
	for i, s := range steps {
		got := hs.do(githubRequest("check_run", fmt.Sprintf("ci-%d", i), failing(s.id, s.sha), testGitHubSecret))
		if s.wantAttempt == 0 {
			if got.Status != 200 || !strings.Contains(got.Body["reason"], "exceeds the cap of 2") {
				t.Fatalf("step %d: %d %v, want attempt cap refusal", i, got.Status, got.Body)
			}
			continue
		}
		if got.Status != 202 {
			t.Fatalf("step %d: %d %v", i, got.Status, got.Body)
		}
		ev, _ := hs.lastEvent()
		if ev.Attempt != s.wantAttempt || ev.Target.Number != 2 {
			t.Fatalf("step %d: attempt %d target %+v, want attempt %d", i, ev.Attempt, ev.Target, s.wantAttempt)
		}
	}
}

// TestPublishFailureIsNotRemembered: when the event cannot be stored the
// answer is 503 and GitHub's redelivery is accepted later.
func TestPublishFailureIsNotRemembered(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, nil)
	ctx := context.Background()
	if err := hs.js.DeleteStream(ctx, orchestrator.EventsStream); err != nil {
		t.Fatal(err)
	}
	body := commentBy(t, "Codertocat", "User", "OWNER")
	rec := httptest.NewRecorder()
	hs.h.ServeHTTP(rec, githubRequest("issue_comment", "p-1", body, testGitHubSecret))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d (%s), want 503", rec.Code, rec.Body.String())
	}
	if _, err := hs.js.CreateStream(ctx, orchestrator.EventsStreamConfig(orchestrator.BusConfig{})); err != nil {
		t.Fatal(err)
	}
	if got := hs.do(githubRequest("issue_comment", "p-1", body, testGitHubSecret)); got.Status != http.StatusAccepted {
		t.Fatalf("redelivery after outage: %d %v", got.Status, got.Body)
	}
	if _, n := hs.lastEvent(); n != 1 {
		t.Fatalf("stream holds %d events, want 1", n)
	}
}

// TestDedupeSharedAcrossProcesses: two handlers on one JetStream (two
// ingress processes) share the delivery memory.
func TestDedupeSharedAcrossProcesses(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, nil)
	other, err := New(hs.js, NewJetStreamPublisher(hs.js), hs.h.cfg)
	if err != nil {
		t.Fatal(err)
	}
	body := commentBy(t, "Codertocat", "User", "OWNER")
	if got := hs.do(githubRequest("issue_comment", "x-1", body, testGitHubSecret)); got.Status != 202 {
		t.Fatalf("first: %v", got)
	}
	rec := httptest.NewRecorder()
	other.ServeHTTP(rec, githubRequest("issue_comment", "x-1", body, testGitHubSecret))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "duplicate") {
		t.Fatalf("other process: %d %s", rec.Code, rec.Body.String())
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]Config{
		"dedupe_ttl":  {DedupeTTL: time.Hour},
		"max_body":    {MaxBody: -1},
		"attempt_cap": {AttemptCap: -1},
		"trigger":     {GitHub: GitHubConfig{Trigger: "@"}},
		"glob":        {GitHub: GitHubConfig{Deny: map[string][]string{"[": nil}}},
	} {
		err := c.withDefaults().validate()
		if err == nil || !strings.Contains(err.Error(), strings.Split(name, "_")[0]) {
			t.Errorf("%s: validate = %v", name, err)
		}
	}
}
