package orchestrator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	gh "github.com/google/go-github/v60/github"

	"github.com/nightshift/nightshift/identity/ravi"
	"github.com/nightshift/nightshift/worktree"
)

// closedAddr is a loopback address nothing listens on any more.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// provisionErr is what a real worktree.Manager returns when it provisions
// from repo.
func provisionErr(t *testing.T, repo string) error {
	t.Helper()
	dir := t.TempDir()
	m, err := worktree.New(worktree.Config{MirrorDir: filepath.Join(dir, "mirrors"), TaskDir: filepath.Join(dir, "tasks")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = m.Provision(ctx, worktree.Ref{TaskID: "t1", Repo: repo, Base: "main", Branch: "nightshift/t1"}, nil)
	if err == nil {
		t.Fatalf("provision from %s succeeded", repo)
	}
	return err
}

// githubErr is what go-github returns when the API answers status with
// header.
func githubErr(t *testing.T, status int, header http.Header) error {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range header {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, `{"message":"nope"}`)
	}))
	t.Cleanup(srv.Close)
	c, err := gh.NewClient(srv.Client()).WithEnterpriseURLs(srv.URL+"/", srv.URL+"/")
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = c.PullRequests.Create(context.Background(), "acme", "app", &gh.NewPullRequest{Title: gh.String("t")})
	if err == nil {
		t.Fatalf("status %d: no error", status)
	}
	return err
}

// sqliteBusy is what modernc.org/sqlite returns to a writer while another
// connection holds the database's write lock.
func sqliteBusy(t *testing.T) error {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vault.db")
	open := func() *sql.DB {
		db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(0)")
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		t.Cleanup(func() { db.Close() })
		return db
	}
	a, b := open(), open()
	if _, err := a.Exec(`CREATE TABLE s (v TEXT)`); err != nil {
		t.Fatal(err)
	}
	tx, err := a.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`INSERT INTO s VALUES ('x')`); err != nil {
		t.Fatal(err)
	}
	_, err = b.Exec(`INSERT INTO s VALUES ('y')`)
	if err == nil {
		t.Fatal("second writer was not refused")
	}
	return err
}

// jetstreamNoStream is what publishing gets when no stream answers (a
// cluster electing its leader).
func jetstreamNoStream(t *testing.T) error {
	t.Helper()
	bus := newBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := bus.js.Publish(ctx, "nobody.listens.here", []byte("x"))
	if err == nil {
		t.Fatal("publish without a stream succeeded")
	}
	return err
}

