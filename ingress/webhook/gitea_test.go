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

// giteaManifest reads testdata/gitea/manifest.json and checks every
// fixture against its recorded digest.
func giteaManifest(t testing.TB) []giteaFixture {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "gitea", "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fs []giteaFixture
	if err := json.Unmarshal(b, &fs); err != nil {
		t.Fatal(err)
	}
	for i := range fs {
		f := &fs[i]
		if f.body, err = os.ReadFile(filepath.Join("testdata", f.File)); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(f.body)
		if hex.EncodeToString(sum[:]) != f.SHA256 || len(f.body) != f.Bytes {
			t.Fatalf("%s does not match its manifest digest", f.File)
		}
		if f.Licence == "" || f.Source == "" {
			t.Fatalf("%s has no source or licence in the manifest", f.File)
		}
	}
	return fs
}

// header is the header set a fixture was delivered with.
func (f giteaFixture) header() http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("X-Gitea-Event", f.Event)
	h.Set("X-Gitea-Event-Type", f.EventType)
	h.Set("X-Gitea-Delivery", f.Delivery)
	h.Set("X-Gitea-Signature", f.Signature)
	return h
}

// giteaGolden is what a golden file of a Gitea fixture holds.
type giteaGolden struct {
	Verified   bool                `json:"verified"`
	DeliveryID string              `json:"delivery_id"`
	Event      *orchestrator.Event `json:"event,omitempty"`
	Auth       AuthKind            `json:"auth,omitempty"`
	AttemptKey string              `json:"attempt_key,omitempty"`
	Answer     *SourceComment      `json:"answer,omitempty"`
	Ignore     string              `json:"ignore,omitempty"`
}

// giteaDerived are captured fixtures edited to pin edge cases the live
// scenario does not produce.
func giteaDerived(t *testing.T, fs []giteaFixture) map[string]giteaFixture {
	t.Helper()
	by := map[string]giteaFixture{}
	for _, f := range fs {
		by[strings.TrimSuffix(strings.TrimPrefix(f.File, "gitea/"), ".json")] = f
	}
	derive := func(from, event string, edit func(m map[string]any)) giteaFixture {
		f, ok := by[from]
		if !ok {
			t.Fatalf("no fixture %s", from)
		}
		f.body = editJSON(t, f.body, edit)
		f.Signature = SignGitea(giteaFixtureSecret, f.body)
		if event != "" {
			f.Event, f.EventType = event, event
		}
		return f
	}
	out := map[string]giteaFixture{
		// A commit status "error" (Gitea sends error for CI that broke).
		"derived.status.error": derive("status.failure", "", func(m map[string]any) { m["state"] = "error" }),
		// The status Gitea Actions sets for a job: its workflow_run
		// delivery starts the fix, not this.
		"derived.status.failure.actions-job": derive("status.failure", "", func(m map[string]any) {
			m["context"] = "CI / unit-tests (pull_request)"
			m["target_url"] = obj(m, "repository")["html_url"].(string) + "/actions/runs/2/jobs/2"
		}),
		// A comment by Nightshift's own account never triggers.
		"derived.issue_comment.by-nightshift": derive("issue_comment.created.trigger", "", func(m map[string]any) {
			obj(m, "comment", "user")["login"] = "nightshift"
		}),
		// Nightshift's own progress comment on a pull request (its marker
		// says so) is no feedback, even without bot_login configured.
		"derived.issue_comment.on-pr.progress-marker": derive("issue_comment.created.on-pr.feedback", "", func(m map[string]any) {
			obj(m, "comment")["body"] = "🌙 **Nightshift** task `01ABC` is **running**.\n<!-- nightshift:task:01ABC -->"
		}),
		// The trigger only in a quote and in code starts nothing.
		"derived.issue_comment.trigger-in-code-and-quote": derive("issue_comment.created.trigger", "", func(m map[string]any) {
			obj(m, "comment")["body"] = "> @nightshift do it\n\n```\n@nightshift run\n```\nsee `@nightshift` docs"
		}),
		// An edited comment starts nothing.
		"derived.issue_comment.edited": derive("issue_comment.created.trigger", "", func(m map[string]any) { m["action"] = "edited" }),
		// A payload naming a path-like repository is refused, whatever
		// its clone_url says.
		"derived.issue_comment.planted-repo": derive("issue_comment.created.trigger", "", func(m map[string]any) {
			obj(m, "repository")["full_name"] = "../../tmp/planted"
			obj(m, "repository")["clone_url"] = "file:///tmp/planted.git"
		}),
	}
	// A run that passed starts nothing.
	out["derived.workflow_run.completed.success"] = derive("workflow_run.completed.failure", "", func(m map[string]any) {
		obj(m, "workflow_run")["conclusion"] = "success"
	})
	// Forgejo's header spellings.
	fj := by["issue_comment.created.trigger"]
	fj.forgejo = true
	out["derived.forgejo-headers.issue_comment"] = fj
	return out
}

