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

// BenchmarkMailToOTP measures one SMTP delivery to a waiting OTP call:
// from the start of the SMTP session until the wait returns the code.
func BenchmarkMailToOTP(b *testing.B) {
	ctx := context.Background()
	s, p := newBackend(b, local.Config{Domain: "agents.test", SMTPListen: "127.0.0.1:0"}, identity.Config{})
	if err := p.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Stop(context.Background()) })
	id, err := s.ForTask(ctx, "BENCH0001")
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		since := time.Now()
		code := fmt.Sprintf("%06d", 100000+i%900000)
		done := make(chan string, 1)
		go func() {
			otp, _, _ := s.OTP(ctx, id.ID, identity.MessageQuery{Since: since}, 10*time.Second)
			done <- otp.Code
		}()
		msg := fmt.Sprintf("To: %s\r\nSubject: Code\r\n\r\nYour code is %s\r\n", id.Email, code)
		if err := smtp.SendMail(p.SMTPAddr(), nil, "a@example.com", []string{id.Email}, []byte(msg)); err != nil {
			b.Fatal(err)
		}
		if got := <-done; got != code {
			b.Fatalf("code %q, want %q", got, code)
		}
	}
}
