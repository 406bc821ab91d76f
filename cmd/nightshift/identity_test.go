package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
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
	"github.com/nightshift/nightshift/identity/mcpserver"
	"github.com/nightshift/nightshift/vault"
)

// identityServer serves /api/v1/identities and /mcp over the real
// identity service, local provider (with SMTP) and vault.
type identityServer struct {
	url string
	ids *identity.Service
	p   *local.Provider
	v   *vault.Vault
}

func startIdentityServer(t *testing.T) *identityServer {
	t.Helper()
	ctx := context.Background()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "db")+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	p, err := local.New(db, local.Config{Domain: "agents.test", SMTPListen: "127.0.0.1:0", PhonePool: []string{"+15550000042"}})
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
	v, err := vault.Open(ctx, db, vault.EnvKey(hex.EncodeToString(bytes.Repeat([]byte{7}, 32))), vault.Config{})
	if err != nil {
		t.Fatal(err)
	}
	api := identityapi.New(ids, identityapi.Config{})
	mux := http.NewServeMux()
	mux.Handle("/api/v1/identities", api)
	mux.Handle("/api/v1/identities/", api)
	mux.Handle("/mcp", mcpserver.NewServer(ids, v, mcpserver.Config{Owner: "Ada Lovelace"}).Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &identityServer{url: srv.URL, ids: ids, p: p, v: v}
}

func runCLI(t *testing.T, env []string, stdin io.Reader, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	var out, errb bytes.Buffer
	err := run(ctx, args, env, stdin, &out, &errb)
	return out.String(), errb.String(), err
}

func TestIdentityCLI(t *testing.T) {
	t.Parallel()
	s := startIdentityServer(t)
	env := []string{"NIGHTSHIFT_SERVER=" + s.url}

	out, _, err := runCLI(t, env, nil, "nightshift", "identity", "new", "--json", "--task", "TASKCLI001", "--repo", "github.com/acme/app")
	if err != nil {
		t.Fatal(err)
	}
	var created struct{ ID, Name, Email, Phone, Token string }
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatalf("new --json: %v in %s", err, out)
	}
	if created.Name != "agent-taskcli0" || created.Email != "agent-taskcli0@agents.test" || created.Phone != "+15550000042" || !strings.HasPrefix(created.Token, "nsa_") {
		t.Fatalf("new --json = %+v", created)
	}
	out, _, err = runCLI(t, env, nil, "nightshift", "identity", "ls")
	if err != nil || !strings.Contains(out, created.ID) || !strings.Contains(out, "agent-taskcli0@agents.test") {
		t.Fatalf("ls: %v\n%s", err, out)
	}
	out, _, err = runCLI(t, env, nil, "nightshift", "identity", "show", created.ID, "--json")
	if err != nil || !strings.Contains(out, `"task_id": "TASKCLI001"`) {
		t.Fatalf("show --json: %v\n%s", err, out)
	}
	// otp with nothing received fails with a clear sentence.
	_, _, err = runCLI(t, env, nil, "nightshift", "identity", "otp", created.ID)
	if err == nil || !strings.Contains(err.Error(), "no one-time code") {
		t.Fatalf("otp on empty inbox: %v", err)
	}
	// otp --wait returns when mail arrives.
	type res struct {
		out string
		err error
	}
	done := make(chan res, 1)
	go func() {
		o, _, err := runCLI(t, env, nil, "nightshift", "identity", "otp", created.ID, "--wait", "30s")
		done <- res{o, err}
	}()
	msg := fmt.Sprintf("To: %s\r\nSubject: Code\r\n\r\nYour security code is 448812\r\n", created.Email)
	if err := smtp.SendMail(s.p.SMTPAddr(), nil, "a@example.com", []string{created.Email}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil || r.out != "448812\n" {
			t.Fatalf("otp --wait: %v %q", r.err, r.out)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("otp --wait did not return")
	}
	out, _, err = runCLI(t, env, nil, "nightshift", "identity", "inbox", created.ID)
	if err != nil || !strings.Contains(out, "Subject:  Code") {
		t.Fatalf("inbox: %v\n%s", err, out)
	}
	out, _, err = runCLI(t, env, nil, "nightshift", "identity", "sms", created.ID, "--json")
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Fatalf("sms --json: %v\n%s", err, out)
	}
	// Usage errors.
	for _, args := range [][]string{{"identity"}, {"identity", "bogus"}, {"identity", "show"}, {"identity", "otp", "x", "--wait", "soon"}} {
		_, _, err := runCLI(t, env, nil, append([]string{"nightshift"}, args...)...)
		if _, ok := err.(*usageError); !ok {
			t.Errorf("%v: err %v, want a usage error", args, err)
		}
	}
	_, _, err = runCLI(t, env, nil, "nightshift", "identity", "show", "NOPE")
	if err == nil || !strings.Contains(err.Error(), "identity not found") {
		t.Errorf("show unknown: %v", err)
	}
}

