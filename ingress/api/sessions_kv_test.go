package api

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestKVSessionsSurviveARestart logs in on one server and uses the cookie
// on another built over the same NATS, as after a restart or on a second
// ingress process.
func TestKVSessionsSurviveARestart(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	now := time.Now()
	clock := func() time.Time { return now }
	store1, key1, err := NewKVSessionStore(ctx, w.bus.JetStream(), time.Hour, clock)
	if err != nil {
		t.Fatal(err)
	}
	store2, key2, err := NewKVSessionStore(ctx, w.bus.JetStream(), time.Hour, clock)
	if err != nil {
		t.Fatal(err)
	}
	if len(key1) != 32 || !bytes.Equal(key1, key2) {
		t.Fatalf("signing keys differ or are short: %x %x", key1, key2)
	}
	cfg := Config{AdminTokens: []string{"adm1n"}, Clock: clock, SessionTTL: time.Hour}
	cfg.Sessions, cfg.SessionKey = store1, key1
	a := serve(t, New(w.bus, w.store, cfg))
	cfg.Sessions, cfg.SessionKey = store2, key2
	b := serve(t, New(w.bus, w.store, cfg))

	r := call(t, "POST", a.URL+"/api/v1/session", `{"token":"adm1n"}`)
	if r.code != 200 || len(r.ck) != 1 {
		t.Fatalf("login: %d %s", r.code, r.body)
	}
	var info SessionInfo
	r.json(t, &info)
	cookie := "Cookie: " + SessionCookie + "=" + r.ck[0].Value
	var other SessionInfo
	rb := call(t, "GET", b.URL+"/api/v1/session", "", cookie)
	if rb.code != 200 {
		t.Fatalf("session on the other server: %d %s", rb.code, rb.body)
	}
	rb.json(t, &other)
	if other.CSRFToken != info.CSRFToken || other.Principal.Role != RoleAdmin {
		t.Fatalf("other server sees %+v", other)
	}
	// The bucket never holds the cookie's session id.
	keys, err := func() ([]string, error) {
		kv, err := w.bus.JetStream().KeyValue(ctx, SessionsBucket)
		if err != nil {
			return nil, err
		}
		return kv.Keys(ctx)
	}()
	sessionID, _, _ := strings.Cut(r.ck[0].Value, ".")
	if err != nil || len(keys) != 1 || keys[0] == sessionID || strings.Contains(r.ck[0].Value, keys[0]) {
		t.Fatalf("bucket keys %v (session %s) %v", keys, sessionID, err)
	}
	// Logout on b ends it on a too; expiry ends it anywhere.
	if r := call(t, "DELETE", b.URL+"/api/v1/session", "", cookie, CSRFHeader+": "+info.CSRFToken); r.code != 204 {
		t.Fatalf("logout: %d %s", r.code, r.body)
	}
	if r := call(t, "GET", a.URL+"/api/v1/tasks", "", cookie); r.code != 401 {
		t.Fatalf("after logout elsewhere: %d", r.code)
	}
	r = call(t, "POST", a.URL+"/api/v1/session", `{"token":"adm1n"}`)
	cookie = "Cookie: " + SessionCookie + "=" + r.ck[0].Value
	now = now.Add(2 * time.Hour)
	if r := call(t, "GET", b.URL+"/api/v1/tasks", "", cookie); r.code != 401 {
		t.Fatalf("expired session: %d", r.code)
	}
}
