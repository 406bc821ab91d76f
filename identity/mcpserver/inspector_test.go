package mcpserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/smtp"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/identity/mcpserver"
	"github.com/nightshift/nightshift/vault"
)

// TestInspectorCLI drives the tools with the official MCP inspector in CLI
// mode (npm install -g @modelcontextprotocol/inspector@2.12.0).
func TestInspectorCLI(t *testing.T) {
	bin, err := exec.LookPath("mcp-inspector")
	if err != nil {
		t.Skip("mcp-inspector not installed (npm install -g @modelcontextprotocol/inspector@2.12.0)")
	}
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	if _, err := f.v.Set(ctx, vault.Actor{Kind: vault.ActorOperator, ID: "test"}, "SERVICE_TOKEN", "repo:github.com/acme/app", []byte("tok-123")); err != nil {
		t.Fatal(err)
	}
	id, tok := f.agent(t, "TASKINSP01", "github.com/acme/app", "claude")
	msg := fmt.Sprintf("To: %s\r\nSubject: Code\r\n\r\nYour code is 552211\r\n", id.Email)
	if err := smtp.SendMail(f.p.SMTPAddr(), nil, "x@example.com", []string{id.Email}, []byte(msg)); err != nil {
		t.Fatal(err)
	}

	run := func(token string, args ...string) (map[string]any, string, error) {
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		full := append([]string{"--cli", f.url, "--transport", "http", "--header", "Authorization: Bearer " + token}, args...)
		cmd := exec.CommandContext(cctx, bin, full...)
		var out, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		err := cmd.Run()
		var res map[string]any
		if err == nil {
			if jerr := json.Unmarshal(out.Bytes(), &res); jerr != nil {
				return nil, out.String() + stderr.String(), fmt.Errorf("inspector output is not JSON: %v", jerr)
			}
		}
		return res, out.String() + stderr.String(), err
	}
	text := func(res map[string]any) string {
		content, _ := res["content"].([]any)
		var parts []string
		for _, c := range content {
			if m, ok := c.(map[string]any); ok {
				s, _ := m["text"].(string)
				parts = append(parts, s)
			}
		}
		return strings.Join(parts, "")
	}

	res, out, err := run(tok, "--method", "tools/list")
	if err != nil {
		t.Fatalf("tools/list: %v\n%s", err, out)
	}
	tools, _ := res["tools"].([]any)
	if len(tools) != len(mcpserver.Tools()) {
		t.Fatalf("tools/list returned %d tools, want %d:\n%s", len(tools), len(mcpserver.Tools()), out)
	}
	for tool, want := range map[string]string{
		mcpserver.ToolGetEmail: id.Email,
		mcpserver.ToolGetPhone: id.Phone,
	} {
		res, out, err := run(tok, "--method", "tools/call", "--tool-name", tool)
		if err != nil || text(res) != want {
			t.Errorf("%s = %q, %v\n%s", tool, text(res), err, out)
		}
	}
	res, out, err = run(tok, "--method", "tools/call", "--tool-name", mcpserver.ToolGetSecret, "--tool-arg", "name=SERVICE_TOKEN")
	if err != nil || text(res) != "tok-123" {
		t.Errorf("get_secret = %q, %v\n%s", text(res), err, out)
	}
	res, out, err = run(tok, "--method", "tools/call", "--tool-name", mcpserver.ToolCheckInbox, "--tool-arg", "wait_seconds=5")
	if err != nil || !strings.Contains(text(res), `"code":"552211"`) {
		t.Errorf("check_inbox = %q, %v\n%s", text(res), err, out)
	}
	// A bad token is refused.
	if _, out, err := run("nsa_not-a-token", "--method", "tools/list"); err == nil {
		t.Errorf("inspector with a bad token succeeded:\n%s", out)
	}
}