// TestGiteaGolden verifies and normalizes every captured Gitea delivery
// (and the derived ones) and compares the outcome with its golden file.
func TestGiteaGolden(t *testing.T) {
	t.Parallel()
	fs := giteaManifest(t)
	cases := map[string]giteaFixture{}
	for _, f := range fs {
		cases["fixture.gitea."+strings.TrimSuffix(strings.TrimPrefix(f.File, "gitea/"), ".json")] = f
	}
	for name, f := range giteaDerived(t, fs) {
		cases[name] = f
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := f.header()
			if f.forgejo {
				h = http.Header{}
				h.Set("X-Forgejo-Event", f.Event)
				h.Set("X-Forgejo-Event-Type", f.EventType)
				h.Set("X-Forgejo-Delivery", f.Delivery)
				h.Set("X-Forgejo-Signature", f.Signature)
			}
			src := GiteaSource{}
			g := giteaGolden{Verified: src.Verify(h, f.body, []string{"old-secret", giteaFixtureSecret}) == nil, DeliveryID: src.DeliveryID(h)}
			res, err := src.Normalize(h, f.body, giteaFixtureOpts(f.GitURL))
			switch {
			case err != nil:
				g.Ignore = "error: " + err.Error()
			default:
				g.Event, g.Auth, g.AttemptKey, g.Answer, g.Ignore = res.Event, res.Auth, res.AttemptKey, res.Answer, res.Ignore
				n := 0
				for _, set := range []bool{res.Event != nil, res.Answer != nil, res.Ignore != ""} {
					if set {
						n++
					}
				}
				if n != 1 {
					t.Fatalf("want exactly one of event, answer, ignore: %+v", res)
				}
			}
			if !g.Verified {
				t.Fatal("the fixture's signature does not verify")
			}
			compareGolden(t, "testdata/gitea/"+name+".golden.json", g)
		})
	}
}

// TestVerifyGitea: Gitea's signature is the bare hex HMAC-SHA256 of the
// body; any configured secret may match; nothing verifies without a secret
// or header; a tampered body fails.
func TestVerifyGitea(t *testing.T) {
	t.Parallel()
	body := []byte(`{"action":"created"}`)
	sig := SignGitea("s3cret", body)
	for _, c := range []struct {
		name    string
		secrets []string
		header  string
		body    []byte
		want    error
	}{
		{"match", []string{"s3cret"}, sig, body, nil},
		{"rotation", []string{"old", "s3cret"}, sig, body, nil},
		{"sha256= prefix tolerated", []string{"s3cret"}, "sha256=" + sig, body, nil},
		{"no secret", nil, sig, body, ErrNoSecret},
		{"empty secret only", []string{""}, SignGitea("", body), body, ErrBadSignature},
		{"no header", []string{"s3cret"}, "", body, ErrMissingSignature},
		{"other secret", []string{"other"}, sig, body, ErrBadSignature},
		{"tampered", []string{"s3cret"}, sig, []byte(`{"action":"deleted"}`), ErrBadSignature},
		{"not hex", []string{"s3cret"}, "zz" + sig[2:], body, ErrBadSignature},
		{"short", []string{"s3cret"}, sig[:10], body, ErrBadSignature},
	} {
		if err := VerifyGitea(c.secrets, c.header, c.body); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
	// The Forgejo header is read when Gitea's is absent.
	h := http.Header{}
	h.Set("X-Forgejo-Signature", sig)
	if err := (GiteaSource{}).Verify(h, body, []string{"s3cret"}); err != nil {
		t.Errorf("X-Forgejo-Signature: %v", err)
	}
}

// TestNormalizeGiteaMalformed: bodies that are not what their event says
// are errors naming the problem, never events.
func TestNormalizeGiteaMalformed(t *testing.T) {
	t.Parallel()
	opt := giteaFixtureOpts("https://git.example.com/")
	for _, c := range []struct{ event, body, want string }{
		{"issue_comment", `not json`, "decode issue_comment payload"},
		{"push", `not json`, "not JSON"},
		{"issue_comment", `{"action":"created","comment":{"id":1,"body":"@nightshift x","user":{"login":"a"}},"issue":{"number":1}}`, "no repository"},
		{"issue_comment", `{"action":"created","issue":{"number":1},"repository":{"full_name":"a/b"}}`, "no comment"},
		{"issue_comment", `{"action":"created","comment":{"id":1,"body":"@nightshift x","user":{"login":"a"}},"repository":{"full_name":"a/b"}}`, "no issue"},
		{"issue_comment", `{"action":"created","comment":{"id":1,"body":"@nightshift x","user":{"login":"a"}},"issue":{"number":1},"repository":{"full_name":"a/b/c"}}`, "not owner/name"},
		{"status", `{"state":"failure","repository":{"full_name":"a/b"}}`, "no id or sha"},
		{"workflow_run", `{"action":"completed","repository":{"full_name":"a/b"}}`, "no workflow_run"},
		{"pull_request", `{"action":"closed","repository":{"full_name":"a/b"}}`, "no pull_request"},
	} {
		_, err := normalizeGitea(c.event, "", []byte(c.body), opt)
		var mal *MalformedError
		if !errors.As(err, &mal) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %s: err = %v, want malformed %q", c.event, c.body, err, c.want)
		}
	}
	h := http.Header{}
	if _, err := (GiteaSource{}).Normalize(h, []byte(`{}`), opt); err == nil || !strings.Contains(err.Error(), "X-Gitea-Event") {
		t.Errorf("no event header: %v", err)
	}
}

