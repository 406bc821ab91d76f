package worktree

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	testToken    = "s3cret-token"
	readOnlyUser = "reader"
)

// gitServer serves the bare repositories under root with git http-backend,
// enforcing basic auth: x-access-token:testToken may push, reader:testToken
// may only fetch (403 on push), anything else gets 401.
type gitServer struct {
	*httptest.Server
	infoRefs atomic.Int64  // upload-pack advertisements served
	gate     chan struct{} // when set, upload-pack advertisements wait for it
}

func newGitServer(t *testing.T, root string) *gitServer {
	t.Helper()
	execPath := git(t, root, "--exec-path")
	backend := &cgi.Handler{
		Path:   filepath.Join(execPath, "git-http-backend"),
		Env:    []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1", "HOME=" + root},
		Stderr: io.Discard,
	}
	s := &gitServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok || pass != testToken || (user != "x-access-token" && user != readOnlyUser) {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		push := r.URL.Query().Get("service") == "git-receive-pack" || strings.HasSuffix(r.URL.Path, "/git-receive-pack")
		if push && user == readOnlyUser {
			http.Error(w, "Permission to repo denied to reader.", http.StatusForbidden)
			return
		}
		if r.URL.Query().Get("service") == "git-upload-pack" {
			s.infoRefs.Add(1)
			if s.gate != nil {
				select {
				case <-s.gate:
				case <-r.Context().Done():
					return
				}
			}
		}
		backend.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func TestHTTPFetchAndPush(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{"a.txt": "a\n", ".github/workflows/ci.yml": "on: push\n"})
	git(t, origin, "config", "http.receivepack", "true")
	srv := newGitServer(t, filepath.Dir(origin))
	url := srv.URL + "/" + filepath.Base(origin)
	m := newManager(t)
	ctx := context.Background()
	auth := Auth{Username: "x-access-token", Password: testToken}

	if _, err := m.Provision(ctx, Ref{TaskID: "noauth", Repo: url}, nil); err == nil {
		t.Fatal("provision without credentials succeeded")
	}
	wt := provision(t, m, Ref{TaskID: "t1", Repo: url, Auth: auth})
	writeFiles(t, wt.Dir, map[string]string{"a.txt": "changed\n"})
	if _, err := m.Commit(ctx, wt, CommitRequest{Author: agent}); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name   string
		auth   Auth
		reason string
	}{
		{"no credentials", Auth{}, PushAuth},
		{"wrong token", Auth{Username: "x-access-token", Password: "nope"}, PushAuth},
		{"read-only token", Auth{Username: readOnlyUser, Password: testToken}, PushForbidden},
	} {
		_, err := m.Push(ctx, wt, PushRequest{Auth: c.auth})
		var pe *PushError
		if !errors.As(err, &pe) || pe.Reason != c.reason {
			t.Fatalf("%s: push err = %v, want reason %s", c.name, err, c.reason)
		}
		if strings.Contains(err.Error(), testToken) {
			t.Fatalf("%s: error leaks the token: %v", c.name, err)
		}
	}
	res, err := m.Push(ctx, wt, PushRequest{Auth: auth})
	if err != nil {
		t.Fatal(err)
	}
	if got := git(t, origin, "rev-parse", "refs/heads/nightshift/t1"); got != res.New {
		t.Fatalf("origin has %s, pushed %s", got, res.New)
	}
	// Three objects: the commit, the root tree, the changed blob.
	if res.Objects != 3 {
		t.Errorf("pushed %d objects, want 3", res.Objects)
	}

	// Someone else moves the branch: a non-fast-forward push is refused
	// locally, and with Force the server's denyNonFastForwards refuses it.
	other := t.TempDir()
	git(t, other, "clone", "-q", origin, "c")
	clone := filepath.Join(other, "c")
	git(t, clone, "checkout", "-q", "nightshift/t1")
	writeFiles(t, clone, map[string]string{"b.txt": "theirs\n"})
	git(t, clone, "add", "-A")
	git(t, clone, "commit", "-q", "-m", "theirs")
	git(t, clone, "push", "-q", "origin", "nightshift/t1")

	writeFiles(t, wt.Dir, map[string]string{"a.txt": "changed again\n"})
	if _, err := m.Commit(ctx, wt, CommitRequest{Author: agent}); err != nil {
		t.Fatal(err)
	}
	_, err = m.Push(ctx, wt, PushRequest{Auth: auth})
	var pe *PushError
	if !errors.As(err, &pe) || pe.Reason != PushNonFastForward {
		t.Fatalf("non-fast-forward push err = %v", err)
	}
	git(t, origin, "config", "receive.denyNonFastForwards", "true")
	_, err = m.Push(ctx, wt, PushRequest{Auth: auth, Force: true})
	if !errors.As(err, &pe) || pe.Reason != PushNonFastForward {
		t.Fatalf("forced push against denyNonFastForwards err = %v", err)
	}

	// A pre-receive hook refusing the branch is a rejection.
	hook := filepath.Join(origin, "hooks", "pre-receive")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\necho 'protected branch' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = m.Push(ctx, wt, PushRequest{Auth: auth, Branch: "nightshift/other"})
	if !errors.As(err, &pe) || pe.Reason != PushRejected {
		t.Fatalf("hook-declined push err = %v", err)
	}
	if err := os.Remove(hook); err != nil {
		t.Fatal(err)
	}
	res, err = m.Push(ctx, wt, PushRequest{Auth: auth, Branch: "nightshift/other"})
	if err != nil {
		t.Fatal(err)
	}
	git(t, origin, "fsck", "--no-progress")
	if got := git(t, origin, "rev-parse", "refs/heads/nightshift/other"); got != res.New {
		t.Fatalf("origin has %s, pushed %s", got, res.New)
	}
}

func TestConcurrentProvisionsShareOneFetch(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
	srv := newGitServer(t, filepath.Dir(origin))
	srv.gate = make(chan struct{})
	url := srv.URL + "/" + filepath.Base(origin)
	m := newManager(t)
	ctx := context.Background()
	auth := Auth{Username: "x-access-token", Password: testToken}

	const n = 4
	var wg sync.WaitGroup
	errs := make([]error, n)
	outs := make([]*bytes.Buffer, n)
	for i := range n {
		outs[i] = &bytes.Buffer{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = m.Provision(ctx, Ref{TaskID: "t" + string(rune('a'+i)), Repo: url, Auth: auth}, &lockedWriter{w: outs[i]})
		}()
	}
	// Wait until all four wait on the same fetch, then let it through.
	deadline := time.Now().Add(10 * time.Second)
	for m.flights.waiters() < n {
		if time.Now().After(deadline) {
			close(srv.gate)
			t.Fatalf("only %d provisions joined the fetch", m.flights.waiters())
		}
		time.Sleep(time.Millisecond)
	}
	close(srv.gate)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("provision %d: %v", i, err)
		}
	}
	if got := srv.infoRefs.Load(); got != 1 {
		t.Fatalf("server saw %d fetches, want 1", got)
	}
	if got := atomic.LoadInt64(&m.fetches); got != 1 {
		t.Fatalf("manager started %d fetches, want 1", got)
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
