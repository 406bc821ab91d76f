package webhook

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestPermissionLookupFailure: when GitHub's permission API fails, the
// delivery is answered 503 with a message about the permission check (not
// "could not be stored"), nothing is stored or remembered, and the
// redelivery, once GitHub answers again, is accepted.
func TestPermissionLookupFailure(t *testing.T) {
	t.Parallel()
	var failing atomic.Bool
	failing.Store(true)
	var calls atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/collaborators/outsider/permission") {
			http.NotFound(w, r)
			return
		}
		calls.Add(1)
		if failing.Load() {
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte(`{"message":"Server Error"}`))
			return
		}
		_, _ = w.Write([]byte(`{"permission":"write","user":{"login":"outsider"}}`))
	}))
	t.Cleanup(api.Close)
	hs := newHarness(t, func(c *Config) { c.GitHub.APIURL = api.URL })
	body := commentBy(t, "outsider", "User", "CONTRIBUTOR")

	got := hs.do(githubRequest("issue_comment", "perm-1", body, testGitHubSecret))
	if got.Status != http.StatusServiceUnavailable {
		t.Fatalf("permission API failing: %d %v, want 503", got.Status, got.Body)
	}
	if msg := got.Body["error"]; !strings.Contains(msg, "permission") || strings.Contains(msg, "could not be stored") {
		t.Fatalf("503 message %q should name the permission check", msg)
	}
	if calls.Load() == 0 {
		t.Fatal("the permission API was not asked")
	}
	if _, n := hs.lastEvent(); n != 0 {
		t.Fatalf("%d events stored for a delivery answered 503", n)
	}

	failing.Store(false)
	got = hs.do(githubRequest("issue_comment", "perm-1", body, testGitHubSecret))
	if got.Status != http.StatusAccepted {
		t.Fatalf("redelivery after GitHub recovered: %d %v, want 202", got.Status, got.Body)
	}
	if _, n := hs.lastEvent(); n != 1 {
		t.Fatalf("%d events stored after the redelivery, want 1", n)
	}
}
