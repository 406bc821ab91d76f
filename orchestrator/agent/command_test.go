package agent

import (
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

func TestCommandPrepare(t *testing.T) {
	t.Parallel()
	a, err := New("command", []string{"sh", "-c", "cat"})
	if err != nil {
		t.Fatal(err)
	}
	inv, err := a.Prepare(Request{Prompt: "fix it", SessionID: "s1", MCPURL: "http://m", Env: map[string]string{"FOO": "bar", "NIGHTSHIFT_PROMPT": "no"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(inv.Argv, " "); got != "sh -c cat" {
		t.Errorf("argv = %q", got)
	}
	if inv.Stdin != "fix it\n" {
		t.Errorf("stdin = %q", inv.Stdin)
	}
	for k, want := range map[string]string{"NIGHTSHIFT_PROMPT": "fix it", "NIGHTSHIFT_SESSION_ID": "s1", "NIGHTSHIFT_MCP_URL": "http://m", "FOO": "bar"} {
		if inv.Env[k] != want {
			t.Errorf("env %s = %q, want %q", k, inv.Env[k], want)
		}
	}
}

func TestCommandNeedsArgv(t *testing.T) {
	t.Parallel()
	if _, err := New("command", nil); !errors.Is(err, ErrNoCommand) {
		t.Fatalf("err = %v", err)
	}
	if _, err := New("fixer", nil); !errors.Is(err, ErrUnknownKind) {
		t.Fatalf("err = %v", err)
	}
	if a, err := New("fixer", []string{"true"}); err != nil || a.Name() != "command" {
		t.Fatalf("a = %v, err = %v", a, err)
	}
}

// TestCommandRun runs a real process with the invocation and streams its
// stdout through the parser in small chunks.
func TestCommandRun(t *testing.T) {
	t.Parallel()
	a, err := New("command", []string{"sh", "-c", `read line; echo "stdin: $line"; printf 'env: %s\nlast' "$NIGHTSHIFT_PROMPT"; exit 3`})
	if err != nil {
		t.Fatal(err)
	}
	inv, err := a.Prepare(Request{Prompt: "hello world"})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(inv.Argv[0], inv.Argv[1:]...)
	for k, v := range inv.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdin = strings.NewReader(inv.Stdin)
	var out bytes.Buffer
	cmd.Stdout = &out
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("run: %v", err)
	}
	var lines []Line
	p := a.NewParser(func(l Line) { lines = append(lines, l) })
	b := out.Bytes()
	for len(b) > 0 { // feed in 3-byte chunks
		n := min(3, len(b))
		if _, err := p.Write(b[:n]); err != nil {
			t.Fatal(err)
		}
		b = b[n:]
	}
	o := p.Outcome(ee.ExitCode())
	want := []Line{{KindText, "stdin: hello world"}, {KindText, "env: hello world"}, {KindText, "last"}}
	if len(lines) != len(want) {
		t.Fatalf("lines = %q", lines)
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Errorf("line %d = %q, want %q", i, lines[i], want[i])
		}
	}
	if o.Summary != "last" || !errors.Is(o.Err, ErrAgentFailed) {
		t.Errorf("outcome = %+v", o)
	}
	if o := a.NewParser(func(Line) {}).Outcome(0); o.Err != nil {
		t.Errorf("exit 0 outcome err = %v", o.Err)
	}
}

// TestLargePromptNeverInArgvOrOneEnvString checks every adapter with a
// prompt past the kernel's 128 KiB limit on one argument or environment
// string: it travels on stdin (and for command agents in a home file), never
// in argv, and no environment value comes near the limit.
func TestLargePromptNeverInArgvOrOneEnvString(t *testing.T) {
	t.Parallel()
	prompt := strings.Repeat("a large prompt line\n", 200<<10/20)
	for _, kind := range []string{"claude", "codex", "command"} {
		req := Request{Prompt: prompt, Home: "/home/agent"}
		var cmd []string
		if kind == "command" {
			cmd = []string{"sh", "-c", "cat"}
			// Not even a task env that sets it brings it back.
			req.Env = map[string]string{"NIGHTSHIFT_PROMPT": prompt}
		}
		a, err := New(kind, cmd)
		if err != nil {
			t.Fatal(err)
		}
		inv, err := a.Prepare(req)
		if err != nil {
			t.Fatal(err)
		}
		for _, arg := range inv.Argv {
			if len(arg) > MaxEnvPrompt {
				t.Errorf("%s: an argument of %d bytes", kind, len(arg))
			}
		}
		for k, v := range inv.Env {
			if len(k)+len(v) > MaxEnvPrompt {
				t.Errorf("%s: env %s is %d bytes", kind, k, len(v))
			}
		}
		if strings.TrimSuffix(inv.Stdin, "\n") != strings.TrimSuffix(prompt, "\n") {
			t.Errorf("%s: stdin is not the prompt (%d bytes)", kind, len(inv.Stdin))
		}
		if kind != "command" {
			continue
		}
		if got := inv.Env["NIGHTSHIFT_PROMPT_FILE"]; got != "/home/agent/"+PromptFile {
			t.Errorf("NIGHTSHIFT_PROMPT_FILE = %q", got)
		}
		if string(inv.Files[PromptFile]) != prompt {
			t.Errorf("prompt file has %d bytes, want the prompt's %d", len(inv.Files[PromptFile]), len(prompt))
		}
	}
	// A small prompt is still in $NIGHTSHIFT_PROMPT, and in the file.
	a, _ := New("command", []string{"true"})
	inv, err := a.Prepare(Request{Prompt: "small", Home: "/h"})
	if err != nil {
		t.Fatal(err)
	}
	if inv.Env["NIGHTSHIFT_PROMPT"] != "small" || string(inv.Files[PromptFile]) != "small" || inv.Env["NIGHTSHIFT_PROMPT_FILE"] != "/h/"+PromptFile {
		t.Errorf("small prompt: env %q, file %q", inv.Env["NIGHTSHIFT_PROMPT"], inv.Files[PromptFile])
	}
}