// TestTransientErrorsAreRetryable classifies errors as the real clients
// produce them: network failures, 5xx/429 from GitHub and Ravi, git
// transport errors, a busy SQLite and JetStream without a stream are worth
// another delivery; 4xx, a missing base, a rejected push are not.
func TestTransientErrorsAreRetryable(t *testing.T) {
	t.Parallel()
	gitStatus := func(status int) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "down for maintenance", status)
		}))
		t.Cleanup(srv.Close)
		return srv.URL + "/acme/app.git"
	}
	reset := fmt.Sprint(time.Now().Add(90 * time.Second).Unix())
	cases := []struct {
		name      string
		err       error
		retry     bool
		minAfter  time.Duration
		wantAfter bool
	}{
		{"git fetch, connection refused", provisionErr(t, "http://"+closedAddr(t)+"/acme/app.git"), true, 0, false},
		{"git fetch, 503", provisionErr(t, gitStatus(http.StatusServiceUnavailable)), true, 0, false},
		{"git fetch, 404", provisionErr(t, gitStatus(http.StatusNotFound)), false, 0, false},
		{"git fetch, 401", provisionErr(t, gitStatus(http.StatusUnauthorized)), false, 0, false},
		{"github 502", githubErr(t, http.StatusBadGateway, nil), true, 0, false},
		{"github 429 retry-after", githubErr(t, http.StatusTooManyRequests, http.Header{"Retry-After": {"7"}}), true, 7 * time.Second, true},
		{"github 403 rate limit", githubErr(t, http.StatusForbidden, http.Header{"X-Ratelimit-Remaining": {"0"}, "X-Ratelimit-Reset": {reset}}), true, 60 * time.Second, true},
		{"github 422", githubErr(t, http.StatusUnprocessableEntity, nil), false, 0, false},
		{"github 404", githubErr(t, http.StatusNotFound, nil), false, 0, false},
		{"ravi 503", &ravi.APIError{Status: 503, Detail: "unavailable"}, true, 0, false},
		{"ravi 429", &ravi.APIError{Status: 429, Detail: "slow down"}, true, 0, false},
		{"ravi 400", &ravi.APIError{Status: 400, Detail: "bad phone"}, false, 0, false},
		{"sqlite busy", sqliteBusy(t), true, 0, false},
		{"jetstream, no stream", jetstreamNoStream(t), true, 0, false},
		{"push transport", &worktree.PushError{Reason: worktree.PushTransport, Err: errors.New("connection reset")}, true, 0, false},
		{"push rejected", &worktree.PushError{Reason: worktree.PushRejected, Message: "protected branch"}, false, 0, false},
		{"push non fast-forward", &worktree.PushError{Reason: worktree.PushNonFastForward}, false, 0, false},
		{"a call's timeout", fmt.Errorf("vault lookup: %w", context.DeadlineExceeded), true, 0, false},
		{"run cancelled", fmt.Errorf("plan: %w", context.Canceled), false, 0, false},
		{"unknown host", &net.DNSError{Err: "no such host", Name: "github.invalid", IsNotFound: true}, false, 0, false},
		{"base not found", fmt.Errorf("worktree: %w", worktree.ErrBaseNotFound), false, 0, false},
		{"plain", errors.New("bad config"), false, 0, false},
	}
	for _, c := range cases {
		err := remoteErr("step", "the step: %w", c.err)
		var se *StepError
		if !errors.As(err, &se) {
			t.Fatalf("%s: not a StepError", c.name)
		}
		if got := se.Class == StepRetryable; got != c.retry {
			t.Errorf("%s: retryable %v, want %v (%v)", c.name, got, c.retry, c.err)
		}
		if c.wantAfter && se.RetryAfter < c.minAfter {
			t.Errorf("%s: retry after %s, want at least %s", c.name, se.RetryAfter, c.minAfter)
		}
		if !c.wantAfter && se.RetryAfter != 0 {
			t.Errorf("%s: retry after %s, want none", c.name, se.RetryAfter)
		}
	}
	if se := stepErr("tests_failed", "tests failed").(*StepError); se.Class != StepPermanent {
		t.Error("stepErr is not permanent")
	}
}

