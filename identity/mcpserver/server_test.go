package mcpserver_test

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/smtp"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/identity/local"
	"github.com/nightshift/nightshift/identity/mcpserver"
	"github.com/nightshift/nightshift/vault"
)

type fixture struct {
	ids   *identity.Service
	p     *local.Provider
	v     *vault.Vault
	srv   *httptest.Server
	url   string
	mu    sync.Mutex
	audit []mcpserver.AuditEvent
}

func (f *fixture) events() []mcpserver.AuditEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]mcpserver.AuditEvent(nil), f.audit...)
}

func setup(t *testing.T, opts ...func(*mcpserver.Config)) *fixture {
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
	ids, err := identity.NewService(ctx, db, p, identity.Config{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := vault.Open(ctx, db, vault.EnvKey(hex.EncodeToString(make([]byte, 32))), vault.Config{})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{ids: ids, p: p, v: v}
	cfg := mcpserver.Config{Audit: func(_ context.Context, ev mcpserver.AuditEvent) {
		f.mu.Lock()
		f.audit = append(f.audit, ev)
		f.mu.Unlock()
	}}
	for _, o := range opts {
		o(&cfg)
	}
	s := mcpserver.NewServer(ids, v, cfg)
	mux := http.NewServeMux()
	mux.Handle("/mcp", s.Handler())
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	f.url = f.srv.URL + "/mcp"
	return f
}

func (f *fixture) agent(t *testing.T, taskID, repo, agentName string) (identity.Identity, string) {
	t.Helper()
	id, err := f.ids.ForTask(context.Background(), taskID)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := f.ids.IssueToken(context.Background(), id.ID, identity.Scope{TaskID: taskID, Repo: repo, Agent: agentName})
	if err != nil {
		t.Fatal(err)
	}
	return id, tok
}

func dial(t *testing.T, url, tok string) *mcpserver.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := mcpserver.Dial(ctx, url, tok, mcpserver.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRequiresToken(t *testing.T) {
	t.Parallel()
	f := setup(t)
	for _, auth := range []string{"", "Bearer ", "Bearer nsa_bogus", "Basic abc"} {
		req, _ := http.NewRequest(http.MethodPost, f.url, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("auth %q: status %d", auth, resp.StatusCode)
		}
	}
}

// TestAgentReadsOTPFromMail is the package end-to-end: an identity is
// created, the agent reads its email over MCP, mail is sent to it over
// SMTP while the agent waits in check_inbox, and check_inbox returns the
// code.
func TestAgentReadsOTPFromMail(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	id, tok := f.agent(t, "01JDTASKAAAA", "github.com/acme/app", "claude")
	c := dial(t, f.url, tok)

	email, err := c.Text(ctx, mcpserver.ToolGetEmail, nil)
	if err != nil || email != id.Email || email != "agent-01jdtask@agents.test" {
		t.Fatalf("get_email = %q, %v", email, err)
	}
	phone, err := c.Text(ctx, mcpserver.ToolGetPhone, nil)
	if err != nil || phone != "+15550000001" {
		t.Fatalf("get_phone = %q, %v", phone, err)
	}
	var who mcpserver.IdentityResult
	if err := c.JSON(ctx, mcpserver.ToolGetIdentity, nil, &who); err != nil || who.Name != "agent-01jdtask" || who.TaskID != "01JDTASKAAAA" || who.Owner == "" {
		t.Fatalf("get_identity = %+v, %v", who, err)
	}

	since := time.Now().UTC()
	type result struct {
		r   mcpserver.InboxResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		var r mcpserver.InboxResult
		err := c.JSON(ctx, mcpserver.ToolCheckInbox, map[string]any{"since": since.Format(time.RFC3339Nano), "wait_seconds": 30}, &r)
		done <- result{r, err}
	}()
	msg := fmt.Sprintf("From: Acme <no-reply@acme.example>\r\nTo: %s\r\nSubject: Your Acme sign-in code\r\n\r\nYour verification code is 318604. It expires in 10 minutes.\r\n", email)
	if err := smtp.SendMail(f.p.SMTPAddr(), nil, "no-reply@acme.example", []string{email}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if len(r.r.Messages) != 1 || r.r.OTP == nil || r.r.OTP.Code != "318604" || r.r.Messages[0].Subject != "Your Acme sign-in code" {
			t.Fatalf("check_inbox = %+v", r.r)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("check_inbox did not return after the mail arrived")
	}
	// check_sms without wait: nothing yet.
	var sms mcpserver.InboxResult
	if err := c.JSON(ctx, mcpserver.ToolCheckSMS, nil, &sms); err != nil || len(sms.Messages) != 0 || sms.OTP != nil {
		t.Fatalf("check_sms = %+v, %v", sms, err)
	}
	var tools []string
	for _, ev := range f.events() {
		if ev.IdentityID != id.ID || ev.TaskID != "01JDTASKAAAA" {
			t.Errorf("audit event for the wrong caller: %+v", ev)
		}
		tools = append(tools, ev.Tool+":"+ev.Outcome)
	}
	if got := strings.Join(tools, ","); got != "get_email:ok,get_phone:ok,get_identity:ok,check_inbox:ok,check_sms:ok" {
		t.Errorf("audit = %s", got)
	}
}

func TestSecretsAreScoped(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	op := vault.Actor{Kind: vault.ActorOperator, ID: "test"}
	for _, s := range []struct{ name, scope, value string }{
		{"API_KEY", "agents", "agents-value"},
		{"API_KEY", "repo:github.com/acme/*", "repo-value"},
		{"API_KEY", "task:TASKBBBB01", "task-b-value"},
		{"DEPLOY_KEY", "repo:github.com/other/thing", "other-repo"},
		{"AGENT_ONLY", "agent:codex", "codex-only"},
	} {
		if _, err := f.v.Set(ctx, op, s.name, s.scope, []byte(s.value)); err != nil {
			t.Fatal(err)
		}
	}
	_, tokA := f.agent(t, "TASKAAAA01", "github.com/acme/app", "claude")
	_, tokB := f.agent(t, "TASKBBBB01", "github.com/acme/app", "claude")
	a, b := dial(t, f.url, tokA), dial(t, f.url, tokB)

	if v, err := a.Text(ctx, mcpserver.ToolGetSecret, map[string]any{"name": "API_KEY"}); err != nil || v != "repo-value" {
		t.Errorf("task A API_KEY = %q, %v (want the repo scope)", v, err)
	}
	if v, err := b.Text(ctx, mcpserver.ToolGetSecret, map[string]any{"name": "API_KEY"}); err != nil || v != "task-b-value" {
		t.Errorf("task B API_KEY = %q, %v (want its task scope)", v, err)
	}
	for _, name := range []string{"DEPLOY_KEY", "AGENT_ONLY", "MISSING"} {
		_, err := a.Text(ctx, mcpserver.ToolGetSecret, map[string]any{"name": name})
		if !errors.Is(err, mcpserver.ErrToolNotFound) {
			t.Errorf("task A %s: err %v, want not found", name, err)
		}
	}
	if _, err := a.Text(ctx, mcpserver.ToolGetSecret, map[string]any{"name": "bad name"}); err == nil {
		t.Error("invalid name accepted")
	}
	// Each token sees only its own identity.
	ea, _ := a.Text(ctx, mcpserver.ToolGetEmail, nil)
	eb, _ := b.Text(ctx, mcpserver.ToolGetEmail, nil)
	if ea == eb || !strings.HasPrefix(ea, "agent-taskaaaa@") || !strings.HasPrefix(eb, "agent-taskbbbb@") {
		t.Errorf("emails %q %q", ea, eb)
	}
	// The vault audited the reads with the task as actor.
	entries, err := f.v.AuditLog(ctx, op, vault.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	taskReads := 0
	for _, e := range entries {
		if e.ActorKind == vault.ActorTask && (e.ActorID == "TASKAAAA01" || e.ActorID == "TASKBBBB01") {
			taskReads++
		}
	}
	if taskReads < 5 {
		t.Errorf("vault audited %d task reads, want at least 5", taskReads)
	}
	var secretEvents int
	for _, ev := range f.events() {
		if ev.Tool == mcpserver.ToolGetSecret {
			secretEvents++
			if ev.Secret == "" {
				t.Errorf("audit event without secret name: %+v", ev)
			}
		}
	}
	if secretEvents != 6 {
		t.Errorf("%d get_secret audit events, want 6", secretEvents)
	}
	// Releasing the task revokes its token.
	if err := f.ids.Release(ctx, "TASKAAAA01"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Text(ctx, mcpserver.ToolGetEmail, nil); err == nil {
		t.Error("released token still works")
	}
}

func TestStdioBridge(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	id, tok := f.agent(t, "TASKSTDIO1", "github.com/acme/app", "claude")
	remote := dial(t, f.url, tok)

	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	errc := make(chan error, 1)
	go func() { errc <- mcpserver.ServeStdio(ctx, remote, inR, outW, io.Discard); outW.Close() }()

	lines := make(chan string, 16)
	go func() {
		buf := make([]byte, 0, 64<<10)
		tmp := make([]byte, 4096)
		for {
			n, err := outR.Read(tmp)
			buf = append(buf, tmp[:n]...)
			for {
				i := strings.IndexByte(string(buf), '\n')
				if i < 0 {
					break
				}
				lines <- string(buf[:i])
				buf = buf[i+1:]
			}
			if err != nil {
				close(lines)
				return
			}
		}
	}()
	send := func(s string) {
		if _, err := io.WriteString(inW, s+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	recv := func() string {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("stdio closed")
			}
			return l
		case <-time.After(10 * time.Second):
			t.Fatal("no answer on stdout")
		}
		return ""
	}
	send(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`)
	if l := recv(); !strings.Contains(l, `"id":1`) || !strings.Contains(l, "nightshift-identity") {
		t.Fatalf("initialize answer %s", l)
	}
	send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	send(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_email","arguments":{}}}`)
	if l := recv(); !strings.Contains(l, `"id":2`) || !strings.Contains(l, id.Email) {
		t.Fatalf("get_email answer %s", l)
	}
	send(`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get_secret","arguments":{"name":"NOPE"}}}`)
	if l := recv(); !strings.Contains(l, `"id":3`) || !strings.Contains(l, `"isError":true`) {
		t.Fatalf("get_secret answer %s", l)
	}
	inW.Close()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("ServeStdio: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeStdio did not return at end of input")
	}
}

// TestServerSecretsAreNeverServed: get_secret answers a secret only the
// server may read (set as server, or under its old name global) exactly as
// it answers a missing one, so an agent learns neither its value nor that
// it exists; secrets granted with agents or repo:<glob> are served, the
// repo glob matching the task's clone URL through RepoKey.
func TestServerSecretsAreNeverServed(t *testing.T) {
	t.Parallel()
	repoKey := func(repo string) string {
		return strings.TrimSuffix(strings.TrimPrefix(repo, "https://"), ".git")
	}
	f := setup(t, func(c *mcpserver.Config) { c.RepoKey = repoKey })
	ctx := context.Background()
	op := vault.Actor{Kind: vault.ActorOperator, ID: "test"}
	for _, s := range []struct{ name, scope, value string }{
		{"ANTHROPIC_API_KEY", "server", "sk-ant-server-only"},
		{"GITHUB_TOKEN", "global", "ghp-server-only"},
		{"SHARED_TOKEN", "agents", "shared-for-agents"},
		{"ACME_TOKEN", "repo:github.com/acme/*", "acme-repo-token"},
		{"OTHER_TOKEN", "repo:github.com/other/*", "other-repo-token"},
	} {
		if _, err := f.v.Set(ctx, op, s.name, s.scope, []byte(s.value)); err != nil {
			t.Fatal(err)
		}
	}
	_, tok := f.agent(t, "TASKSRV001", "https://github.com/acme/app.git", "claude")
	c := dial(t, f.url, tok)
	refusal := func(name string) string {
		t.Helper()
		v, err := c.Text(ctx, mcpserver.ToolGetSecret, map[string]any{"name": name})
		if !errors.Is(err, mcpserver.ErrToolNotFound) {
			t.Fatalf("get_secret %s = %q, %v; want not found", name, v, err)
		}
		return strings.ReplaceAll(err.Error(), name, "NAME")
	}
	missing := refusal("NO_SUCH_SECRET")
	for _, name := range []string{"ANTHROPIC_API_KEY", "GITHUB_TOKEN", "OTHER_TOKEN"} {
		if got := refusal(name); got != missing {
			t.Errorf("get_secret %s refused with %q, a missing secret with %q: an existence oracle", name, got, missing)
		}
	}
	for name, want := range map[string]string{"SHARED_TOKEN": "shared-for-agents", "ACME_TOKEN": "acme-repo-token"} {
		if v, err := c.Text(ctx, mcpserver.ToolGetSecret, map[string]any{"name": name}); err != nil || v != want {
			t.Errorf("get_secret %s = %q, %v; want %q", name, v, err, want)
		}
	}
	for _, ev := range f.events() {
		switch ev.Secret {
		case "ANTHROPIC_API_KEY", "GITHUB_TOKEN", "OTHER_TOKEN", "NO_SUCH_SECRET":
			if ev.Outcome != "not_found" {
				t.Errorf("audit %s: outcome %q, want not_found", ev.Secret, ev.Outcome)
			}
		}
	}
}
