package main

import (
	"fmt"
	"net/smtp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/nightshift/nightshift/bench/cluster"
	"github.com/nightshift/nightshift/orchestrator"
)

// TestBoardShowsIdentityInbox mails the task's identity through the
// built-in SMTP intake and reads the mail on the task page.
func TestBoardShowsIdentityInbox(t *testing.T) {
	t.Parallel()
	yaml, gates := gatedYAML(t)
	yaml, smtpAddr := withSMTP(t, yaml)
	s := startTestServer(t, yaml)
	origin := newOrigin(t)
	id := s.dispatch(t, origin, "gated", "sign up somewhere")
	task := s.waitState(t, id, 60*time.Second, orchestrator.StateRunning)
	if task.Identity.Email == "" {
		t.Fatalf("running task without identity: %+v", task.Identity)
	}
	mail := func(subject, body string) { mailTo(t, smtpAddr, task.Identity.Email, subject, body) }
	mail("Your code", "Your verification code is 482913.")

	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(s.URL+"/tasks/"+id)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "inbox shows the mail", `document.getElementById("inbox").innerText.includes("482913")`)
	inbox := evalJS[string](t, ctx, `document.getElementById("inbox").innerText`)
	for _, want := range []string{"noreply@service.test", "Your code", "email"} {
		if !strings.Contains(strings.ToLower(inbox), strings.ToLower(want)) {
			t.Errorf("inbox lacks %q:\n%s", want, inbox)
		}
	}
	mail("Welcome", "Thanks for signing up.")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#btn-inbox"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "refresh shows the second mail", `document.querySelectorAll("#inbox li").length === 2`)
	openGate(t, gates, id)
	s.waitState(t, id, 60*time.Second, orchestrator.StateReview)
}

// withSMTP gives the identity provider's mail intake a known free port.
func withSMTP(t *testing.T, yaml string) (string, string) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", cluster.FreePort(t))
	return strings.Replace(yaml, `smtp_listen: "127.0.0.1:0"`, `smtp_listen: "`+addr+`"`, 1), addr
}

// mailTo sends a plain mail through the SMTP intake at addr.
func mailTo(t *testing.T, addr, to, subject, body string) {
	t.Helper()
	msg := "From: Service <noreply@service.test>\r\nTo: " + to + "\r\nSubject: " + subject + "\r\n\r\n" + body + "\r\n"
	if err := smtp.SendMail(addr, nil, "noreply@service.test", []string{to}, []byte(msg)); err != nil {
		t.Fatalf("send mail: %v", err)
	}
}
