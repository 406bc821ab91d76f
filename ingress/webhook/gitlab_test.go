package webhook

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nightshift/nightshift/orchestrator"
)

// gitlabFixtures holds real GitLab payloads (see testdata/gitlab/README.md
// for sources and licences).
const gitlabFixtures = "testdata/gitlab"

// gitlabManifestEntry is one row of testdata/gitlab/manifest.json.
type gitlabManifestEntry struct {
	File        string `json:"file"`
	Provider    string `json:"provider"`
	EventHeader string `json:"event_header"`
	SourceURL   string `json:"source_url"`
	Licence     string `json:"licence"`
	SHA256      string `json:"sha256"`
	Bytes       int    `json:"bytes"`
}

func gitlabManifest(t testing.TB) []gitlabManifestEntry {
	t.Helper()
	var m []gitlabManifestEntry
	if err := json.Unmarshal(readGitLabFixture(t, "manifest.json"), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func readGitLabFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(gitlabFixtures, name))
	if err != nil {
		t.Fatalf("fixture %s: %v", name, err)
	}
	return b
}

func TestGitLabFixturesMatchManifest(t *testing.T) {
	t.Parallel()
	m := gitlabManifest(t)
	if len(m) < 6 {
		t.Fatalf("manifest lists only %d files", len(m))
	}
	for _, e := range m {
		b := readGitLabFixture(t, e.File)
		sum := sha256.Sum256(b)
		if hex.EncodeToString(sum[:]) != e.SHA256 || len(b) != e.Bytes {
			t.Errorf("%s does not match the manifest", e.File)
		}
		if e.Provider != "gitlab" || e.EventHeader == "" || !strings.HasPrefix(e.SourceURL, "https://") || e.Licence == "" {
			t.Errorf("%s: manifest entry lacks provider, event header, source or licence: %+v", e.File, e)
		}
	}
}

// gitlabTestOptions is a GitLab at git.example.com whose bot is
// nightshift-bot.
var gitlabTestOptions = SourceOptions{Host: "git.example.com", GitURL: "https://git.example.com/", Trigger: "@nightshift",
	Label: "nightshift", BotLogin: "nightshift-bot"}

func gitlabHeader(event string) http.Header {
	h := http.Header{}
	h.Set("X-Gitlab-Event", event)
	return h
}

// gitlabGolden is what a GitLab golden file holds.
type gitlabGolden struct {
	Error      string              `json:"error,omitempty"`
	Ignore     string              `json:"ignore,omitempty"`
	Auth       string              `json:"auth,omitempty"`
	AttemptKey string              `json:"attempt_key,omitempty"`
	Event      *orchestrator.Event `json:"event,omitempty"`
	Answer     *SourceComment      `json:"answer,omitempty"`
}

type gitlabCase struct {
	name, event string
	body        []byte
}

