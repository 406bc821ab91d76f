package webhook

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json")

// manifestEntry is one row of the fixtures' manifest.json.
type manifestEntry struct {
	File             string  `json:"file"`
	Provider         string  `json:"provider"`
	EventHeader      *string `json:"event_header"`
	WebhookTimestamp int64   `json:"webhookTimestamp"`
}

// goldenCase is one delivery whose outcome is compared with a golden file.
type goldenCase struct {
	name string
	req  func(h *harness) *http.Request
}

// golden is what a golden file holds: the answer and the published event
// (its raw payload replaced by a digest to keep files small).
type golden struct {
	Status    int                 `json:"status"`
	Response  map[string]string   `json:"response"`
	Event     *orchestrator.Event `json:"event,omitempty"`
	RawSHA256 string              `json:"raw_sha256,omitempty"`
}

type signingVector struct {
	Secret        string            `json:"secret"`
	SigningSecret string            `json:"signing_secret"`
	Payload       string            `json:"payload"`
	Signature     string            `json:"X-Hub-Signature-256"`
	Headers       map[string]string `json:"headers"`
	BodyFile      string            `json:"body_file"`
}

func readVector(t *testing.T, dir string) signingVector {
	t.Helper()
	var v signingVector
	if err := json.Unmarshal(readFixture(t, dir+"/signing_vector.json"), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// Documented vectors, copied from the pages the fixtures cite: GitHub's
// "Validating webhook deliveries" and Slack's "Verifying requests from Slack"
// and slack-go's security_test.go.
var documented = map[string][3]string{ // dir: secret, timestamp, signature
	"github-docs": {"It's a Secret to Everybody", "", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"},
	"slack-docs":  {"8f742231b10e8888abcd99yyyzzz85a5", "1531420618", "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"},
	"slack-go":    {"e6b19c573432dcc6b075501d51b51bb8", "1531431954", "v0=adada4ed31709aef585c2580ca3267678c6a8eaeb7e0c1aca3ee57b656886b2c"},
}

// TestSigningVectors checks the vector files against the documented values
// and our signers against both.
func TestSigningVectors(t *testing.T) {
	t.Parallel()
	for dir, d := range documented {
		v := readVector(t, dir)
		secret, sig, ts := v.Secret+v.SigningSecret, v.Signature+v.Headers["X-Slack-Signature"], v.Headers["X-Slack-Request-Timestamp"]
		if secret != d[0] || ts != d[1] || sig != d[2] {
			t.Errorf("%s/signing_vector.json = %q %q %q, documented %q", dir, secret, ts, sig, d)
		}
	}
	gh := readVector(t, "github-docs")
	if gh.Payload != "Hello, World!" {
		t.Errorf("github vector payload %q", gh.Payload)
	}
	if got := SignGitHub(gh.Secret, []byte(gh.Payload)); got != gh.Signature {
		t.Errorf("SignGitHub = %s, want %s", got, gh.Signature)
	}
	if got := hexHMAC(gh.Secret, []byte(gh.Payload)); "sha256="+got != gh.Signature {
		t.Errorf("hex HMAC = %s, want %s", got, gh.Signature)
	}
	if err := VerifyGitHub([]string{"other", gh.Secret}, gh.Signature, []byte(gh.Payload)); err != nil {
		t.Errorf("VerifyGitHub(vector): %v", err)
	}
	for _, dir := range []string{"slack-docs", "slack-go"} {
		v := readVector(t, dir)
		body := readFixture(t, dir+"/"+v.BodyFile)
		ts := v.Headers["X-Slack-Request-Timestamp"]
		if got := SignSlack(v.SigningSecret, ts, body); got != v.Headers["X-Slack-Signature"] {
			t.Errorf("%s: SignSlack = %s, want %s", dir, got, v.Headers["X-Slack-Signature"])
		}
		sec, _ := strconv.ParseInt(ts, 10, 64)
		now := time.Unix(sec, 0).Add(90 * time.Second)
		if err := VerifySlack([]string{v.SigningSecret}, ts, v.Headers["X-Slack-Signature"], body, now, 5*time.Minute); err != nil {
			t.Errorf("%s: VerifySlack(vector): %v", dir, err)
		}
		if err := VerifySlack([]string{v.SigningSecret}, ts, v.Headers["X-Slack-Signature"], body, now.Add(10*time.Minute), 5*time.Minute); err == nil {
			t.Errorf("%s: VerifySlack accepted a stale vector", dir)
		}
	}
}

// fakeGitHubAPI answers the collaborator permission endpoint: "writer" has
// write, "stranger" is unknown (404), everyone else has read.
func fakeGitHubAPI(t testing.TB) (*httptest.Server, *[]string) {
	var comments []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
		switch {
		case r.Method == http.MethodGet && len(parts) == 6 && parts[0] == "repos" && parts[3] == "collaborators" && parts[5] == "permission":
			switch parts[4] {
			case "stranger":
				w.WriteHeader(http.StatusNotFound)
				_, _ = w.Write([]byte(`{"message":"Not Found"}`))
			case "writer":
				_, _ = w.Write([]byte(`{"permission":"write","user":{"login":"writer"}}`))
			default:
				_, _ = w.Write([]byte(`{"permission":"read","user":{"login":"` + parts[4] + `"}}`))
			}
		case r.Method == http.MethodPost && len(parts) == 6 && parts[3] == "issues" && parts[5] == "comments":
			var c struct{ Body string }
			_ = json.NewDecoder(r.Body).Decode(&c)
			comments = append(comments, r.URL.Path+" "+c.Body)
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte(`{"id":1}`))
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &comments
}

// editJSON decodes body, applies edit and encodes it again.
func editJSON(t testing.TB, body []byte, edit func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func obj(m map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		m = m[k].(map[string]any)
	}
	return m
}

func githubCase(name, event string, body []byte) goldenCase {
	return goldenCase{name: name, req: func(h *harness) *http.Request {
		h.clock.now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		return githubRequest(event, "delivery-"+name, body, testGitHubSecret)
	}}
}

func linearCase(name string, body []byte) goldenCase {
	return goldenCase{name: name, req: func(h *harness) *http.Request {
		var p struct{ WebhookTimestamp int64 }
		_ = json.Unmarshal(body, &p)
		h.clock.now = time.UnixMilli(p.WebhookTimestamp).Add(2 * time.Second).UTC()
		return linearRequest(body, "linear-secret", "")
	}}
}

func slackCase(name, path string, body []byte, secret string, ts int64) goldenCase {
	return goldenCase{name: name, req: func(h *harness) *http.Request {
		h.clock.now = time.Unix(ts, 0).Add(30 * time.Second).UTC()
		return slackRequest(path, body, secret, time.Unix(ts, 0))
	}}
}

// fixtureCases turns every payload in the shared fixtures into a case.
func fixtureCases(t *testing.T) []goldenCase {
	var manifest []manifestEntry
	if err := json.Unmarshal(readFixture(t, "manifest.json"), &manifest); err != nil {
		t.Fatal(err)
	}
	var cases []goldenCase
	for _, m := range manifest {
		if strings.HasSuffix(m.File, "signing_vector.json") {
			continue
		}
		body := readFixture(t, m.File)
		name := "fixture." + strings.NewReplacer("/", ".", ".json", "", ".body.txt", "").Replace(m.File)
		switch {
		case m.Provider == "github" && m.EventHeader != nil:
			cases = append(cases, githubCase(name, *m.EventHeader, body))
		case m.Provider == "linear":
			cases = append(cases, linearCase(name, body))
		case m.Provider == "slack":
			dir := filepath.Dir(m.File)
			v := readVector(t, dir)
			ts, _ := strconv.ParseInt(v.Headers["X-Slack-Request-Timestamp"], 10, 64)
			path := "/hooks/slack/events"
			if strings.HasSuffix(m.File, ".txt") {
				path = "/hooks/slack/commands"
			}
			// The documented vector's own secret must work end to end.
			cases = append(cases, goldenCase{name: name, req: func(h *harness) *http.Request {
				h.clock.now = time.Unix(ts, 0).Add(30 * time.Second).UTC()
				req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
				for k, val := range v.Headers {
					req.Header.Set(k, val)
				}
				return req
			}})
		default:
			t.Errorf("manifest entry %s: unknown provider %q", m.File, m.Provider)
		}
	}
	return cases
}

// derivedCases are fixtures edited to exercise the paths the verbatim
// payloads do not reach (a trigger in a comment, a failing conclusion, ...).
func derivedCases(t *testing.T) []goldenCase {
	comment := readFixture(t, "octokit-webhooks/issue_comment.created.json")
	setBody := func(b []byte, key, text string) []byte {
		return editJSON(t, b, func(m map[string]any) { obj(m, key)["body"] = text })
	}
	prComment := readFixture(t, "go-playground-webhooks/issue_comment.created.on-pr.slash-build.json")
	review := readFixture(t, "octokit-webhooks/pull_request_review_comment.created.json")
	labeled := editJSON(t, readFixture(t, "octokit-webhooks/issues.labeled.json"), func(m map[string]any) {
		obj(m, "label")["name"] = "NightShift"
	})
	wfPR := editJSON(t, readFixture(t, "octokit-webhooks/workflow_run.completed.with-pull-requests.json"), func(m map[string]any) {
		obj(m, "workflow_run")["conclusion"] = "timed_out"
		obj(m, "workflow_run")["run_attempt"] = 2
	})
	status := editJSON(t, readFixture(t, "octokit-webhooks/status.json"), func(m map[string]any) {
		m["state"] = "error"
		m["target_url"] = "https://ci.example.com/builds/42"
	})
	const agent = "9b2c7a1e-0000-4000-8000-00000000a9e7"
	issueUpdate := editJSON(t, readFixture(t, "zulip-linear/issue_update.json"), func(m map[string]any) {
		obj(m, "updatedFrom")["assigneeId"] = obj(m, "data")["assigneeId"]
		obj(m, "data")["assigneeId"] = agent
		obj(m, "data")["assignee"] = map[string]any{"id": agent, "name": "Nightshift"}
	})
	agentComment := editJSON(t, readFixture(t, "zulip-linear/comment_create.json"), func(m map[string]any) {
		obj(m, "data")["body"] = "@nightshift finished, see the pull request"
		obj(m, "data")["userId"] = agent
		obj(m, "data", "user")["id"] = agent
	})
	issueLabelled := editJSON(t, readFixture(t, "zulip-linear/issue_create_simple.json"), func(m map[string]any) {
		obj(m, "data")["labels"] = []any{map[string]any{"id": "l1", "name": "nightshift"}}
	})
	linComment := editJSON(t, readFixture(t, "zulip-linear/comment_create.json"), func(m map[string]any) {
		obj(m, "data")["body"] = "> @nightshift quoted does not count\n\n@nightshift write the postmortem draft"
	})
	cmd := url.Values{
		"command": {"/nightshift"}, "text": {"acme/app fix the flaky login test"}, "user_id": {"U2CERLKJA"},
		"user_name": {"roadrunner"}, "trigger_id": {"398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"},
		"team_id": {"T1DC2JH3J"}, "channel_id": {"G8PSS9T3V"},
	}
	action := url.Values{"payload": {`{"type":"block_actions","trigger_id":"13345224609.738474920.8088930838d88f008e0","user":{"id":"U2CERLKJA","username":"roadrunner"},"actions":[{"action_id":"cancel","block_id":"b","value":"01JTASKID0000000000000000","type":"button","action_ts":"1531420700.000100"}]}`}}
	planted := editJSON(t, setBody(comment, "comment", "@nightshift run the tests"), func(m map[string]any) {
		obj(m, "repository")["clone_url"] = "file:///tmp/planted.git"
		obj(m, "repository")["html_url"] = "/tmp/planted"
	})
	localCmd := url.Values{"command": {"/nightshift"}, "text": {"file:///tmp/planted.git run the tests"}, "user_id": {"U2CERLKJA"},
		"trigger_id": {"398738663015.47445629121.local"}}
	// Pull request life: feedback from a writer and the close, merged or not.
	byWriter := func(b []byte, key string, edit func(m map[string]any)) []byte {
		return editJSON(t, b, func(m map[string]any) {
			obj(m, key, "user")["login"] = "writer"
			if edit != nil {
				edit(m)
			}
		})
	}
	changes := byWriter(readFixture(t, "octokit-webhooks/pull_request_review.submitted.json"), "review", func(m map[string]any) {
		obj(m, "review")["state"] = "changes_requested"
		obj(m, "review")["body"] = "Please keep the emoji out of the heading."
	})
	approved := editJSON(t, readFixture(t, "octokit-webhooks/pull_request_review.submitted.json"), func(m map[string]any) {
		obj(m, "review")["state"] = "approved"
	})
	reviewFeedback := byWriter(review, "comment", nil)
	prFeedback := byWriter(setBody(prComment, "comment", "Looks close; please also handle a nil route."), "comment", nil)
	closed := func(merged bool) []byte {
		return editJSON(t, readFixture(t, "octokit-webhooks/pull_request.opened.json"), func(m map[string]any) {
			m["action"] = "closed"
			obj(m, "pull_request")["state"] = "closed"
			obj(m, "pull_request")["merged"] = merged
		})
	}
	const slackSecret = "8f742231b10e8888abcd99yyyzzz85a5"
	return []goldenCase{
		githubCase("derived.pull_request_review.changes_requested", "pull_request_review", changes),
		githubCase("derived.pull_request_review.approved", "pull_request_review", approved),
		githubCase("derived.pull_request_review_comment.feedback", "pull_request_review_comment", reviewFeedback),
		githubCase("derived.issue_comment.on-pr.feedback", "issue_comment", prFeedback),
		githubCase("derived.pull_request.closed.merged", "pull_request", closed(true)),
		githubCase("derived.pull_request.closed.unmerged", "pull_request", closed(false)),
		githubCase("derived.issue_comment.trigger", "issue_comment", setBody(comment, "comment", "Thanks!\n\n@nightshift fix the spelling of `commit` in README")),
		githubCase("derived.issue_comment.trigger-in-code-and-quote", "issue_comment", setBody(comment, "comment", "> @nightshift do it\n\n```\n@nightshift run\n```\nsee `@nightshift` docs")),
		githubCase("derived.issue_comment.on-pr.slash", "issue_comment", setBody(prComment, "comment", "/nightshift add a test for the route")),
		githubCase("derived.pull_request_review_comment.trigger", "pull_request_review_comment", setBody(review, "comment", "@NightShift: use more emoji on this line")),
		githubCase("derived.issues.labeled.nightshift", "issues", labeled),
		githubCase("derived.workflow_run.timed_out.with-pull-requests", "workflow_run", wfPR),
		githubCase("derived.status.error", "status", status),
		linearCase("derived.linear.issue_update.assigned", issueUpdate),
		linearCase("derived.linear.issue_create.labelled", issueLabelled),
		linearCase("derived.linear.comment.mention", linComment),
		linearCase("derived.linear.comment.by-agent", agentComment),
		slackCase("derived.slack.command", "/hooks/slack/commands", []byte(cmd.Encode()), slackSecret, 1531420618),
		githubCase("derived.issue_comment.planted-clone-url", "issue_comment", planted),
		slackCase("derived.slack.command.local-repo", "/hooks/slack/commands", []byte(localCmd.Encode()), slackSecret, 1531420618),
		slackCase("derived.slack.interaction.cancel", "/hooks/slack/interactions", []byte(action.Encode()), slackSecret, 1531420618),
	}
}

func TestGolden(t *testing.T) {
	api, _ := fakeGitHubAPI(t)
	hs := newHarness(t, func(c *Config) { c.GitHub.APIURL, c.GitHub.GitURL = api.URL, "https://github.com/" })
	cases := append(fixtureCases(t), derivedCases(t)...)
	seen := map[string]bool{}
	for _, c := range cases {
		if seen[c.name] {
			t.Fatalf("duplicate case name %s", c.name)
		}
		seen[c.name] = true
		t.Run(c.name, func(t *testing.T) {
			hs.t = t
			_, before := hs.lastEvent()
			got := hs.do(c.req(hs))
			g := golden{Status: got.Status, Response: got.Body}
			if ev, after := hs.lastEvent(); after > before {
				if got.Status >= 300 || (got.Body["status"] != "accepted" && got.Body["response_type"] != "ephemeral") {
					t.Fatalf("event published but answer is %d %v", got.Status, got.Body)
				}
				sum := sha256.Sum256(ev.Raw)
				g.RawSHA256 = hex.EncodeToString(sum[:])
				ev.Raw = nil
				g.Event = ev
			} else if got.Body["status"] == "accepted" {
				t.Fatalf("answered accepted but nothing was published")
			}
			if got.Status >= 500 {
				t.Fatalf("5xx: %d %v", got.Status, got.Body)
			}
			compareGolden(t, "testdata/"+c.name+".golden.json", g)
		})
	}
}

func compareGolden(t *testing.T, path string, v any) {
	t.Helper()
	got, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from golden file (run go test -update to accept):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}
