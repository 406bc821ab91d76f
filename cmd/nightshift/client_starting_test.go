package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// TestClientWaitsForAStartingServer: a request a starting server answered
// with its "starting" 503 is sent again, body and all, until it is served.
func TestClientWaitsForAStartingServer(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if calls.Add(1) <= 2 {
			w.Header().Set("Retry-After", "5")
			w.Header().Set(startingHeader, "1")
			writeJSONError(w, http.StatusServiceUnavailable, "starting: try again in a moment")
			return
		}
		if string(b) != `{"prompt":"p"}` {
			http.Error(w, "lost body: "+string(b), 400)
			return
		}
		w.Write([]byte(`{"id":"t1"}`))
	}))
	defer srv.Close()
	c := &client{base: srv.URL, hc: srv.Client()}
	var out struct{ ID string }
	if err := c.do(context.Background(), "POST", "/api/v1/tasks", map[string]string{"prompt": "p"}, &out); err != nil || out.ID != "t1" {
		t.Fatalf("after the server started: %+v %v", out, err)
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("%d requests, want 3", n)
	}
	// Any other 503 is an answer, not a reason to wait.
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSONError(w, http.StatusServiceUnavailable, "the task could not be stored; try again")
	}))
	defer other.Close()
	c = &client{base: other.URL, hc: other.Client()}
	if err := c.do(context.Background(), "POST", "/api/v1/tasks", map[string]string{"prompt": "p"}, &out); err == nil {
		t.Fatal("a 503 that is not a starting server was retried into success")
	}
}
