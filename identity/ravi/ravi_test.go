package ravi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/identity/identitytest"
	"github.com/nightshift/nightshift/identity/ravi"
)

const key = "ravi_mgmt_testkey"

// fakeRavi speaks the Ravi REST API's wire format for the endpoints the
// provider uses, with state in memory.
type fakeRavi struct {
	mu      sync.Mutex
	nextID  int
	ids     map[string]ravi.Identity
	mail    map[string][]ravi.EmailMessage // by identity uuid, one thread per sender
	sms     map[string][]ravi.SMSMessage   // by identity uuid, one conversation
	secrets map[string]map[string]string
	deleted []string
}

func newFake(t *testing.T) (*fakeRavi, *httptest.Server) {
	f := &fakeRavi{ids: map[string]ravi.Identity{}, mail: map[string][]ravi.EmailMessage{}, sms: map[string][]ravi.SMSMessage{}, secrets: map[string]map[string]string{}}
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(srv.Close)
	return f, srv
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeRavi) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+key {
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

func (f *fakeRavi) deliver(uuid string, kind identity.MessageKind, subject, body string) {
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

func newProvider(t *testing.T, srvURL string) *ravi.Provider {
	p, err := ravi.New(ravi.Config{APIURL: srvURL, Key: key, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConformance(t *testing.T) {
	t.Parallel()
	fakes := map[identity.Provider]*fakeRavi{}
	identitytest.Run(t, identitytest.Harness{
		SMS: true,
		New: func(t *testing.T) identity.Provider {
			f, srv := newFake(t)
			p := newProvider(t, srv.URL)
			fakes[p] = f
			return p
		},
		Deliver: func(t *testing.T, p identity.Provider, acct identity.Account, kind identity.MessageKind, subject, body string) {
			fakes[p].deliver(acct.Ref, kind, subject, body)
		},
	})
}

func TestReleaseDeletesAndOTP(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f, srv := newFake(t)
	p := newProvider(t, srv.URL)
	acct, err := p.Provision(ctx, identity.ProvisionRequest{IdentityID: "I1", Name: "agent-ravi1"})
	if err != nil {
		t.Fatal(err)
	}
	if acct.Email != "agent-ravi1@raviapp.test" || acct.Ref == "" || acct.Phone == "" {
		t.Fatalf("account %+v", acct)
	}
	f.mu.Lock()
	f.secrets[acct.Ref] = map[string]string{"API_TOKEN": "s3cret"}
	f.mu.Unlock()
	if v, err := p.Secret(ctx, acct, "API_TOKEN"); err != nil || v != "s3cret" {
		t.Fatalf("Secret = %q, %v", v, err)
	}
	if _, err := p.Secret(ctx, acct, "MISSING"); !errors.Is(err, ravi.ErrNotFound) {
		t.Fatalf("missing secret: %v", err)
	}
	f.deliver(acct.Ref, identity.KindSMS, "", "Your code is 918273")
	msgs, err := p.Messages(ctx, acct, identity.MessageQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if otp, ok := identity.FindOTP(msgs); !ok || otp.Code != "918273" || otp.Kind != identity.KindSMS {
		t.Fatalf("otp %+v %v", otp, ok)
	}
	if err := p.Release(ctx, acct); err != nil {
		t.Fatal(err)
	}
	if err := p.Release(ctx, acct); err != nil {
		t.Fatalf("release of a deleted identity: %v", err)
	}
	f.mu.Lock()
	deleted := append([]string(nil), f.deleted...)
	f.mu.Unlock()
	if len(deleted) != 1 || deleted[0] != acct.Ref {
		t.Fatalf("deleted %v", deleted)
	}
}

func TestTakenLocalPart(t *testing.T) {
	t.Parallel()
	f, srv := newFake(t)
	f.ids["x"] = ravi.Identity{UUID: "x", Email: "dummy@raviapp.test"}
	p := newProvider(t, srv.URL)
	acct, err := p.Provision(context.Background(), identity.ProvisionRequest{IdentityID: "I1", Name: "taken-elsewhere"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(acct.Email, "gen") || acct.Name != "taken-elsewhere" {
		t.Fatalf("account %+v", acct)
	}
}

func TestBadKey(t *testing.T) {
	t.Parallel()
	_, srv := newFake(t)
	p, err := ravi.New(ravi.Config{APIURL: srv.URL, Key: "wrong"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Provision(context.Background(), identity.ProvisionRequest{IdentityID: "I1", Name: "agent-x"})
	var apiErr *ravi.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 401 || !errors.Is(err, ravi.ErrAPI) {
		t.Fatalf("err %v", err)
	}
	if _, err := ravi.New(ravi.Config{APIURL: srv.URL}); err == nil || !strings.Contains(err.Error(), "Key") {
		t.Fatalf("missing key: %v", err)
	}
	if s := fmt.Sprint(ravi.Key("abc")); s != "REDACTED" {
		t.Fatalf("key prints as %q", s)
	}
}