// derivedGitLabCases are fixtures edited to reach the paths the verbatim
// payloads do not (a trigger in a note, a failed pipeline, a merge, ...).
func derivedGitLabCases(t *testing.T) []gitlabCase {
	f := func(name string) []byte { return readGitLabFixture(t, "client-go/"+name+".json") }
	attrs := func(name string, edit func(a, m map[string]any)) []byte {
		return editJSON(t, f(name), func(m map[string]any) { edit(obj(m, "object_attributes"), m) })
	}
	note := func(name, text string) []byte {
		return attrs(name, func(a, _ map[string]any) { a["note"], a["description"] = text, text })
	}
	failedPipeline := attrs("pipeline", func(a, _ map[string]any) { a["status"], a["detailed_status"] = "failed", "failed" })
	branchPipeline := attrs("pipeline", func(a, m map[string]any) {
		a["status"], a["ref"], a["source"] = "failed", "feature/login", "push"
		delete(m, "merge_request")
	})
	failedJob := editJSON(t, f("job"), func(m map[string]any) { m["build_status"], m["build_failure_reason"] = "failed", "script_failure" })
	mrJob := editJSON(t, f("job"), func(m map[string]any) { m["build_status"], m["ref"] = "failed", "refs/merge-requests/7/head" })
	allowedJob := editJSON(t, failedJob, func(m map[string]any) { m["build_allow_failure"] = true })
	labeled := editJSON(t, f("issue"), func(m map[string]any) {
		cur := obj(m, "changes", "labels")["current"].([]any)
		obj(m, "changes", "labels")["current"] = append(cur, map[string]any{"id": 301, "title": "NightShift"})
		obj(m, "object_attributes")["action"] = "update"
	})
	assigned := editJSON(t, f("issue"), func(m map[string]any) {
		delete(obj(m, "changes"), "labels")
		obj(m, "changes")["assignees"] = map[string]any{"previous": []any{}, "current": []any{map[string]any{"username": "nightshift-bot", "name": "Nightshift"}}}
		obj(m, "object_attributes")["action"] = "update"
	})
	labelKept := editJSON(t, labeled, func(m map[string]any) {
		prev := obj(m, "changes", "labels")["previous"].([]any)
		obj(m, "changes", "labels")["previous"] = append(prev, map[string]any{"id": 301, "title": "nightshift"})
	})
	confidential := editJSON(t, labeled, func(m map[string]any) { obj(m, "object_attributes")["confidential"] = true })
	merged := attrs("merge_request", func(a, _ map[string]any) { a["action"], a["state"] = "merge", "merged" })
	closed := attrs("merge_request", func(a, _ map[string]any) { a["action"], a["state"] = "close", "closed" })
	planted := editJSON(t, note("note_issue", "@nightshift run the tests"), func(m map[string]any) {
		obj(m, "project")["path_with_namespace"] = "../../tmp/planted"
	})
	cloneURL := editJSON(t, note("note_issue", "@nightshift run the tests"), func(m map[string]any) {
		obj(m, "project")["git_http_url"] = "file:///tmp/planted.git"
		obj(m, "project")["web_url"] = "/tmp/planted"
	})
	byBot := editJSON(t, note("note_issue", "@nightshift loop"), func(m map[string]any) { obj(m, "user")["username"] = "project_5_bot_3f2a9c" })
	return []gitlabCase{
		{"derived.note.issue.trigger", glNoteHook, note("note_issue", "Thanks!\n\n@nightshift fix the login redirect in `auth.go`")},
		{"derived.note.issue.trigger-in-code-and-quote", glNoteHook, note("note_issue", "> @nightshift do it\n\n```\n@nightshift run\n```\nsee `@nightshift` docs")},
		{"derived.note.merge_request.slash", glNoteHook, note("note_merge_request", "/nightshift add a test for the viewport")},
		{"derived.note.issue.edited", glNoteHook, attrs("note_issue", func(a, _ map[string]any) { a["note"], a["action"] = "@nightshift go", "update" })},
		{"derived.note.issue.internal", glNoteHook, attrs("note_issue", func(a, _ map[string]any) { a["note"], a["internal"] = "@nightshift go", true })},
		{"derived.note.issue.system", glNoteHook, attrs("note_issue", func(a, _ map[string]any) { a["note"], a["system"] = "@nightshift go", true })},
		{"derived.note.issue.by-token-bot", glNoteHook, byBot},
		{"derived.note.confidential", glConfidentialNote, note("note_issue", "@nightshift go")},
		{"derived.note.planted-path", glNoteHook, planted},
		{"derived.note.planted-clone-url", glNoteHook, cloneURL},
		{"derived.issue.labeled", glIssueHook, labeled},
		{"derived.issue.label-kept", glIssueHook, labelKept},
		{"derived.issue.assigned-to-bot", glIssueHook, assigned},
		{"derived.issue.confidential", glIssueHook, confidential},
		{"derived.merge_request.merged", glMergeRequestHook, merged},
		{"derived.merge_request.closed", glMergeRequestHook, closed},
		{"derived.pipeline.failed.merge-request", glPipelineHook, failedPipeline},
		{"derived.pipeline.failed.branch", glPipelineHook, branchPipeline},
		{"derived.job.failed", glJobHook, failedJob},
		{"derived.job.failed.merge-request-ref", glJobHook, mrJob},
		{"derived.job.failed.allowed", glJobHook, allowedJob},
		{"derived.wrong-object-kind", glPipelineHook, f("job")},
		{"derived.not-json", glPushHookForTest, []byte("{not json")},
	}
}

