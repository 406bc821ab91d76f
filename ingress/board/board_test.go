package board

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/nightshift/nightshift/ingress/api"
)

// get sends a request without following redirects.
func do(t *testing.T, method, u string, form url.Values, hdr ...string) (*http.Response, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, u, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for _, h := range hdr {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Add(k, v)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func newBoard(t *testing.T, cfg api.Config) (*httptest.Server, *api.Server) {
	t.Helper()
	a := api.New(nil, nil, cfg)
	b, err := New(a, Config{})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/api/v1/", a)
	mux.Handle("/", b)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts, a
}

func TestLoginFlow(t *testing.T) {
	t.Parallel()
	ts, _ := newBoard(t, api.Config{AdminTokens: []string{"adm1n"}})
	origin := "Origin: " + ts.URL

	// Pages send visitors without a session to the login page and back.
	resp, _ := do(t, "GET", ts.URL+"/tasks/abc?x=1", nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login?next="+url.QueryEscape("/tasks/abc?x=1") {
		t.Fatalf("unauthenticated page: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body := do(t, "GET", ts.URL+"/login?next=/tasks/abc", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `<label for="token">API token</label>`) ||
		!strings.Contains(body, `name="next" value="/tasks/abc"`) {
		t.Fatalf("login page: %d\n%s", resp.StatusCode, body)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Fatalf("CSP %q", csp)
	}

	// A wrong token stays on the page with an error, announced.
	resp, body = do(t, "POST", ts.URL+"/login", url.Values{"token": {"nope"}, "next": {"/"}}, origin)
	if resp.StatusCode != 401 || !strings.Contains(body, `role="alert"`) || len(resp.Cookies()) != 0 {
		t.Fatalf("bad token: %d %v\n%s", resp.StatusCode, resp.Cookies(), body)
	}
	// A login form posted from another site is refused.
	resp, _ = do(t, "POST", ts.URL+"/login", url.Values{"token": {"adm1n"}}, "Origin: https://evil.example")
	if resp.StatusCode != 403 || len(resp.Cookies()) != 0 {
		t.Fatalf("cross-site login: %d", resp.StatusCode)
	}
	// The right token sets the session cookie and goes where the visitor
	// was headed, but never off-site.
	resp, _ = do(t, "POST", ts.URL+"/login", url.Values{"token": {"adm1n"}, "next": {"//evil.example/x"}}, origin)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" || len(resp.Cookies()) != 1 {
		t.Fatalf("login: %d %q %v", resp.StatusCode, resp.Header.Get("Location"), resp.Cookies())
	}
	ck := resp.Cookies()[0]
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode {
		t.Fatalf("cookie %+v", ck)
	}
	cookie := "Cookie: " + ck.Name + "=" + ck.Value
	resp, body = do(t, "GET", ts.URL+"/", nil, cookie)
	if resp.StatusCode != 200 || !strings.Contains(body, `id="col-running"`) || !strings.Contains(body, `action="/logout"`) {
		t.Fatalf("board with session: %d\n%s", resp.StatusCode, body)
	}
	if resp, _ := do(t, "GET", ts.URL+"/login", nil, cookie); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login page while logged in: %d", resp.StatusCode)
	}
	// Logging out ends the session.
	resp, _ = do(t, "POST", ts.URL+"/logout", url.Values{}, cookie, origin)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	if resp, _ := do(t, "GET", ts.URL+"/", nil, cookie); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("board after logout: %d", resp.StatusCode)
	}
}

func TestOpenBoardAndAssets(t *testing.T) {
	t.Parallel()
	ts, _ := newBoard(t, api.Config{})
	resp, body := do(t, "GET", ts.URL+"/", nil)
	if resp.StatusCode != 200 || strings.Contains(body, `action="/logout"`) || !strings.Contains(body, "<main") {
		t.Fatalf("open board: %d\n%s", resp.StatusCode, body)
	}
	if resp, _ := do(t, "GET", ts.URL+"/login", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login page in open mode: %d", resp.StatusCode)
	}
	for path, typ := range map[string]string{"/assets/board.js": "javascript", "/assets/board.css": "text/css",
		"/assets/favicon.svg": "image/svg+xml", "/assets/diff.js": "javascript", "/assets/task.js": "javascript"} {
		resp, body := do(t, "GET", ts.URL+path, nil)
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), typ) || len(body) == 0 {
			t.Errorf("GET %s: %d %q", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	for _, path := range []string{"/assets/board.html", "/assets/layout.html", "/assets/nope.js", "/nope"} {
		if resp, _ := do(t, "GET", ts.URL+path, nil); resp.StatusCode != 404 {
			t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
		}
	}
}

func TestPagesAreAccessible(t *testing.T) {
	t.Parallel()
	ts, _ := newBoard(t, api.Config{})
	for _, path := range []string{"/", "/tasks/abc"} {
		_, body := do(t, "GET", ts.URL+path, nil)
		for _, want := range []string{`<html lang="en">`, `<main id="main"`, `<header`, `<nav aria-label="Main">`, `class="skip" href="#main"`, `<h1`} {
			if !strings.Contains(body, want) {
				t.Errorf("%s lacks %s", path, want)
			}
		}
		if strings.Contains(body, "<script>") || strings.Contains(body, " onclick=") || strings.Contains(body, "style=") {
			t.Errorf("%s has inline script or style (the CSP forbids them)", path)
		}
	}
	_, body := do(t, "GET", ts.URL+"/tasks/abc", nil)
	for _, want := range []string{`role="log" aria-live="polite"`, `<label for="followup-text">`, `<button type="button" id="btn-cancel"`, `<nav aria-label="Changed files"`} {
		if !strings.Contains(body, want) {
			t.Errorf("task page lacks %s", want)
		}
	}
}

func TestSafeNext(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"": "/", "/": "/", "/tasks/x?y=1": "/tasks/x?y=1", "//evil": "/",
		"https://evil": "/", "/\\evil": "/", "tasks": "/"} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}
