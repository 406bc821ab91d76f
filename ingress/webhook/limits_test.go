package webhook

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Unauthenticated senders must not be able to hold memory: these tests send
// bodies that announce more than they deliver, or deliver slowly, through a
// real HTTP server on loopback.

// startSlow opens a connection to srv and sends the headers of a signed-
// looking GitHub delivery announcing contentLength bytes, followed by only
// the bytes of first. The body stays open until the connection is closed.
func startSlow(t *testing.T, srv *httptest.Server, contentLength int64, first string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST /hooks/github HTTP/1.1\r\nHost: hooks.example\r\nContent-Type: application/json\r\n"+
		"X-GitHub-Event: ping\r\nX-Hub-Signature-256: sha256=00\r\nContent-Length: %d\r\n\r\n%s", contentLength, first)
	return conn
}

// readStatus reads the status line the server answers on conn, waiting at
// most limit (a safety net: the server is expected to answer on its own).
func readStatus(t *testing.T, conn net.Conn, limit time.Duration) (int, http.Header) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(limit))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer from the server within %s: %v", limit, err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// waitUntil polls cond until it holds, failing after 10 seconds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// TestSlowBodyCutOff: a sender that stops sending mid-body is answered 408
// once BodyTimeout passes, and its reading slot is freed. Before the body
// deadline existed the server waited for the body forever.
func TestSlowBodyCutOff(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, func(c *Config) { c.BodyTimeout = 100 * time.Millisecond })
	srv := httptest.NewServer(hs.h)
	t.Cleanup(srv.Close)
	conn := startSlow(t, srv, 1000, `{"zen":"`)
	if code, _ := readStatus(t, conn, 30*time.Second); code != http.StatusRequestTimeout {
		t.Fatalf("slow body answered %d, want 408", code)
	}
	waitUntil(t, "the reading slot to be released", func() bool { return len(hs.h.reading) == 0 })
}

// TestReadingCapAnswers503: past MaxReading bodies being read at once, a
// delivery is answered 503 with Retry-After at once instead of waiting for
// a slot; when the slow senders go away, deliveries are served again.
func TestReadingCapAnswers503(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, func(c *Config) { c.MaxReading = 2; c.BodyTimeout = time.Minute })
	srv := httptest.NewServer(hs.h)
	t.Cleanup(srv.Close)
	a := startSlow(t, srv, 1000, "{")
	b := startSlow(t, srv, 1000, "{")
	waitUntil(t, "two bodies being read", func() bool { return len(hs.h.reading) == 2 })

	body := []byte(`{"zen":"Keep it logically awesome.","hook_id":1}`)
	post := func() *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/hooks/github", bytes.NewReader(body))
		req.Header.Set("X-GitHub-Event", "ping")
		req.Header.Set("X-Hub-Signature-256", SignGitHub(testGitHubSecret, body))
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	resp := post()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third delivery while two bodies are read: %d Retry-After %q, want 503 with Retry-After",
			resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	a.Close()
	b.Close()
	waitUntil(t, "the slow senders' slots to be released", func() bool { return len(hs.h.reading) == 0 })
	if resp := post(); resp.StatusCode != http.StatusOK {
		t.Fatalf("delivery after the slow senders left: %d, want 200", resp.StatusCode)
	}
}

// TestAnnouncedLengthIsNotAllocated holds slow deliveries open that
// announce 100 MB (under a raised MaxBody, so the size check lets them in)
// and send 10 bytes: the live heap must not grow by what they announced.
// The old handler sized its buffer from Content-Length and held 100 MB per
// request. Not parallel: it measures the process heap.
func TestAnnouncedLengthIsNotAllocated(t *testing.T) {
	const (
		n         = 4
		announced = 100 << 20
	)
	hs := newHarness(t, func(c *Config) { c.MaxBody = 256 << 20; c.BodyTimeout = time.Minute })
	srv := httptest.NewServer(hs.h)
	t.Cleanup(srv.Close)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range n {
		startSlow(t, srv, announced, `{"zen":"x"`)
	}
	waitUntil(t, fmt.Sprintf("%d bodies being read", n), func() bool { return len(hs.h.reading) == n })
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d deliveries announcing %d MB each: live heap grew %d KiB", n, announced>>20, grown>>10)
	if grown > 16<<20 {
		t.Fatalf("live heap grew %d MiB while %d deliveries announcing %d MB sent 10 bytes each", grown>>20, n, announced>>20)
	}
}

// TestChunkedBodyOverLimit: a body without Content-Length grows only up to
// MaxBody and is then answered 413.
func TestChunkedBodyOverLimit(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, func(c *Config) { c.MaxBody = 64 << 10 })
	srv := httptest.NewServer(hs.h)
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/hooks/github", io.MultiReader(strings.NewReader(`{"zen":"`), strings.NewReader(strings.Repeat("x", 200<<10))))
	req.ContentLength = -1 // chunked
	req.Header.Set("X-GitHub-Event", "ping")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked body over MaxBody: %d, want 413", resp.StatusCode)
	}
}
