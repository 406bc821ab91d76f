package identity_test

import (
	"context"
	"fmt"
	"net/smtp"
	"testing"
	"time"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/identity/local"
)

func TestExtractOTP(t *testing.T) {
	for _, tc := range []struct{ text, code, link string }{
		{"Your verification code is 482913.", "482913", ""},
		{"G-482913 is your Google verification code.", "G-482913", ""},
		{"Use code ABC-123 to sign in", "ABC-123", ""},
		{"Your one-time passcode: 7K9Q2X", "7K9Q2X", ""},
		{"Your code is 123 456", "123 456", ""},
		{"PIN 4821", "4821", ""},
		{"Order 2026 shipped. Your login code: 55821", "55821", ""},
		{"Meeting in 2026 at 10", "", ""},
		{"Hello WORLD, nothing here", "", ""},
		{"Confirm your account: https://app.example.com/confirm?token=abcDEF123. Thanks", "", "https://app.example.com/confirm?token=abcDEF123"},
		{"See https://example.com/docs and https://x.test/magic/login?t=1", "", "https://x.test/magic/login?t=1"},
		{"Call 5551234567 for help", "", ""},
		{"Your Slack code: 123-456", "123-456", ""},
		{"483921 is your Instagram code. Don't share it.", "483921", ""},
		{"Order #12345 shipped. Total $1999.", "", ""},
		{"Thanks for order #55512. Your confirmation code is 7731.", "7731", ""},
	} {
		code, link := identity.ExtractOTP(tc.text)
		if code != tc.code || link != tc.link {
			t.Errorf("ExtractOTP(%q) = %q, %q; want %q, %q", tc.text, code, link, tc.code, tc.link)
		}
	}
}

func TestFindOTPNewestFirst(t *testing.T) {
	now := time.Now()
	msgs := []identity.Message{
		{ID: "3", Body: "Welcome aboard, no code here", ReceivedAt: now},
		{ID: "2", Body: "Your code is 222222", ReceivedAt: now.Add(-time.Minute)},
		{ID: "1", Body: "Your code is 111111", ReceivedAt: now.Add(-2 * time.Minute)},
	}
	otp, ok := identity.FindOTP(msgs)
	if !ok || otp.Code != "222222" || otp.MessageID != "2" {
		t.Fatalf("FindOTP = %+v %v", otp, ok)
	}
}

// TestOTPWaitWakesOnMail waits for a code, then sends the mail over SMTP:
// the wait must return with the code well before its timeout.
func TestOTPWaitWakesOnMail(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, p := newBackend(t, local.Config{Domain: "agents.test", SMTPListen: "127.0.0.1:0"}, identity.Config{})
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(context.Background()) })
	id, err := s.ForTask(ctx, "T1234567")
	if err != nil {
		t.Fatal(err)
	}
	// Nothing yet: no wait returns at once with nothing.
	if _, found, err := s.OTP(ctx, id.ID, identity.MessageQuery{}, 0); err != nil || found {
		t.Fatalf("empty inbox: found=%v err=%v", found, err)
	}
	type result struct {
		otp   identity.OTP
		found bool
		err   error
		took  time.Duration
	}
	res := make(chan result, 1)
	go func() {
		start := time.Now()
		otp, found, err := s.OTP(ctx, id.ID, identity.MessageQuery{Kind: identity.KindEmail}, time.Minute)
		res <- result{otp, found, err, time.Since(start)}
	}()
	// The waiter may not be waiting yet; the mail is delivered either way
	// and the wait must see it.
	msg := fmt.Sprintf("To: %s\r\nSubject: Sign in\r\n\r\nYour verification code is 604213\r\n", id.Email)
	if err := smtp.SendMail(p.SMTPAddr(), nil, "auth@example.com", []string{id.Email}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-res:
		if r.err != nil || !r.found || r.otp.Code != "604213" || r.otp.Kind != identity.KindEmail {
			t.Fatalf("OTP = %+v found=%v err=%v", r.otp, r.found, r.err)
		}
		t.Logf("wait returned %v after start", r.took)
	case <-time.After(30 * time.Second):
		t.Fatal("OTP wait did not return after the mail arrived")
	}
	// WaitMessages with a since after the message and a short wait: empty.
	msgs, err := s.WaitMessages(ctx, id.ID, identity.MessageQuery{Since: time.Now()}, 50*time.Millisecond)
	if err != nil || len(msgs) != 0 {
		t.Fatalf("WaitMessages since now = %v, %v", msgs, err)
	}
	// A cancelled context ends the wait with its error.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := s.OTP(cctx, id.ID, identity.MessageQuery{Since: time.Now()}, time.Minute); err == nil {
		t.Fatal("cancelled wait returned no error")
	}
}
