package webhook

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/config"
)

// seedBodies adds every fixture payload to a fuzz corpus.
func seedBodies(f *testing.F, add func(name string, body []byte)) {
	files, _ := filepath.Glob(fixtures + "/*/*")
	for _, p := range files {
		if strings.HasSuffix(p, "LICENSE") || strings.HasSuffix(p, "COMMIT") {
			continue
		}
		b, err := os.ReadFile(p)
		if err == nil {
			add(filepath.Base(p), b)
		}
	}
	add("empty", nil)
	add("null", []byte("null"))
	add("array", []byte("[]"))
}

func FuzzVerifyGitHub(f *testing.F) {
	f.Add("It's a Secret to Everybody", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17", []byte("Hello, World!"))
	f.Fuzz(func(t *testing.T, secret, header string, body []byte) {
		_ = VerifyGitHub([]string{secret}, header, body)
		if secret == "" {
			if VerifyGitHub([]string{secret}, SignGitHub(secret, body), body) == nil {
				t.Fatal("empty secret verified")
			}
			return
		}
		if err := VerifyGitHub([]string{"x" + secret, secret}, SignGitHub(secret, body), body); err != nil {
			t.Fatalf("own signature refused: %v", err)
		}
		if VerifyGitHub([]string{"x" + secret}, SignGitHub(secret, body), body) == nil {
			t.Fatal("other secret verified")
		}
	})
}

func FuzzVerifyLinear(f *testing.F) {
	f.Add("s", "00", []byte(`{"webhookTimestamp":1}`), int64(1))
	f.Fuzz(func(t *testing.T, secret, header string, body []byte, ms int64) {
		_ = VerifyLinear([]string{secret}, header, body)
		_ = CheckLinearTimestamp(ms, time.UnixMilli(1_700_000_000_000), time.Minute)
		if secret != "" {
			if err := VerifyLinear([]string{secret}, SignLinear(secret, body), body); err != nil {
				t.Fatalf("own signature refused: %v", err)
			}
		}
	})
}

func FuzzVerifySlack(f *testing.F) {
	f.Add("8f742231b10e8888abcd99yyyzzz85a5", "1531420618", "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503", []byte("token=x"))
	f.Fuzz(func(t *testing.T, secret, ts, header string, body []byte) {
		now := time.Unix(1531420618, 0)
		_ = VerifySlack([]string{secret}, ts, header, body, now, 5*time.Minute)
		if secret != "" {
			stamp := "1531420600"
			if err := VerifySlack([]string{secret}, stamp, SignSlack(secret, stamp, body), body, now, 5*time.Minute); err != nil {
				t.Fatalf("own signature refused: %v", err)
			}
		}
	})
}

func FuzzNormalizeGitHub(f *testing.F) {
	events := []string{"issue_comment", "pull_request_review_comment", "issues", "check_run", "workflow_run", "status", "ping", "push"}
	seedBodies(f, func(name string, b []byte) {
		for _, e := range events {
			if strings.HasPrefix(name, e) {
				f.Add(e, b)
			}
		}
		f.Add("issue_comment", b)
	})
	f.Add("issue_comment", []byte(`{"action":"created","comment":{"id":1,"body":"@nightshift x"},"issue":{"number":1},"repository":{"full_name":"a/b","clone_url":"file:///tmp/planted.git","html_url":"/tmp/x"}}`))
	f.Add("issue_comment", []byte(`{"action":"created","comment":{"id":1,"body":"@nightshift x"},"issue":{"number":1},"repository":{"full_name":"../../tmp/x"}}`))
	forge := testForge()
	f.Fuzz(func(t *testing.T, event string, body []byte) {
		n, err := normalizeGitHub(event, body, githubOptions{Trigger: "@nightshift", Label: "nightshift", Forge: forge})
		if err != nil || n.ev == nil {
			return
		}
		if n.ev.Kind == "" || n.ev.IdempotencyKey == "" || n.ev.Repo == "" {
			t.Fatalf("incomplete event %+v", n.ev)
		}
		checkRemote(t, n.ev.Repo, n.ev.Target.HeadRepo)
		if !strings.HasPrefix(n.ev.Repo, "https://github.com/") {
			t.Fatalf("repo %q is not on the configured GitHub", n.ev.Repo)
		}
	})
}

func FuzzNormalizeLinear(f *testing.F) {
	seedBodies(f, func(_ string, b []byte) { f.Add(b) })
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := parseLinear(body)
		if err != nil {
			return
		}
		n, err := normalizeLinear(p, linearOptions{AgentUser: "674c90c8-35ea-454d-8ca4-5548258fd795", Label: "nightshift", Trigger: "@nightshift",
			Repo: "https://github.com/acme/app.git", TeamRepos: map[string]string{"ENG": "https://github.com/acme/eng.git"}})
		if err == nil && n.ev != nil && (n.ev.Kind == "" || n.ev.IdempotencyKey == "") {
			t.Fatalf("incomplete event %+v", n.ev)
		}
		if err == nil && n.ev != nil {
			checkRemote(t, n.ev.Repo)
		}
	})
}

