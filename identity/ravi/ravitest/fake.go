// Package ravitest is a fake Ravi API for tests of the ravi provider and of
// anything that runs Nightshift with identity.provider: ravi.
package ravitest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/identity/ravi"
)

// Key is the management key the fake accepts.
const Key = "ravi_mgmt_testkey"

// Fake speaks the Ravi REST API's wire format for the endpoints the
// provider uses (/api/identities/, /api/email-inbox/, /api/sms-inbox/,
// /api/secrets/ with a bearer key and ?identity=), with state in memory.
type Fake struct {
	mu      sync.Mutex
	nextID  int
	ids     map[string]ravi.Identity
	mail    map[string][]ravi.EmailMessage // by identity uuid, one thread per sender
	sms     map[string][]ravi.SMSMessage   // by identity uuid, one conversation
	secrets map[string]map[string]string
	deleted []string
	// URL is the fake's base URL (ravi.Config.APIURL).
	URL string
}

// New starts a fake Ravi API on loopback, closed when the test ends. It
// accepts requests authorized with Key.
func New(t testing.TB) *Fake {
	f := &Fake{ids: map[string]ravi.Identity{}, mail: map[string][]ravi.EmailMessage{}, sms: map[string][]ravi.SMSMessage{}, secrets: map[string]map[string]string{}}
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

// SetSecret stores a secret for the identity with uuid.
func (f *Fake) SetSecret(uuid, key, value string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.secrets[uuid] == nil {
		f.secrets[uuid] = map[string]string{}
	}
	f.secrets[uuid][key] = value
}

// Deleted returns the uuids of deleted identities, in order.
func (f *Fake) Deleted() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.deleted...)
}

// Identities returns the live identities.
func (f *Fake) Identities() []ravi.Identity {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []ravi.Identity
	for _, id := range f.ids {
		out = append(out, id)
	}
	return out
}

// Add makes an identity exist, as if created elsewhere.
func (f *Fake) Add(id ravi.Identity) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ids[id.UUID] = id
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *Fake) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+Key {
		writeJSON(w, 401, map[string]string{"detail": "Authentication credentials were not provided."})
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	path := r.URL.Path
	uuid := r.URL.Query().Get("identity")
	scoped := func() bool {
		if _, ok := f.ids[uuid]; !ok {
			writeJSON(w, 404, map[string]string{"detail": "Not found."})
			return false
		}
		return true
	}
	switch {
	case r.Method == http.MethodPost && path == "/api/identities/":
		var req struct{ Name, Email string }
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Name == "" {
			writeJSON(w, 400, map[string]string{"detail": "name is required"})
			return
		}
		f.nextID++
		local := req.Email
		if local == "" {
			local = fmt.Sprintf("gen%d", f.nextID)
		}
		for _, other := range f.ids {
			if other.Email == local+"@raviapp.test" || (local == "taken-elsewhere") {
				writeJSON(w, 400, map[string]string{"detail": "email: this address is already in use"})
				return
			}
		}
		id := ravi.Identity{UUID: fmt.Sprintf("00000000-0000-4000-8000-%012d", f.nextID), Name: req.Name,
			Email: local + "@raviapp.test", Phone: fmt.Sprintf("+1555000%04d", f.nextID), CreatedDt: time.Now().UTC().Format(time.RFC3339)}
		f.ids[id.UUID] = id
		writeJSON(w, 201, id)
	case r.Method == http.MethodDelete && strings.HasPrefix(path, "/api/identities/"):
		u := strings.Trim(strings.TrimPrefix(path, "/api/identities/"), "/")
		if _, ok := f.ids[u]; !ok {
			writeJSON(w, 404, map[string]string{"detail": "Not found."})
			return
		}
		delete(f.ids, u)
		f.deleted = append(f.deleted, u)
		w.WriteHeader(204)
	case r.Method == http.MethodGet && path == "/api/email-inbox/":
		if !scoped() {
			return
		}
		threads := []ravi.EmailThread{}
		if ms := f.mail[uuid]; len(ms) > 0 {
			last := ms[len(ms)-1]
			threads = append(threads, ravi.EmailThread{ThreadID: "<thread-1@raviapp.test>", Subject: last.Subject, Preview: last.TextContent,
				FromEmail: last.FromEmail, Inbox: f.ids[uuid].Email, MessageCount: len(ms), LatestMessageDt: last.CreatedDt})
		}
		writeJSON(w, 200, threads)
	case r.Method == http.MethodGet && strings.HasPrefix(path, "/api/email-inbox/"):
		if !scoped() {
			return
		}
		if strings.Trim(strings.TrimPrefix(path, "/api/email-inbox/"), "/") != "<thread-1@raviapp.test>" {
			writeJSON(w, 404, map[string]string{"detail": "Not found."})
			return
		}
		writeJSON(w, 200, ravi.EmailThreadDetail{ThreadID: "<thread-1@raviapp.test>", MessageCount: len(f.mail[uuid]), Messages: f.mail[uuid]})
	case r.Method == http.MethodGet && path == "/api/sms-inbox/":
		if !scoped() {
			return
		}
		convs := []ravi.SMSConversation{}
		if ms := f.sms[uuid]; len(ms) > 0 {
			convs = append(convs, ravi.SMSConversation{ConversationID: "1_+15557654321", FromNumber: "+15557654321", PhoneNumber: f.ids[uuid].Phone,
				Preview: ms[len(ms)-1].Body, MessageCount: len(ms), LatestMessageDt: ms[len(ms)-1].CreatedDt})
		}
		writeJSON(w, 200, convs)
	case r.Method == http.MethodGet && strings.HasPrefix(path, "/api/sms-inbox/"):
		if !scoped() {
			return
		}
		writeJSON(w, 200, ravi.SMSConversationDetail{ConversationID: "1_+15557654321", FromNumber: "+15557654321", MessageCount: len(f.sms[uuid]), Messages: f.sms[uuid]})
	case r.Method == http.MethodGet && path == "/api/secrets/":
		if !scoped() {
			return
		}
		out := []map[string]any{}
		k := r.URL.Query().Get("key")
		if v, ok := f.secrets[uuid][k]; ok {
			out = append(out, map[string]any{"uuid": "s1", "identity": 1, "key": k, "value": v, "notes": ""})
		}
		writeJSON(w, 200, out)
	default:
		writeJSON(w, 404, map[string]string{"detail": "Not found."})
	}
}

// Deliver puts an incoming mail (or SMS) into the identity's inbox.
func (f *Fake) Deliver(uuid string, kind identity.MessageKind, subject, body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	now := time.Now().UTC()
	if kind == identity.KindSMS {
		f.sms[uuid] = append(f.sms[uuid], ravi.SMSMessage{ID: f.nextID, Body: body, Direction: "incoming", CreatedDt: now})
		return
	}
	f.mail[uuid] = append(f.mail[uuid], ravi.EmailMessage{ID: f.nextID, FromEmail: "noreply@example.com", ToEmail: f.ids[uuid].Email,
		Subject: subject, TextContent: body, Direction: "incoming", CreatedDt: now})
	// An outgoing reply in the same thread must not be reported.
	f.nextID++
	f.mail[uuid] = append(f.mail[uuid], ravi.EmailMessage{ID: f.nextID, FromEmail: f.ids[uuid].Email, ToEmail: "noreply@example.com",
		Subject: "Re: " + subject, TextContent: "reply", Direction: "outgoing", CreatedDt: now.Add(-time.Millisecond)})
}