func FuzzVerifyGitea(f *testing.F) {
	f.Add("gitea-fixture-secret", "00", []byte(`{}`))
	if b, err := os.ReadFile(filepath.Join("testdata", "gitea", "manifest.json")); err == nil {
		var fs []giteaFixture
		_ = json.Unmarshal(b, &fs)
		for _, fx := range fs {
			if body, err := os.ReadFile(filepath.Join("testdata", fx.File)); err == nil {
				f.Add(fx.Secret, fx.Signature, body)
			}
		}
	}
	f.Fuzz(func(t *testing.T, secret, header string, body []byte) {
		_ = VerifyGitea([]string{secret}, header, body)
		if secret == "" {
			if VerifyGitea([]string{secret}, SignGitea(secret, body), body) == nil {
				t.Fatal("empty secret verified")
			}
			return
		}
		if err := VerifyGitea([]string{"x" + secret, secret}, SignGitea(secret, body), body); err != nil {
			t.Fatalf("own signature refused: %v", err)
		}
		if VerifyGitea([]string{"x" + secret}, SignGitea(secret, body), body) == nil {
			t.Fatal("other secret verified")
		}
	})
}

func FuzzNormalizeGitea(f *testing.F) {
	events := []string{"issue_comment", "issues", "pull_request", "status", "workflow_run", "pull_request_rejected", "push"}
	if b, err := os.ReadFile(filepath.Join("testdata", "gitea", "manifest.json")); err == nil {
		var fs []giteaFixture
		_ = json.Unmarshal(b, &fs)
		for _, fx := range fs {
			if body, err := os.ReadFile(filepath.Join("testdata", fx.File)); err == nil {
				f.Add(fx.Event, fx.EventType, body)
			}
		}
	}
	for _, e := range events {
		f.Add(e, "", []byte(`{"action":"created","comment":{"id":1,"body":"@nightshift x","user":{"login":"a"}},"issue":{"number":1},"repository":{"full_name":"a/b","clone_url":"file:///tmp/planted.git"}}`))
	}
	f.Add("issue_comment", "", []byte(`{"action":"created","comment":{"id":1,"body":"@nightshift x","user":{"login":"a"}},"issue":{"number":1},"repository":{"full_name":"../../tmp/x"}}`))
	opt := giteaFixtureOpts("https://git.example.com/")
	f.Fuzz(func(t *testing.T, event, eventType string, body []byte) {
		res, err := normalizeGitea(event, eventType, body, opt)
		if err != nil {
			var mal *MalformedError
			if !errors.As(err, &mal) {
				t.Fatalf("error is not malformed: %v", err)
			}
			return
		}
		if res.Answer != nil {
			if res.Event != nil || res.Answer.Repo == "" || res.Answer.ID == 0 {
				t.Fatalf("bad answer %+v", res)
			}
			checkRemote(t, res.Answer.Repo)
		}
		ev := res.Event
		if ev == nil {
			return
		}
		if ev.Kind == "" || ev.IdempotencyKey == "" || ev.Repo == "" || !strings.HasPrefix(ev.IdempotencyKey, "gitea:") {
			t.Fatalf("incomplete event %+v", ev)
		}
		checkRemote(t, ev.Repo, ev.Target.HeadRepo)
		if !strings.HasPrefix(ev.Repo, "https://git.example.com/") {
			t.Fatalf("repo %q is not on the configured Gitea", ev.Repo)
		}
		if ev.Kind == orchestrator.KindCIFailed && res.AttemptKey == "" {
			t.Fatalf("CI failure without an attempt key: %+v", ev)
		}
	})
}

// giteaTrigger is the captured issue_comment delivery with the trigger.
func giteaTrigger(b *testing.B) giteaFixture {
	for _, fx := range giteaManifest(b) {
		if fx.File == "gitea/issue_comment.created.trigger.json" {
			return fx
		}
	}
	b.Fatal("no gitea/issue_comment.created.trigger.json in the manifest")
	return giteaFixture{}
}

func BenchmarkNormalizeGitea(b *testing.B) {
	f := giteaTrigger(b)
	h, opt := f.header(), giteaFixtureOpts(f.GitURL)
	b.SetBytes(int64(len(f.body)))
	for b.Loop() {
		res, err := GiteaSource{}.Normalize(h, f.body, opt)
		if err != nil || res.Event == nil {
			b.Fatal(err, res.Ignore)
		}
	}
}

func BenchmarkVerifyGitea(b *testing.B) {
	f := giteaTrigger(b)
	h, secrets := f.header(), []string{"old-rotated-secret", giteaFixtureSecret}
	b.SetBytes(int64(len(f.body)))
	for b.Loop() {
		if err := (GiteaSource{}).Verify(h, f.body, secrets); err != nil {
			b.Fatal(err)
		}
	}
}