const glPushHookForTest = "Push Hook"

// TestGitLabGolden normalizes every fixture as is and every derived case,
// and compares the outcome with testdata/gitlab/<name>.golden.json.
func TestGitLabGolden(t *testing.T) {
	t.Parallel()
	var cases []gitlabCase
	for _, e := range gitlabManifest(t) {
		name := "fixture." + strings.NewReplacer("/", ".", ".json", "").Replace(e.File)
		cases = append(cases, gitlabCase{name, e.EventHeader, readGitLabFixture(t, e.File)})
	}
	cases = append(cases, derivedGitLabCases(t)...)
	seen := map[string]bool{}
	for _, c := range cases {
		if seen[c.name] {
			t.Fatalf("duplicate case %s", c.name)
		}
		seen[c.name] = true
		t.Run(c.name, func(t *testing.T) {
			res, err := GitLabSource().Normalize(gitlabHeader(c.event), c.body, gitlabTestOptions)
			g := gitlabGolden{}
			if err != nil {
				var mal *MalformedError
				if !errors.As(err, &mal) {
					t.Fatalf("error %v is not a MalformedError (400)", err)
				}
				g.Error = err.Error()
			} else {
				n := 0
				for _, set := range []bool{res.Event != nil, res.Answer != nil, res.Ignore != ""} {
					if set {
						n++
					}
				}
				if n != 1 {
					t.Fatalf("want exactly one of event, answer, ignore: %+v", res)
				}
				g.Ignore, g.AttemptKey, g.Event, g.Answer = res.Ignore, res.AttemptKey, res.Event, res.Answer
				g.Auth = map[AuthKind]string{AuthNone: "", AuthComment: "comment", AuthLabel: "label"}[res.Auth]
				if ev := res.Event; ev != nil {
					if ev.IdempotencyKey == "" || !strings.HasPrefix(ev.IdempotencyKey, "gitlab:") || ev.Kind == "" {
						t.Fatalf("event without kind or gitlab: idempotency key: %+v", ev)
					}
					if !strings.HasPrefix(ev.Repo, gitlabTestOptions.GitURL) || !strings.HasSuffix(ev.Repo, ".git") {
						t.Fatalf("repo %q is not on the configured git_url", ev.Repo)
					}
				}
			}
			compareGolden(t, filepath.Join(gitlabFixtures, c.name+".golden.json"), g)
		})
	}
}

// TestGitLabPipelineAndJobShareTheKey: the pipeline's failure hook and the
// hooks of its failed jobs are one failure: one semantic key, one attempt
// counter (the merge request's source branch).
func TestGitLabPipelineAndJobShareTheKey(t *testing.T) {
	t.Parallel()
	pl := editJSON(t, readGitLabFixture(t, "client-go/pipeline.json"), func(m map[string]any) {
		obj(m, "object_attributes")["status"] = "failed"
		obj(m, "object_attributes")["id"] = 4242
	})
	job := editJSON(t, readGitLabFixture(t, "client-go/job.json"), func(m map[string]any) {
		m["build_status"], m["pipeline_id"], m["ref"] = "failed", 4242, "test"
	})
	a, err := GitLabSource().Normalize(gitlabHeader(glPipelineHook), pl, gitlabTestOptions)
	if err != nil || a.Event == nil {
		t.Fatalf("pipeline: %+v %v", a, err)
	}
	b, err := GitLabSource().Normalize(gitlabHeader(glJobHook), job, gitlabTestOptions)
	if err != nil || b.Event == nil {
		t.Fatalf("job: %+v %v", b, err)
	}
	if a.Event.IdempotencyKey != b.Event.IdempotencyKey || a.AttemptKey != b.AttemptKey {
		t.Fatalf("pipeline %q %q, job %q %q", a.Event.IdempotencyKey, a.AttemptKey, b.Event.IdempotencyKey, b.AttemptKey)
	}
	if a.AttemptKey != "git.example.com/gitlab-org/gitlab-test@test" {
		t.Fatalf("attempt key %q", a.AttemptKey)
	}
}

