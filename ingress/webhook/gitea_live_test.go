package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/forge/gitea/giteatest"
)

var captureGitea = flag.Bool("capture-gitea", false, "rewrite testdata/gitea/ from the deliveries of a real Gitea")

// giteaFixtureSecret signs the deliveries captured into testdata/gitea.
const giteaFixtureSecret = "gitea-fixture-secret"

// delivery is one request a real Gitea sent to a test listener.
type delivery struct {
	Header http.Header
	Body   []byte
}

// hookRecorder is an HTTP listener recording what Gitea posts to it.
type hookRecorder struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []delivery
}

func newHookRecorder(t *testing.T) *hookRecorder {
	rec := &hookRecorder{}
	rec.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.got = append(rec.got, delivery{Header: r.Header.Clone(), Body: body})
		rec.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(rec.srv.Close)
	return rec
}

// wait returns the first delivery after the first skip ones for which
// match holds.
func (rec *hookRecorder) wait(t *testing.T, what string, from int, match func(d delivery) bool) (delivery, int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		rec.mu.Lock()
		got := append([]delivery(nil), rec.got...)
		rec.mu.Unlock()
		for i := from; i < len(got); i++ {
			if match(got[i]) {
				return got[i], i + 1
			}
		}
		if time.Now().After(deadline) {
			var seen []string
			for _, d := range got[from:] {
				seen = append(seen, d.Header.Get("X-Gitea-Event-Type"))
			}
			t.Fatalf("no %s delivery from Gitea within 60s; saw %v", what, seen)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func eventType(typ string) func(d delivery) bool {
	return func(d delivery) bool { return d.Header.Get("X-Gitea-Event-Type") == typ }
}

// giteaFixtureOpts is how the fixtures are normalized (golden and live).
func giteaFixtureOpts(gitURL string) SourceOptions {
	return SourceOptions{Host: "127.0.0.1", GitURL: gitURL, Trigger: "@nightshift", Label: "nightshift", BotLogin: "nightshift"}
}

// giteaStep is one thing done on the real Gitea and the delivery it must
// produce, normalized as want says.
type giteaStep struct {
	name  string // fixture name
	typ   string // X-Gitea-Event-Type
	do    func(ctx context.Context) error
	match func(d delivery) bool // narrows deliveries of typ (nil: any)
	check func(t *testing.T, res SourceResult)
}

// TestGiteaLiveDeliveries drives a real Gitea (comments, labels, a pull
// request, statuses, a review, a merge) with a webhook pointing at a
// recorder, and checks that every delivery verifies with the webhook's
// secret and normalizes to the expected event. With -capture-gitea the
// deliveries become testdata/gitea/ (body verbatim, headers and the
// signature Gitea computed in the manifest).
func TestGiteaLiveDeliveries(t *testing.T) {
	s := giteatest.New(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	rec := newHookRecorder(t)
	const owner, name = "nsadmin", "hello-gitea"
	if owner != s.Admin {
		t.Fatalf("admin is %s", s.Admin)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.CreateRepo(ctx, owner, name)
	must(err)
	must(s.EnsureUser(ctx, "alice"))
	must(s.AddCollaborator(ctx, owner, name, "alice", "write"))
	hook, err := s.CreateHook(ctx, owner, name, rec.srv.URL+"/hooks/gitea", giteaFixtureSecret, nil)
	must(err)
	if !hook.Active {
		t.Fatalf("hook %+v is not active", hook)
	}
	var issue, pr, pr2 int
	var head string
	steps := []giteaStep{
		{name: "issues.opened", typ: "issues", do: func(ctx context.Context) (err error) {
			issue, err = s.CreateIssue(ctx, "alice", owner, name, "Typo in README", "The README says Helo.")
			return err
		}, check: wantIgnored("does not carry label")},
		{name: "issue_comment.created.trigger", typ: "issue_comment", do: func(ctx context.Context) error {
			_, err := s.Comment(ctx, "alice", owner, name, issue, "Thanks!\n\n@nightshift fix the typo in `README.md`")
			return err
		}, check: wantEvent(orchestrator.KindComment, AuthComment, "issue", "fix the typo in `README.md`")},
		{name: "issue_comment.created.plain", typ: "issue_comment", do: func(ctx context.Context) error {
			_, err := s.Comment(ctx, "alice", owner, name, issue, "It is on line 1.")
			return err
		}, check: func(t *testing.T, res SourceResult) {
			if res.Answer == nil || res.Answer.Body != "It is on line 1." || res.Answer.Target.Number != issue || res.Answer.Actor.Login != "alice" {
				t.Fatalf("plain issue comment: %+v", res)
			}
		}},
		{name: "issues.label_updated.nightshift", typ: "issue_label", do: func(ctx context.Context) error {
			return s.AddLabel(ctx, "alice", owner, name, issue, "nightshift")
		}, check: wantEvent(orchestrator.KindIssueLabeled, AuthLabel, "issue", "Typo in README\n\nThe README says Helo.")},
		{name: "pull_request.opened", typ: "pull_request", do: func(ctx context.Context) (err error) {
			head, err = s.CommitFiles(ctx, owner, name, "fix-typo", "main", map[string]string{"README.md": "# Hello\n"})
			if err != nil {
				return err
			}
			pr, err = openPR(ctx, s, owner, name, "fix-typo", "Fix the typo")
			return err
		}, check: wantIgnored("pull_request opened")},
		{name: "issue_comment.created.on-pr.feedback", typ: "pull_request_comment", do: func(ctx context.Context) error {
			_, err := s.Comment(ctx, "alice", owner, name, pr, "Please also fix the title.")
			return err
		}, check: wantEvent(orchestrator.KindPRFeedback, AuthComment, "pull_request", "Comment from @alice on the pull request:\n\nPlease also fix the title.")},
		{name: "issue_comment.created.on-pr.trigger", typ: "pull_request_comment", do: func(ctx context.Context) error {
			_, err := s.Comment(ctx, "alice", owner, name, pr, "/nightshift add a test")
			return err
		}, check: wantEvent(orchestrator.KindComment, AuthComment, "pull_request", "add a test")},
		{name: "status.failure", typ: "status", do: func(ctx context.Context) error {
			return s.SetStatus(ctx, owner, name, head, "failure", "ci/unit", "2 tests failed")
		}, match: func(d delivery) bool { return strings.Contains(string(d.Body), `"state": "failure"`) },
			check: wantEvent(orchestrator.KindCIFailed, AuthNone, "commit", `Status "ci/unit" is failure: 2 tests failed`)},
		{name: "status.success", typ: "status", do: func(ctx context.Context) error {
			return s.SetStatus(ctx, owner, name, head, "success", "ci/unit", "all good")
		}, match: func(d delivery) bool { return strings.Contains(string(d.Body), `"state": "success"`) },
			check: wantIgnored("status success")},
		{name: "pull_request_rejected.reviewed", typ: "pull_request_review_rejected", do: func(ctx context.Context) error {
			return s.Do(ctx, http.MethodPost, fmt.Sprintf("repos/%s/%s/pulls/%d/reviews", owner, name, pr), "alice",
				map[string]any{"event": "REQUEST_CHANGES", "body": "Use a heading, not bold."}, nil)
		}, check: wantEvent(orchestrator.KindPRFeedback, AuthComment, "pull_request", "Review (changes requested) from @alice:\n\nUse a heading, not bold.")},
		{name: "pull_request_comment.reviewed", typ: "pull_request_review_comment", do: func(ctx context.Context) error {
			return s.Do(ctx, http.MethodPost, fmt.Sprintf("repos/%s/%s/pulls/%d/reviews", owner, name, pr), "alice",
				map[string]any{"event": "COMMENT", "body": "Nit: end the file with a newline."}, nil)
		}, check: wantEvent(orchestrator.KindPRFeedback, AuthComment, "pull_request", "Review (comment) from @alice:\n\nNit: end the file with a newline.")},
		{name: "workflow_run.completed.failure", typ: "workflow_run", do: func(ctx context.Context) error {
			// A workflow on the pull request's branch; the stand-in runner
			// fails its jobs (the push run and the pull request run).
			runner, err := s.Runner(ctx)
			if err != nil {
				return err
			}
			path, wf := giteatest.Workflow("CI", "unit-tests")
			if _, err := s.CommitFiles(ctx, owner, name, "fix-typo", "", map[string]string{path: wf}); err != nil {
				return err
			}
			for range 2 {
				if _, err := runner.Finish(ctx, "failure", "--- FAIL: TestReadme (0.00s)\nFAIL"); err != nil {
					return err
				}
			}
			return nil
		}, match: func(d delivery) bool {
			return strings.Contains(string(d.Body), `"conclusion": "failure"`) && strings.Contains(string(d.Body), `"event": "pull_request"`)
		}, check: wantEvent(orchestrator.KindCIFailed, AuthNone, "pull_request", `Workflow "CI" failed (failure, attempt 1)`)},
		{name: "pull_request.closed.merged", typ: "pull_request", do: func(ctx context.Context) error {
			return s.Merge(ctx, owner, name, pr)
		}, match: func(d delivery) bool { return strings.Contains(string(d.Body), `"action": "closed"`) },
			check: wantEvent(orchestrator.KindPRMerged, AuthNone, "pull_request", "merged")},
		{name: "pull_request.closed.unmerged", typ: "pull_request", do: func(ctx context.Context) (err error) {
			if _, err = s.CommitFiles(ctx, owner, name, "abandon", "main", map[string]string{"x.txt": "x\n"}); err != nil {
				return err
			}
			if pr2, err = openPR(ctx, s, owner, name, "abandon", "Abandoned idea"); err != nil {
				return err
			}
			return s.Do(ctx, http.MethodPatch, fmt.Sprintf("repos/%s/%s/pulls/%d", owner, name, pr2), "", map[string]string{"state": "closed"}, nil)
		}, match: func(d delivery) bool { return strings.Contains(string(d.Body), `"action": "closed"`) },
			check: wantEvent(orchestrator.KindPRClosed, AuthNone, "pull_request", "pull request closed")},
	}
	opt := giteaFixtureOpts(s.URL)
	next := 0
	var captured []giteaFixture
	for _, st := range steps {
		if err := st.do(ctx); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		match := eventType(st.typ)
		if st.match != nil {
			m := st.match
			match = func(d delivery) bool { return eventType(st.typ)(d) && m(d) }
		}
		d, n := rec.wait(t, st.name, next, match)
		next = n
		t.Run(st.name, func(t *testing.T) {
			src := GiteaSource{}
			if err := src.Verify(d.Header, d.Body, []string{"rotated-away", giteaFixtureSecret}); err != nil {
				t.Fatalf("Gitea's signature does not verify: %v", err)
			}
			if err := src.Verify(d.Header, d.Body, []string{"wrong"}); err == nil {
				t.Fatal("verified with the wrong secret")
			}
			if id := src.DeliveryID(d.Header); id == "" {
				t.Fatal("no delivery id")
			}
			res, err := src.Normalize(d.Header, d.Body, opt)
			if err != nil {
				t.Fatalf("normalize: %v", err)
			}
			if res.Event != nil && res.Event.Repo != s.URL+owner+"/"+name+".git" {
				t.Fatalf("repo %s", res.Event.Repo)
			}
			st.check(t, res)
		})
		captured = append(captured, giteaFixture{
			File: "gitea/" + st.name + ".json", Event: d.Header.Get("X-Gitea-Event"), EventType: d.Header.Get("X-Gitea-Event-Type"),
			Delivery: d.Header.Get("X-Gitea-Delivery"), Signature: d.Header.Get("X-Gitea-Signature"), GitURL: s.URL, body: d.Body,
		})
	}
	if *captureGitea {
		writeGiteaFixtures(t, captured)
	}
}

func openPR(ctx context.Context, s *giteatest.Server, owner, name, head, title string) (int, error) {
	var out struct {
		Number int `json:"number"`
	}
	err := s.Do(ctx, http.MethodPost, fmt.Sprintf("repos/%s/%s/pulls", owner, name), "",
		map[string]string{"head": head, "base": "main", "title": title, "body": "Fixes the typo."}, &out)
	return out.Number, err
}

func wantIgnored(reason string) func(t *testing.T, res SourceResult) {
	return func(t *testing.T, res SourceResult) {
		t.Helper()
		if res.Event != nil || res.Answer != nil || !strings.Contains(res.Ignore, reason) {
			t.Fatalf("want ignored (%s), got %+v", reason, res)
		}
	}
}

func wantEvent(kind string, auth AuthKind, targetType, instruction string) func(t *testing.T, res SourceResult) {
	return func(t *testing.T, res SourceResult) {
		t.Helper()
		ev := res.Event
		if ev == nil {
			t.Fatalf("want %s, got %+v", kind, res)
		}
		if ev.Kind != kind || res.Auth != auth || ev.Target.Type != targetType || !strings.HasPrefix(ev.Instruction, instruction) || ev.IdempotencyKey == "" {
			t.Fatalf("want %s/%d on %s %q, got %s/%d on %+v %q (key %q)", kind, auth, targetType, instruction,
				ev.Kind, res.Auth, ev.Target, ev.Instruction, ev.IdempotencyKey)
		}
		if kind == orchestrator.KindCIFailed && res.AttemptKey == "" {
			t.Fatal("CI failure without an attempt key")
		}
	}
}

// giteaFixture is one row of testdata/gitea/manifest.json.
type giteaFixture struct {
	File      string `json:"file"`
	Provider  string `json:"provider"`
	Event     string `json:"event_header"`
	EventType string `json:"event_type_header"`
	Delivery  string `json:"delivery_header"`
	// Signature is X-Gitea-Signature as Gitea computed it with
	// giteaFixtureSecret.
	Signature string `json:"signature_header"`
	Secret    string `json:"secret"`
	// GitURL is the Gitea the delivery came from (its root URL).
	GitURL  string `json:"git_url"`
	Source  string `json:"source"`
	Licence string `json:"licence"`
	SHA256  string `json:"sha256"`
	Bytes   int    `json:"bytes"`

	body    []byte
	forgejo bool // delivered with the X-Forgejo-* headers
}

func writeGiteaFixtures(t *testing.T, fs []giteaFixture) {
	t.Helper()
	dir := filepath.Join("testdata", "gitea")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range fs {
		f := &fs[i]
		sum := sha256.Sum256(f.body)
		f.Provider, f.Secret, f.SHA256, f.Bytes = "gitea", giteaFixtureSecret, hex.EncodeToString(sum[:]), len(f.body)
		f.Source = fmt.Sprintf("captured from a real Gitea %s (built from code.gitea.io/gitea@%s) by TestGiteaLiveDeliveries -capture-gitea: the body Gitea posted, verbatim",
			giteatest.Version, giteatest.Version)
		f.Licence = "MIT (Gitea's own output; Gitea is MIT licensed)"
		if err := os.WriteFile(filepath.Join("testdata", f.File), f.body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := json.MarshalIndent(fs, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}
