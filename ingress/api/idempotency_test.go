package api

import (
	"errors"
	"strings"
	"testing"
)

// TestIdempotencyKeyReusedWithDifferentBody: the same key with the same
// body (however it is spelled) answers with the first task; with another
// body it is refused with 422 and creates nothing.
func TestIdempotencyKeyReusedWithDifferentBody(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.runScheduler(t)
	ts := serve(t, New(w.bus, w.store, Config{}))
	post := func(body, key string) reply {
		t.Helper()
		return call(t, "POST", ts.URL+"/api/v1/tasks", body, "Idempotency-Key: "+key)
	}
	var first, again CreateResponse
	r := post(`{"repo":"https://git.example/acme/r.git","prompt":"fix the build"}`, "deploy-42")
	if r.code != 202 {
		t.Fatalf("first: %d %s", r.code, r.body)
	}
	r.json(t, &first)
	// The same request, spelled differently: key order, spaces, blanks
	// around the prompt.
	r = post(`{ "prompt": "  fix the build\n", "repo": "https://git.example/acme/r.git" }`, "deploy-42")
	if r.code != 202 {
		t.Fatalf("retry with the same body: %d %s", r.code, r.body)
	}
	r.json(t, &again)
	if again.ID != first.ID {
		t.Fatalf("retry answered task %s, want %s", again.ID, first.ID)
	}
	for _, body := range []string{
		`{"repo":"https://git.example/acme/r.git","prompt":"delete the build"}`,
		`{"repo":"https://git.example/acme/other.git","prompt":"fix the build"}`,
		`{"repo":"https://git.example/acme/r.git","prompt":"fix the build","agent":"script"}`,
		`{"repo":"https://git.example/acme/r.git","prompt":"fix the build","branch":"release"}`,
	} {
		r = post(body, "deploy-42")
		if r.code != 422 {
			t.Fatalf("reused key with body %s: %d %s", body, r.code, r.body)
		}
		if msg := r.errorMsg(t); !strings.Contains(msg, "Idempotency-Key") || !strings.Contains(msg, "different request body") {
			t.Fatalf("422 message %q", msg)
		}
	}
	// Another key with the other body is a new task.
	var other CreateResponse
	r = post(`{"repo":"https://git.example/acme/r.git","prompt":"delete the build"}`, "deploy-43")
	if r.code != 202 {
		t.Fatalf("new key: %d %s", r.code, r.body)
	}
	r.json(t, &other)
	if other.ID == first.ID {
		t.Fatalf("new key answered the first task %s", first.ID)
	}
	task, err := w.store.Get(t.Context(), first.ID)
	if err != nil {
		t.Fatal(err)
	}
	if task.Prompt != "fix the build" {
		t.Fatalf("first task's prompt is %q", task.Prompt)
	}
}

// TestIdempotencyReleaseFreesTheKey: a claim released because its request
// could not be stored lets the key be used again with another body, while
// an unreleased claim still refuses one; the same body is always a retry.
func TestIdempotencyReleaseFreesTheKey(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	idem := &idempotency{js: w.bus.JetStream()}
	ctx := t.Context()
	first := bodyHash(CreateRequest{Repo: "https://git.example/acme/r.git", Prompt: "fix"})
	fixed := bodyHash(CreateRequest{Repo: "https://git.example/acme/r.git", Prompt: "fix the build"})
	release, err := idem.claim(ctx, "k1", first)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := idem.claim(ctx, "k1", first); err != nil {
		t.Fatalf("same body again: %v", err)
	}
	if _, err := idem.claim(ctx, "k1", fixed); !errors.Is(err, errKeyReused) {
		t.Fatalf("another body while claimed: %v, want errKeyReused", err)
	}
	release()
	if _, err := idem.claim(ctx, "k1", fixed); err != nil {
		t.Fatalf("another body after release: %v", err)
	}
	if _, err := idem.claim(ctx, "k1", first); !errors.Is(err, errKeyReused) {
		t.Fatalf("the released body after the new claim: %v, want errKeyReused", err)
	}
}