func TestVerifyGitLab(t *testing.T) {
	t.Parallel()
	// The token of client-go's own webhook parsing test.
	const token = "798d3dd3-67f5-41df-ad19-7882cc6263bf"
	for _, c := range []struct {
		secrets []string
		header  string
		want    error
	}{
		{[]string{token}, token, nil},
		{[]string{"old-rotated", token}, token, nil},
		{[]string{token, "new"}, "new", nil},
		{nil, token, ErrNoSecret},
		{[]string{""}, "", ErrMissingSignature},
		{[]string{token}, "", ErrMissingSignature},
		{[]string{token}, token + "x", ErrBadSignature},
		{[]string{token}, token[:len(token)-1], ErrBadSignature},
		{[]string{""}, "anything", ErrBadSignature},
		{[]string{token}, strings.ToUpper(token), ErrBadSignature},
	} {
		if err := VerifyGitLab(c.secrets, c.header); !errors.Is(err, c.want) && !(c.want == nil && err == nil) {
			t.Errorf("VerifyGitLab(%q, %q) = %v, want %v", c.secrets, c.header, err, c.want)
		}
		if c.want != nil {
			if status, _ := statusOf(VerifyGitLab(c.secrets, c.header)); status != http.StatusUnauthorized {
				t.Errorf("VerifyGitLab(%q, %q) answers %d, want 401", c.secrets, c.header, status)
			}
		}
	}
	h := http.Header{}
	h.Set("X-Gitlab-Token", token)
	if err := GitLabSource().Verify(h, nil, []string{token}); err != nil {
		t.Fatalf("Source.Verify: %v", err)
	}
}

func TestGitLabDeliveryID(t *testing.T) {
	t.Parallel()
	h := http.Header{}
	if id := GitLabSource().DeliveryID(h); id != "" {
		t.Fatalf("no headers: %q", id)
	}
	h.Set("X-Gitlab-Event-UUID", "13792a34-cac6-4fda-95a8-c58e00a3954e")
	if id := GitLabSource().DeliveryID(h); id != "13792a34-cac6-4fda-95a8-c58e00a3954e" {
		t.Fatalf("event uuid: %q", id)
	}
	// Idempotency-Key is the same on GitLab's retries: it wins.
	h.Set("Idempotency-Key", "f5e5f430-f57b-4e6e-9fac-d9128cd7232f")
	if id := GitLabSource().DeliveryID(h); id != "f5e5f430-f57b-4e6e-9fac-d9128cd7232f" {
		t.Fatalf("idempotency key: %q", id)
	}
	h.Set("Idempotency-Key", strings.Repeat("x", 300))
	if id := GitLabSource().DeliveryID(h); id != "13792a34-cac6-4fda-95a8-c58e00a3954e" {
		t.Fatalf("overlong idempotency key used: %q", id)
	}
}

func BenchmarkNormalizeGitLab(b *testing.B) {
	body := editJSON(b, readGitLabFixture(b, "client-go/note_issue.json"), func(m map[string]any) {
		obj(m, "object_attributes")["note"] = "@nightshift fix it"
	})
	h := gitlabHeader(glNoteHook)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		res, err := GitLabSource().Normalize(h, body, gitlabTestOptions)
		if err != nil || res.Event == nil {
			b.Fatal(err, res.Ignore)
		}
	}
}

func BenchmarkVerifyGitLab(b *testing.B) {
	secrets := []string{"old-rotated-secret", "798d3dd3-67f5-41df-ad19-7882cc6263bf"}
	for b.Loop() {
		if err := VerifyGitLab(secrets, secrets[1]); err != nil {
			b.Fatal(err)
		}
	}
}