// TestRetryDecisionBacksOffAndStops: a retryable failure is retried with a
// growing, jittered delay until the last delivery, which fails the task
// saying how many attempts it took; a permanent one is never retried.
func TestRetryDecisionBacksOffAndStops(t *testing.T) {
	t.Parallel()
	const maxDeliver = 5
	retryable := &StepError{Reason: "pull_request", Err: errors.New("open pull request: 502"), Class: StepRetryable}
	prevMin := time.Duration(0)
	for attempt := 1; attempt < maxDeliver; attempt++ {
		full := min(retryBase<<(2*(attempt-1)), retryMax)
		lo, hi := full, time.Duration(0)
		for range 200 {
			d, ok := retryDecision(retryable, attempt, maxDeliver)
			if !ok {
				t.Fatalf("attempt %d: not retried", attempt)
			}
			if d < full/2 || d > full {
				t.Fatalf("attempt %d: delay %s outside [%s, %s]", attempt, d, full/2, full)
			}
			lo, hi = min(lo, d), max(hi, d)
		}
		if hi-lo < full/8 {
			t.Errorf("attempt %d: delays %s..%s hardly jittered", attempt, lo, hi)
		}
		if lo < prevMin {
			t.Errorf("attempt %d: delay %s shorter than the previous attempt's", attempt, lo)
		}
		prevMin = full / 2
	}
	if _, ok := retryDecision(retryable, maxDeliver, maxDeliver); ok {
		t.Fatal("the last delivery was retried")
	}
	if d, _ := retryDecision(&StepError{Err: errors.New("x"), Class: StepRetryable, RetryAfter: time.Minute}, 1, maxDeliver); d != time.Minute {
		t.Fatalf("Retry-After of a minute: delay %s", d)
	}
	if d, _ := retryDecision(&StepError{Err: errors.New("x"), Class: StepRetryable, RetryAfter: 48 * time.Hour}, 1, maxDeliver); d != retryAfterMax {
		t.Fatalf("Retry-After of two days: delay %s, want the cap %s", d, retryAfterMax)
	}
	for _, err := range []error{
		stepErr("tests_failed", "tests failed"),
		errors.New("not a step error"),
		fmt.Errorf("wrapped: %w", &StepError{Reason: "no_changes", Err: errors.New("none")}),
	} {
		if _, ok := retryDecision(err, 1, maxDeliver); ok {
			t.Errorf("%v retried", err)
		}
	}
	wrapped := fmt.Errorf("run: %w", retryable)
	if _, ok := retryDecision(wrapped, 1, maxDeliver); !ok {
		t.Error("a wrapped retryable step error was not retried")
	}
	retryable.Attempts = maxDeliver
	if reason, text := failure(wrapped); reason != "pull_request" || !strings.HasSuffix(text, "(after 5 attempts)") {
		t.Errorf("final failure: %q %q", reason, text)
	}
}

// FuzzWaitOf: whatever a server puts in Retry-After and X-RateLimit-*,
// the wait is never negative and a Retry-After in seconds never exceeds
// the cap.
func FuzzWaitOf(f *testing.F) {
	for _, seed := range [][3]string{
		{"7", "", ""}, {"0", "", ""}, {"-3", "", ""}, {"99999999999999999", "", ""},
		{"Wed, 21 Oct 2015 07:28:00 GMT", "", ""}, {"", "0", "1700000000"}, {"", "0", "99999999999999"},
		{"", "5", "1700000000"}, {" 12 ", "", ""}, {"1e9", "0", "x"},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	f.Fuzz(func(t *testing.T, retryAfter, remaining, reset string) {
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		if remaining != "" {
			h.Set("X-RateLimit-Remaining", remaining)
		}
		if reset != "" {
			h.Set("X-RateLimit-Reset", reset)
		}
		d := waitOf(h)
		if d < 0 {
			t.Fatalf("negative wait %s for %q %q %q", d, retryAfter, remaining, reset)
		}
		if _, err := strconv.ParseInt(strings.TrimSpace(retryAfter), 10, 64); err == nil && d > retryAfterMax {
			t.Fatalf("wait %s over the cap for Retry-After %q", d, retryAfter)
		}
	})
}

// embeddedResponse is an error type whose Response field sits behind an
// embedded pointer, nil here: classifying it must not panic.
type embeddedResponse struct{ *gh.ErrorResponse }

func (embeddedResponse) Error() string { return "odd error" }

func TestTransientOddErrorShapes(t *testing.T) {
	t.Parallel()
	for _, err := range []error{
		embeddedResponse{},
		&embeddedResponse{},
		&worktree.PushError{Reason: worktree.PushTransport},
		errors.Join(errors.New("a"), &ravi.APIError{Status: 502}),
	} {
		_ = remoteErr("step", "x: %w", err) // must not panic
	}
	if ok, _ := transient(errors.Join(errors.New("a"), &ravi.APIError{Status: 502})); !ok {
		t.Error("a 502 inside a joined error is not transient")
	}
}