func TestRaviMultiCall(t *testing.T) {
	t.Parallel()
	s := startIdentityServer(t)
	ctx := context.Background()
	id, err := s.ids.ForTask(ctx, "TASKRAVI01")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.ids.IssueToken(ctx, id.ID, identity.Scope{TaskID: "TASKRAVI01", Repo: "github.com/acme/app", Agent: "claude"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.v.Set(ctx, vault.Actor{Kind: vault.ActorOperator, ID: "t"}, "NPM_TOKEN", "agents", []byte("npm-secret")); err != nil {
		t.Fatal(err)
	}
	env := []string{"NIGHTSHIFT_MCP_URL=" + s.url + "/mcp", "NIGHTSHIFT_MCP_TOKEN=" + tok}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ravi", "get", "email"}, id.Email + "\n"},
		{[]string{"/usr/local/bin/ravi", "get-email"}, id.Email + "\n"},
		{[]string{"ravi", "get", "phone"}, "+15550000042\n"},
		{[]string{"ravi", "get", "owner"}, "Ada Lovelace\n"},
		{[]string{"ravi", "get-identity-name"}, "agent-taskravi\n"},
		{[]string{"ravi", "secrets", "get", "NPM_TOKEN"}, "npm-secret\n"},
		{[]string{"nightshift", "ravi", "get", "email"}, id.Email + "\n"},
	} {
		out, _, err := runCLI(t, env, nil, tc.args...)
		if err != nil || out != tc.want {
			t.Errorf("%v = %q, %v; want %q", tc.args, out, err, tc.want)
		}
	}
	out, _, err := runCLI(t, env, nil, "ravi", "secrets", "get", "NPM_TOKEN", "--json")
	var sec map[string]string
	if err != nil || json.Unmarshal([]byte(out), &sec) != nil || sec["key"] != "NPM_TOKEN" || sec["value"] != "npm-secret" {
		t.Errorf("secrets get --json: %v %s", err, out)
	}
	if _, _, err := runCLI(t, env, nil, "ravi", "secrets", "get", "MISSING"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("missing secret: %v", err)
	}
	msg := fmt.Sprintf("To: %s\r\nSubject: Welcome\r\n\r\nConfirm: https://svc.example/confirm?token=abc\r\n", id.Email)
	if err := smtp.SendMail(s.p.SMTPAddr(), nil, "a@example.com", []string{id.Email}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	out, _, err = runCLI(t, env, nil, "ravi", "inbox", "email", "--json")
	var rows []map[string]any
	if err != nil || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 1 || rows[0]["subject"] != "Welcome" {
		t.Errorf("inbox email --json: %v %s", err, out)
	}
	out, _, err = runCLI(t, env, nil, "ravi", "inbox", "email")
	if err != nil || !strings.Contains(out, "https://svc.example/confirm?token=abc") {
		t.Errorf("inbox email: %v %s", err, out)
	}
	if _, _, err := runCLI(t, env, nil, "ravi", "frobnicate"); err == nil {
		t.Error("unknown verb accepted")
	}
	if _, _, err := runCLI(t, nil, nil, "ravi", "get", "email"); err == nil || !strings.Contains(err.Error(), "NIGHTSHIFT_MCP_URL") {
		t.Errorf("no env: %v", err)
	}
}

func TestMCPStdioCommand(t *testing.T) {
	t.Parallel()
	s := startIdentityServer(t)
	ctx := context.Background()
	id, err := s.ids.ForTask(ctx, "TASKSTDIO9")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.ids.IssueToken(ctx, id.ID, identity.Scope{TaskID: "TASKSTDIO9"})
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"NIGHTSHIFT_MCP_URL=" + s.url + "/mcp", "NIGHTSHIFT_MCP_TOKEN=" + tok}
	in := strings.Join([]string{
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_identity","arguments":{}}}`,
	}, "\n") + "\n"
	// stdin stays open until the answer to id 2 is out, then closes,
	// which ends the command.
	pr, pw := io.Pipe()
	go io.WriteString(pw, in)
	ctx2, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var out syncBuffer
	errc := make(chan error, 1)
	go func() { errc <- run(ctx2, []string{"nightshift", "mcp"}, env, pr, &out, io.Discard) }()
	deadline := time.After(20 * time.Second)
	for {
		ch := out.changed()
		if strings.Contains(out.String(), `"id":2`) {
			break
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no answer to tools/call; stdout:\n%s", out.String())
		}
	}
	pw.Close()
	if err := <-errc; err != nil {
		t.Fatalf("nightshift mcp: %v", err)
	}
	if !strings.Contains(out.String(), id.Name) || !strings.Contains(out.String(), id.Email) {
		t.Fatalf("get_identity answer lacks the identity:\n%s", out.String())
	}
	if _, _, err := runCLI(t, nil, nil, "nightshift", "mcp"); err == nil {
		t.Error("mcp without env accepted")
	}
}
