package agent_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nightshift/nightshift/orchestrator/agent/modelserver"
	"github.com/nightshift/nightshift/sandbox/bwrap"
)

// needBwrap skips a read-only run where bubblewrap cannot run: only it can
// mount the worktree read-only.
func needBwrap(t *testing.T) {
	t.Helper()
	if *driverFlag == "process" {
		t.Skip("read-only runs need bubblewrap (-driver=process)")
	}
	if err := bwrap.Available(context.Background()); err != nil {
		t.Skipf("bubblewrap unavailable: %v", err)
	}
}

// planFileRE finds the plan file Claude Code's plan mode reminder names.
var planFileRE = regexp.MustCompile(`(` + regexp.QuoteMeta(bwrap.Home) + `/\.claude/plans/[A-Za-z0-9._-]+\.md)`)

// planFile returns the plan file the CLI told the model to use.
func planFile(r *modelserver.Request) string {
	for _, t := range r.Texts {
		if m := planFileRE.FindStringSubmatch(t); m != nil {
			return m[1]
		}
	}
	return bwrap.Home + "/.claude/plans/not-named.md"
}

// refused checks that the CLI answered call id with an error containing want.
func refused(id, want string) func(r *modelserver.Request) error {
	return func(r *modelserver.Request) error {
		out, err := r.Result(id)
		if err != nil {
			return err
		}
		if !strings.Contains(out, want) {
			return fmt.Errorf("%s refused with %q, want %q", id, out, want)
		}
		return nil
	}
}

