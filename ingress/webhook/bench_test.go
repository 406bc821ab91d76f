package webhook

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
)

func BenchmarkNormalizeGitHub(b *testing.B) {
	body := editJSON(b, readFixture(b, "octokit-webhooks/issue_comment.created.json"), func(m map[string]any) {
		obj(m, "comment")["body"] = "@nightshift fix it"
	})
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		n, err := normalizeGitHub("issue_comment", body, githubOptions{Trigger: "@nightshift", Label: "nightshift", Forge: testForge()})
		if err != nil || n.ev == nil {
			b.Fatal(err, n.ignore)
		}
	}
}

func BenchmarkVerifyGitHub(b *testing.B) {
	body := readFixture(b, "octokit-webhooks/issue_comment.created.json")
	sig := SignGitHub("s", body)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if err := VerifyGitHub([]string{"s"}, sig, body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandlerGitHub drives accepted issue_comment deliveries through
// ServeHTTP on an embedded JetStream (no HTTP transport).
func BenchmarkHandlerGitHub(b *testing.B) {
	hs := newHarness(b, nil)
	body := editJSON(b, readFixture(b, "octokit-webhooks/issue_comment.created.json"), func(m map[string]any) {
		obj(m, "comment")["body"] = "@nightshift fix it"
	})
	sig := SignGitHub(testGitHubSecret, body)
	var seq atomic.Int64
	b.SetBytes(int64(len(body)))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodPost, "/hooks/github", bytes.NewReader(body))
			req.Header.Set("X-GitHub-Event", "issue_comment")
			req.Header.Set("X-GitHub-Delivery", "b-"+strconv.FormatInt(seq.Add(1), 10))
			req.Header.Set("X-Hub-Signature-256", sig)
			rec := httptest.NewRecorder()
			hs.h.ServeHTTP(rec, req)
			if rec.Code != http.StatusAccepted {
				b.Fatalf("%d %s", rec.Code, rec.Body.String())
			}
		}
	})
}
