package local_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/smtp"
	"net/textproto"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/identity/identitytest"
	"github.com/nightshift/nightshift/identity/local"
)

const authToken = "12345"

func openDB(t *testing.T) *sql.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nightshift.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

type env struct {
	p   *local.Provider
	sms *httptest.Server
}

func start(t *testing.T, cfg local.Config) env {
	t.Helper()
	cfg.Domain = "agents.test"
	cfg.SMTPListen = "127.0.0.1:0"
	cfg.TwilioAuthToken = authToken
	if cfg.PhonePool == nil {
		cfg.PhonePool = []string{"+15550000001", "+15550000002"}
	}
	p, err := newProvider(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	mux := http.NewServeMux()
	mux.Handle("POST /hooks/sms", p.SMSHandler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return env{p: p, sms: srv}
}

func sendMail(addr, from string, to []string, msg string) error {
	return smtp.SendMail(addr, nil, from, to, []byte(strings.ReplaceAll(msg, "\n", "\r\n")))
}

func postSMS(t *testing.T, srvURL, to, from, body string, sign bool) *http.Response {
	t.Helper()
	form := url.Values{"MessageSid": {"SM" + strings.Repeat("a", 32)}, "AccountSid": {"AC" + strings.Repeat("b", 32)},
		"From": {from}, "To": {to}, "Body": {body}, "NumMedia": {"0"}}
	u := srvURL + "/hooks/sms"
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if sign {
		req.Header.Set("X-Twilio-Signature", local.TwilioSignature(authToken, u, form))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func TestConformance(t *testing.T) {
	t.Parallel()
	envs := map[identity.Provider]env{}
	identitytest.Run(t, identitytest.Harness{
		SMS: true,
		New: func(t *testing.T) identity.Provider {
			e := start(t, local.Config{})
			envs[e.p] = e
			return e.p
		},
		Deliver: func(t *testing.T, p identity.Provider, acct identity.Account, kind identity.MessageKind, subject, body string) {
			e := envs[p]
			if kind == identity.KindSMS {
				if resp := postSMS(t, e.sms.URL, acct.Phone, "+15551234567", body, true); resp.StatusCode != 200 {
					t.Fatalf("sms status %d", resp.StatusCode)
				}
				return
			}
			msg := fmt.Sprintf("From: sender@example.com\nTo: %s\nSubject: %s\n\n%s\n", acct.Email, subject, body)
			if err := sendMail(e.p.SMTPAddr(), "sender@example.com", []string{acct.Email}, msg); err != nil {
				t.Fatal(err)
			}
		},
	})
}

// TestTwilioSignatureDocumentedExamples checks the signature against the
// examples in Twilio's webhook security documentation and SDK tests.
func TestTwilioSignatureDocumentedExamples(t *testing.T) {
	for caller, want := range map[string]string{
		"+12349013030": "0/KCTR6DLpKmkAf8muzZqo1nDgQ=",
		"+14158675309": "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
	} {
		params := url.Values{"CallSid": {"CA1234567890ABCDE"}, "Caller": {caller}, "Digits": {"1234"}, "From": {caller}, "To": {"+18005551212"}}
		got := local.TwilioSignature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", params)
		if got != want {
			t.Errorf("signature for %s = %s, want %s", caller, got, want)
		}
		if !local.ValidTwilioSignature("12345", want, "https://mycompany.com/myapp.php?foo=1&bar=2", params) {
			t.Errorf("valid signature refused")
		}
		if local.ValidTwilioSignature("12346", want, "https://mycompany.com/myapp.php?foo=1&bar=2", params) {
			t.Errorf("signature with the wrong token accepted")
		}
	}
}

func TestSMTPRefusesUnknownAndReleased(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := start(t, local.Config{})
	acct, err := e.p.Provision(ctx, identity.ProvisionRequest{IdentityID: "ID1", Name: "agent-abc"})
	if err != nil {
		t.Fatal(err)
	}
	msg := "Subject: hi\n\nhello\n"
	for _, to := range []string{"nobody@agents.test", "agent-abc@other.test"} {
		err := sendMail(e.p.SMTPAddr(), "x@example.com", []string{to}, msg)
		var perr *textproto.Error
		if !errors.As(err, &perr) || perr.Code != 550 {
			t.Errorf("mail to %s: err %v, want 550", to, err)
		}
	}
	// Mixed-case address is the same mailbox.
	if err := sendMail(e.p.SMTPAddr(), "x@example.com", []string{"Agent-ABC@Agents.Test"}, msg); err != nil {
		t.Fatalf("mail to live identity: %v", err)
	}
	if err := e.p.Release(ctx, acct); err != nil {
		t.Fatal(err)
	}
	err = sendMail(e.p.SMTPAddr(), "x@example.com", []string{acct.Email}, msg)
	var perr *textproto.Error
	if !errors.As(err, &perr) || perr.Code != 550 {
		t.Errorf("mail to released identity: err %v, want 550", err)
	}
	msgs, err := e.p.Messages(ctx, acct, identity.MessageQuery{})
	if err != nil || len(msgs) != 1 {
		t.Fatalf("messages: %d %v", len(msgs), err)
	}
}

func TestSMTPSizeLimit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := start(t, local.Config{MaxMessageBytes: 1024})
	acct, err := e.p.Provision(ctx, identity.ProvisionRequest{IdentityID: "ID1", Name: "agent-big"})
	if err != nil {
		t.Fatal(err)
	}
	big := "Subject: big\n\n" + strings.Repeat("0123456789abcdef\n", 200)
	err = sendMail(e.p.SMTPAddr(), "x@example.com", []string{acct.Email}, big)
	var perr *textproto.Error
	if !errors.As(err, &perr) || perr.Code != 552 {
		t.Fatalf("oversized mail: err %v, want 552", err)
	}
	if msgs, _ := e.p.Messages(ctx, acct, identity.MessageQuery{}); len(msgs) != 0 {
		t.Fatalf("oversized mail stored")
	}
	if err := sendMail(e.p.SMTPAddr(), "x@example.com", []string{acct.Email}, "Subject: small\n\nok\n"); err != nil {
		t.Fatalf("small mail after a refused one: %v", err)
	}
}

func TestMIMEDecoding(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := start(t, local.Config{})
	acct, err := e.p.Provision(ctx, identity.ProvisionRequest{IdentityID: "ID1", Name: "agent-mime"})
	if err != nil {
		t.Fatal(err)
	}
	msg := `From: GitHub <noreply@github.com>
To: agent-mime@agents.test
Subject: =?UTF-8?B?WW91ciBjb2RlIOKAkyBHaXRIdWI=?=
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="b1"

--b1
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

<p>Click <a href=3D"https://github.com/verify?token=3Dabc123">here</a></p>
--b1--
`
	if err := sendMail(e.p.SMTPAddr(), "noreply@github.com", []string{acct.Email}, msg); err != nil {
		t.Fatal(err)
	}
	msgs, err := e.p.Messages(ctx, acct, identity.MessageQuery{})
	if err != nil || len(msgs) != 1 {
		t.Fatalf("%v %v", msgs, err)
	}
	if msgs[0].Subject != "Your code – GitHub" {
		t.Errorf("subject %q", msgs[0].Subject)
	}
	if !strings.Contains(msgs[0].Body, "https://github.com/verify?token=abc123") {
		t.Errorf("body %q lost the link", msgs[0].Body)
	}
	if _, link := identity.ExtractOTP(msgs[0].Body); link != "https://github.com/verify?token=abc123" {
		t.Errorf("link %q", link)
	}
}

func TestSMSWebhook(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := start(t, local.Config{PhonePool: []string{"+15550000009"}})
	acct, err := e.p.Provision(ctx, identity.ProvisionRequest{IdentityID: "ID1", Name: "agent-sms"})
	if err != nil {
		t.Fatal(err)
	}
	if acct.Phone != "+15550000009" {
		t.Fatalf("phone %q", acct.Phone)
	}
	second, err := e.p.Provision(ctx, identity.ProvisionRequest{IdentityID: "ID2", Name: "agent-sms2"})
	if err != nil || second.Phone != "" {
		t.Fatalf("pool of one leased twice: %+v %v", second, err)
	}
	if resp := postSMS(t, e.sms.URL, acct.Phone, "+1555", "code 4242", false); resp.StatusCode != 401 {
		t.Errorf("unsigned: %d", resp.StatusCode)
	}
	if resp := postSMS(t, e.sms.URL, "+15559999999", "+1555", "code 4242", true); resp.StatusCode != 404 {
		t.Errorf("unknown number: %d", resp.StatusCode)
	}
	resp := postSMS(t, e.sms.URL, acct.Phone, "+15551112222", "Your code is 4242", true)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/xml" {
		t.Fatalf("signed: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// Tampered body with the old signature.
	form := url.Values{"From": {"+1"}, "To": {acct.Phone}, "Body": {"x"}}
	req, _ := http.NewRequest(http.MethodPost, e.sms.URL+"/hooks/sms", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", local.TwilioSignature(authToken, e.sms.URL+"/hooks/sms", url.Values{"From": {"+1"}, "To": {acct.Phone}, "Body": {"y"}}))
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != 401 {
		t.Errorf("tampered: %d", r2.StatusCode)
	}
	msgs, err := e.p.Messages(ctx, acct, identity.MessageQuery{Kind: identity.KindSMS})
	if err != nil || len(msgs) != 1 || msgs[0].Body != "Your code is 4242" || msgs[0].From != "+15551112222" {
		t.Fatalf("stored sms: %+v %v", msgs, err)
	}
	// Released: number goes back to the pool and refuses SMS.
	if err := e.p.Release(ctx, acct); err != nil {
		t.Fatal(err)
	}
	if resp := postSMS(t, e.sms.URL, acct.Phone, "+1555", "late", true); resp.StatusCode != 404 {
		t.Errorf("released number: %d", resp.StatusCode)
	}
	third, err := e.p.Provision(ctx, identity.ProvisionRequest{IdentityID: "ID3", Name: "agent-sms3"})
	if err != nil || third.Phone != "+15550000009" {
		t.Fatalf("freed number not re-leased: %+v %v", third, err)
	}
	big := strings.Repeat("x", 70<<10)
	if resp := postSMS(t, e.sms.URL, third.Phone, "+1", big, true); resp.StatusCode != 413 {
		t.Errorf("oversized sms: %d", resp.StatusCode)
	}
}

// TestSMSSignatureURLVariants accepts a signature over the configured
// public URL with or without the default port, and nothing else.
func TestSMSSignatureURLVariants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := start(t, local.Config{PhonePool: []string{"+15550000077"}, SMSWebhookURL: "https://ns.example.com/hooks/sms"})
	acct, err := e.p.Provision(ctx, identity.ProvisionRequest{IdentityID: "ID1", Name: "agent-port"})
	if err != nil {
		t.Fatal(err)
	}
	for signed, want := range map[string]int{
		"https://ns.example.com/hooks/sms":      200,
		"https://ns.example.com:443/hooks/sms":  200,
		"https://ns.example.com:8443/hooks/sms": 401,
		e.sms.URL + "/hooks/sms":                401, // the internal URL is not what Twilio signed
	} {
		form := url.Values{"From": {"+1555"}, "To": {acct.Phone}, "Body": {"hi " + signed}}
		req, _ := http.NewRequest(http.MethodPost, e.sms.URL+"/hooks/sms", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Twilio-Signature", local.TwilioSignature(authToken, signed, form))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("signed over %s: status %d, want %d", signed, resp.StatusCode, want)
		}
	}
}