func FuzzNormalizeSlack(f *testing.F) {
	seedBodies(f, func(_ string, b []byte) { f.Add(b) })
	f.Add([]byte("command=%2Fnightshift&text=acme%2Fapp+fix+it&trigger_id=1"))
	f.Add([]byte(`{"type":"block_actions","actions":[{"action_id":"retry","value":"T1"}]}`))
	f.Add([]byte("command=%2Fnightshift&text=file%3A%2F%2F%2Ftmp%2Fplanted.git+fix+it"))
	f.Add([]byte("command=%2Fnightshift&text=%2Ftmp%2Fplanted.git+fix+it"))
	f.Add([]byte("command=%2Fnightshift&text=github.com%2F..%2Ftmp+fix+it"))
	forge := testForge()
	f.Fuzz(func(t *testing.T, body []byte) {
		if form, err := url.ParseQuery(string(body)); err == nil {
			if n, err := normalizeSlackCommand(form, forge); err == nil && n.ev != nil {
				if n.ev.Repo == "" {
					t.Fatalf("command without repo: %+v", n.ev)
				}
				checkRemote(t, n.ev.Repo)
			}
		}
		_, _, _ = normalizeSlackInteraction(body)
	})
}

// testForge is the forge configuration of the default Config: GitHub at
// https://github.com/ and no other host.
func testForge() forgeOptions {
	return Config{}.withDefaults().forge()
}

// checkRemote fails when a normalized repository is a local path, a
// file:// URL or anything else that is not a remote http(s) or ssh URL.
func checkRemote(t *testing.T, repos ...string) {
	t.Helper()
	for _, r := range repos {
		if r == "" {
			continue
		}
		if _, local := config.LocalRepoPath(r); local || !config.RemoteRepo(r) {
			t.Fatalf("event names repository %q, which is not a remote URL", r)
		}
		if u, err := url.Parse(r); err != nil || (u.Scheme != "https" && u.Scheme != "http") {
			t.Fatalf("event repository %q is not an http(s) URL", r)
		}
	}
}

func FuzzCommandIn(f *testing.F) {
	f.Add("@nightshift fix it", "@nightshift")
	f.Add("> @nightshift no\n```\n/nightshift no\n```\n`@nightshift` no", "@nightshift")
	f.Add("İ@nightshiftİ", "@NIGHTSHİFT")
	f.Fuzz(func(t *testing.T, body, trigger string) {
		if m := maskQuotedAndCode(body); len(m) != len(body) {
			t.Fatalf("mask changed length %d -> %d", len(body), len(m))
		}
		_, _ = commandIn(body, trigger)
	})
}

// FuzzHandler drives signed arbitrary bodies through the whole handler on
// an embedded JetStream: no panic, and no 5xx at all while JetStream is up.
func FuzzHandler(f *testing.F) {
	seedBodies(f, func(name string, b []byte) { f.Add(0, name, b) })
	f.Add(1, "", []byte(`{"action":"create","type":"Comment","data":{"id":"c","body":"@nightshift x"},"webhookTimestamp":1767323045000}`))
	f.Add(2, "", []byte("command=%2Fnightshift&text=acme%2Fapp+fix"))
	f.Add(3, "", []byte("payload=%7B%22type%22%3A%22block_actions%22%7D"))
	// Comments on pull requests need the author's permission even without
	// the trigger (they are feedback for the task owning the pull request):
	// the permission API answers.
	api, _ := fakeGitHubAPI(f)
	hs := newHarness(f, func(c *Config) { c.GitHub.APIURL = api.URL })
	f.Fuzz(func(t *testing.T, route int, event string, body []byte) {
		var req *http.Request
		switch route & 3 {
		case 0:
			req = githubRequest(strings.TrimSuffix(strings.SplitN(event, ".", 2)[0], ".json"), "", body, testGitHubSecret)
		case 1:
			req = linearRequest(body, "linear-secret", event)
		case 2:
			req = slackRequest("/hooks/slack/commands", body, "8f742231b10e8888abcd99yyyzzz85a5", hs.clock.now)
		default:
			req = slackRequest("/hooks/slack/interactions", body, "8f742231b10e8888abcd99yyyzzz85a5", hs.clock.now)
		}
		rec := httptest.NewRecorder()
		hs.h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("route %d: status %d: %s", route&3, rec.Code, rec.Body.String())
		}
	})
}
