package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestMetricsTakeATokenWhenTokensAreSet: with api.tokens configured,
// /metrics answers only an admin or read-only bearer token (as Prometheus
// sends one); without a token or with a wrong one it is 401, while
// /healthz stays open. Without tokens (loopback only) /metrics is open.
func TestMetricsTakeATokenWhenTokensAreSet(t *testing.T) {
	t.Parallel()
	get := func(t *testing.T, url, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	s := startTestServer(t, tokenYAML)
	for _, c := range []struct {
		path, token string
		want        int
	}{
		{"/metrics", "", http.StatusUnauthorized},
		{"/metrics", "wrong-token", http.StatusUnauthorized},
		{"/metrics", "r3ad-token", http.StatusOK},
		{"/metrics", "adm1n-token", http.StatusOK},
		{"/healthz", "", http.StatusOK},
	} {
		code, body := get(t, s.URL+c.path, c.token)
		if code != c.want {
			t.Errorf("%s with token %q: %d, want %d", c.path, c.token, code, c.want)
		}
		if code == http.StatusUnauthorized && strings.Contains(body, "nightshift_") {
			t.Errorf("%s refused but still shows metrics: %.200s", c.path, body)
		}
		if c.path == "/metrics" && code == http.StatusOK && !strings.Contains(body, "nightshift_") {
			t.Errorf("%s with token %q: no nightshift metrics in %.200s", c.path, c.token, body)
		}
	}
	open := startTestServer(t, processConfig)
	if code, _ := get(t, open.URL+"/metrics", ""); code != http.StatusOK {
		t.Errorf("/metrics without configured tokens: %d, want 200", code)
	}
}
