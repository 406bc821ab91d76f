package identityapi_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/smtp"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/identity/identityapi"
	"github.com/nightshift/nightshift/identity/local"
)

func setup(t *testing.T) (*identity.Service, *local.Provider, *httptest.Server) {
	t.Helper()
	ctx := context.Background()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "db")+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	p, err := local.New(db, local.Config{Domain: "agents.test", SMTPListen: "127.0.0.1:0", PhonePool: []string{"+15550000001"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(context.Background()) })
	s, err := identity.NewService(ctx, db, p, identity.Config{})
	if err != nil {
		t.Fatal(err)
	}
	h := identityapi.New(s, identityapi.Config{})
	mux := http.NewServeMux()
	mux.Handle("/api/v1/identities", h)
	mux.Handle("/api/v1/identities/", h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return s, p, srv
}

func call(t *testing.T, method, url, body string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, url, err, b)
		}
	}
	return resp.StatusCode
}

func TestAPI(t *testing.T) {
	t.Parallel()
	s, p, srv := setup(t)
	base := srv.URL + "/api/v1/identities"

	var created identityapi.Created
	if st := call(t, "POST", base, `{"task_id":"TASK1234xyz","repo":"github.com/acme/app"}`, &created); st != 201 {
		t.Fatalf("create status %d", st)
	}
	if created.Name != "agent-task1234" || created.Email != "agent-task1234@agents.test" || created.Phone != "+15550000001" || created.Token == "" {
		t.Fatalf("created %+v", created)
	}
	id, sc, err := s.Authenticate(context.Background(), created.Token)
	if err != nil || id.ID != created.ID || sc.TaskID != "TASK1234xyz" || sc.Repo != "github.com/acme/app" {
		t.Fatalf("token: %+v %+v %v", id, sc, err)
	}
	var solo identityapi.Created
	if st := call(t, "POST", base, ``, &solo); st != 201 || solo.TaskID != "" || !strings.HasPrefix(solo.Name, "agent-") {
		t.Fatalf("create without task: %d %+v", st, solo)
	}
	var list identityapi.List
	if st := call(t, "GET", base, "", &list); st != 200 || len(list.Identities) != 2 {
		t.Fatalf("list %d %+v", st, list)
	}
	var got identity.Identity
	if st := call(t, "GET", base+"/"+created.ID, "", &got); st != 200 || got.Email != created.Email {
		t.Fatalf("get %d %+v", st, got)
	}
	var e map[string]string
	if st := call(t, "GET", base+"/nope", "", &e); st != 404 || e["error"] == "" {
		t.Fatalf("unknown: %d %v", st, e)
	}
	if st := call(t, "GET", base+"/"+created.ID+"/messages?kind=fax", "", &e); st != 400 {
		t.Fatalf("bad kind: %d", st)
	}
	if st := call(t, "POST", base, `{"bogus":1}`, &e); st != 400 {
		t.Fatalf("unknown field: %d", st)
	}

	// A waiting OTP request returns once mail arrives.
	done := make(chan identityapi.OTP, 1)
	go func() {
		var o identityapi.OTP
		call(t, "GET", base+"/"+created.ID+"/otp?wait=30s", "", &o)
		done <- o
	}()
	msg := fmt.Sprintf("To: %s\r\nSubject: Verify\r\n\r\nYour code is 771234\r\n", created.Email)
	if err := smtp.SendMail(p.SMTPAddr(), nil, "a@example.com", []string{created.Email}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	select {
	case o := <-done:
		if !o.Found || o.OTP.Code != "771234" {
			t.Fatalf("otp %+v", o)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("otp wait did not return")
	}
	var msgs identityapi.Messages
	if st := call(t, "GET", base+"/"+created.ID+"/messages?kind=email", "", &msgs); st != 200 || len(msgs.Messages) != 1 || msgs.Messages[0].Subject != "Verify" {
		t.Fatalf("messages %d %+v", st, msgs)
	}
	var none identityapi.OTP
	if st := call(t, "GET", base+"/"+solo.ID+"/otp", "", &none); st != 200 || none.Found {
		t.Fatalf("otp of empty inbox: %d %+v", st, none)
	}
	if st := call(t, "DELETE", base+"/"+created.ID, "", nil); st != 204 {
		t.Fatalf("release %d", st)
	}
	if _, _, err := s.Authenticate(context.Background(), created.Token); err == nil {
		t.Fatal("token valid after release")
	}
}