// TestClaudePlanModeRefusesEditsAndKeepsThePlan: in a read-only run Claude
// Code runs in its plan permission mode inside a sandbox whose worktree is
// mounted read-only. Its Write, Edit and writing Bash calls are refused and
// the worktree is unchanged; reads work. Headless, plan mode has the model
// write the plan to its plan file under $HOME/.claude/plans (the one file
// it may write) and refuses ExitPlanMode, so the plan the run reports is
// that file's content, edits included. A re-plan resumes the session in
// plan mode and edits the same file.
func TestClaudePlanModeRefusesEditsAndKeepsThePlan(t *testing.T) {
	t.Parallel()
	needCLI(t, "claude")
	needBwrap(t)
	w := newWorld(t)
	readme := filepath.Join(w.dir, "README.md")
	if err := os.WriteFile(readme, []byte("original\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var plan string // the plan file's path inside the sandbox
	w.ms.Script(
		modelserver.Step{Name: "read", Check: func(r *modelserver.Request) error {
			if slices.Contains(r.ToolNames, "ExitPlanMode") {
				return errors.New("headless plan mode offers ExitPlanMode now: revisit the adapter's plan capture")
			}
			return nil
		}, ToolCalls: []modelserver.ToolCall{{ID: "toolu_read", Name: "Read", Input: map[string]any{"file_path": readme}}}},
		modelserver.Step{Name: "write", Check: func(r *modelserver.Request) error {
			out, err := r.Result("toolu_read")
			if err == nil && !strings.Contains(out, "original") {
				err = fmt.Errorf("read = %q", out)
			}
			return err
		}, ToolCalls: []modelserver.ToolCall{{ID: "toolu_write", Name: "Write", Input: map[string]any{"file_path": readme, "content": "tampered\n"}}}},
		modelserver.Step{Name: "edit", Check: refused("toolu_write", "plan mode"),
			ToolCalls: []modelserver.ToolCall{{ID: "toolu_edit", Name: "Edit", Input: map[string]any{"file_path": readme, "old_string": "original", "new_string": "tampered"}}}},
		modelserver.Step{Name: "bash", Check: refused("toolu_edit", "plan mode"),
			ToolCalls: []modelserver.ToolCall{{ID: "toolu_bash", Name: "Bash", Input: map[string]any{"command": "echo tampered > README.md", "description": "change the readme"}}}},
		modelserver.Step{Name: "plan file", Check: refused("toolu_bash", "needs approval"), ToolCallsFunc: func(r *modelserver.Request) []modelserver.ToolCall {
			plan = planFile(r)
			return []modelserver.ToolCall{{ID: "toolu_plan", Name: "Write", Input: map[string]any{"file_path": plan, "content": "# Plan\n\n1. Reword README.md.\n"}}}
		}},
		modelserver.Step{Name: "plan edit", Check: func(r *modelserver.Request) error {
			if r.ToolErrors["toolu_plan"] {
				return fmt.Errorf("plan file write refused: %q", r.ToolResults["toolu_plan"])
			}
			return nil
		}, ToolCallsFunc: func(r *modelserver.Request) []modelserver.ToolCall {
			return []modelserver.ToolCall{{ID: "toolu_plan_edit", Name: "Edit", Input: map[string]any{"file_path": plan,
				"old_string": "1. Reword README.md.", "new_string": "1. Reword README.md.\n2. Run test.sh."}}}
		}},
		modelserver.Step{Name: "exit plan mode", ToolCalls: []modelserver.ToolCall{{ID: "toolu_exit", Name: "ExitPlanMode", Input: map[string]any{}}}},
		modelserver.Step{Name: "end", Check: refused("toolu_exit", "ExitPlanMode"), Text: "The plan is ready for review."},
	)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	r := w.runCLI(ctx, "claude", "claude-plan", "Plan a better README.", "", true)
	w.checkScript()
	if !strings.Contains(strings.Join(r.inv.Argv, " "), "--permission-mode plan") {
		t.Errorf("argv %v: not in plan mode", r.inv.Argv)
	}
	if r.outcome.Err != nil || r.res.Reason != "exit 0" {
		t.Fatalf("outcome err: %v (%s)", r.outcome.Err, r.res.Reason)
	}
	if b, err := os.ReadFile(readme); err != nil || string(b) != "original\n" {
		t.Errorf("README.md = %q, %v: a plan run changed the worktree", b, err)
	}
	if want := "# Plan\n\n1. Reword README.md.\n2. Run test.sh.\n"; r.outcome.Plan != want || r.outcome.Summary != "The plan is ready for review." {
		t.Fatalf("plan %q summary %q, want plan %q", r.outcome.Plan, r.outcome.Summary, want)
	}
	if strings.Contains(r.log(), `"subtype":"permission_denied"`) {
		t.Errorf("a permission_denied event was logged raw:\n%s", r.log())
	}

	// Feedback: the session resumes, still in plan mode, and revises the
	// plan file it wrote.
	w.ms.Script(
		modelserver.Step{Name: "revise", Check: func(r *modelserver.Request) error {
			if !r.HasText("also update the changelog") {
				return errors.New("the feedback is not in the resumed conversation")
			}
			return nil
		}, ToolCallsFunc: func(r *modelserver.Request) []modelserver.ToolCall {
			return []modelserver.ToolCall{{ID: "toolu_revise", Name: "Edit", Input: map[string]any{"file_path": plan,
				"old_string": "2. Run test.sh.", "new_string": "2. Update CHANGELOG.md.\n3. Run test.sh."}}}
		}},
		modelserver.Step{Name: "end again", Text: "Revised."},
	)
	r2 := w.runCLI(ctx, "claude", "claude-replan", "also update the changelog", r.outcome.SessionID, true)
	w.checkScript()
	if want := "# Plan\n\n1. Reword README.md.\n2. Update CHANGELOG.md.\n3. Run test.sh.\n"; r2.outcome.Err != nil || r2.outcome.Plan != want {
		t.Fatalf("re-plan: err %v plan %q, want %q", r2.outcome.Err, r2.outcome.Plan, want)
	}
	w.checkCanary(r, r2)
}

// TestCodexReadOnlyRunCannotWrite: Codex's own read-only sandbox cannot
// start inside ours (its bubblewrap cannot create namespaces there, so even
// reads would fail), so a read-only Codex run relies on the read-only
// worktree mount: its shell reads work, its writes fail with EROFS, the
// worktree is unchanged and the final message is the plan. A re-plan
// resumes the thread the same way.
func TestCodexReadOnlyRunCannotWrite(t *testing.T) {
	t.Parallel()
	needCLI(t, "codex")
	needBwrap(t)
	w := newWorld(t)
	readme := filepath.Join(w.dir, "README.md")
	if err := os.WriteFile(readme, []byte("original\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const thePlan = "Plan:\n1. Reword README.md.\n2. Run test.sh."
	w.ms.Script(
		modelserver.Step{Name: "read", ToolCalls: []modelserver.ToolCall{{ID: "call_read", Name: "exec_command", Input: map[string]any{"cmd": "cat README.md"}}}},
		modelserver.Step{Name: "write", Check: func(r *modelserver.Request) error {
			out, err := r.Result("call_read")
			if err == nil && !strings.Contains(out, "original") {
				err = fmt.Errorf("a read-only run cannot read: %q", out)
			}
			return err
		}, ToolCalls: []modelserver.ToolCall{{ID: "call_write", Name: "exec_command", Input: map[string]any{"cmd": "echo tampered > README.md; touch NEW.txt"}}}},
		modelserver.Step{Name: "plan", Check: refused("call_write", "Read-only file system"), Text: thePlan},
	)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	r := w.runCLI(ctx, "codex", "codex-plan", "Plan a better README.", "", true)
	w.checkScript()
	if r.outcome.Err != nil || r.res.Reason != "exit 0" {
		t.Fatalf("outcome err: %v (%s)", r.outcome.Err, r.res.Reason)
	}
	if b, err := os.ReadFile(readme); err != nil || string(b) != "original\n" {
		t.Errorf("README.md = %q, %v: a read-only run changed the worktree", b, err)
	}
	if _, err := os.Stat(filepath.Join(w.dir, "NEW.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a read-only run created a file: %v", err)
	}
	if r.outcome.Summary != thePlan {
		t.Fatalf("summary %q, want the plan", r.outcome.Summary)
	}

	w.ms.Script(
		modelserver.Step{Name: "re-read", Check: func(r *modelserver.Request) error {
			if !r.HasText("also update the changelog") {
				return errors.New("the feedback is not in the resumed conversation")
			}
			return nil
		}, ToolCalls: []modelserver.ToolCall{{ID: "call_again", Name: "exec_command", Input: map[string]any{"cmd": "echo tampered >> README.md"}}}},
		modelserver.Step{Name: "revised", Check: refused("call_again", "Read-only file system"), Text: thePlan + "\n3. Update CHANGELOG.md."},
	)
	r2 := w.runCLI(ctx, "codex", "codex-replan", "also update the changelog", r.outcome.SessionID, true)
	w.checkScript()
	if r2.outcome.Err != nil || !strings.HasSuffix(r2.outcome.Summary, "3. Update CHANGELOG.md.") {
		t.Fatalf("re-plan: err %v summary %q", r2.outcome.Err, r2.outcome.Summary)
	}
	if b, _ := os.ReadFile(readme); string(b) != "original\n" {
		t.Errorf("README.md = %q after the re-plan", b)
	}
	w.checkCanary(r, r2)
}
