package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/orchestrator/gateway"
	"github.com/nightshift/nightshift/sandbox"
	"github.com/nightshift/nightshift/worktree"
)

// run is one run of a task as the worker drives it; its fields are filled
// in step by step.
type run struct {
	item  WorkItem
	rep   *reporter
	repo  RepoSettings
	plan  Plan
	auth  worktree.Auth
	ident identity.Identity
	wt    *worktree.Worktree
	// env is what every sandboxed step of the run gets.
	env map[string]string
	// spec is the sandbox every step starts from.
	spec             sandbox.Spec
	mcpURL, mcpToken string
	// services are the run's own MCP and gateway listeners.
	services runServices
	// redacted is set once rep.redact covers the task's secrets.
	redacted bool
	// landed is the push an earlier delivery of the run made before it
	// was lost; the run is finished from it.
	landed *PushIntent
	// accessEnded is set once the run's services and tokens are gone.
	accessEnded bool
}

// execute drives one run: provision, setup, agent, tests, then publish.
func (w *Worker) execute(ctx context.Context, stop context.CancelCauseFunc, item WorkItem, rep *reporter) error {
	r := &run{item: item, rep: rep, repo: w.cfg.Repo(item.Repo)}
	r.repo.Budget = tighter(r.repo.Budget, gateway.Budget{Tokens: item.BudgetTokens, CostUSD: item.BudgetCostUSD})
	// Nothing runs that could not be redacted.
	if err := w.redactRun(ctx, r); err != nil {
		return err
	}
	if err := context.Cause(ctx); err != nil {
		return err
	}
	// Whatever the outcome, the run's services stop and its tokens die
	// with it (the gateway token in runAgent), before the run's last
	// state is reported.
	defer w.endAccess(ctx, r)
	if w.cfg.Preflight != nil {
		if err := w.cfg.Preflight(ctx, item); err != nil {
			return &StepError{Reason: "preflight", Err: err}
		}
	}
	if err := w.provision(ctx, r); err != nil {
		return err
	}
	if r.landed != nil {
		return w.finishLanded(ctx, r, *r.landed)
	}
	if !r.readOnly() {
		// A read-only run (plan, answer) looks at the code as it is:
		// setup steps would want to write.
		if err := w.setup(ctx, r); err != nil {
			return err
		}
	}
	out, err := w.runAgent(ctx, stop, r)
	if errors.Is(err, errAsked) {
		return nil // the task rests in needs_input
	}
	if err != nil {
		return err
	}
	if r.readOnly() {
		w.endAccess(ctx, r)
		return w.finishReadOnly(ctx, r, out)
	}
	if r.repo.Test != "" {
		spec := r.spec
		spec.ID = fmt.Sprintf("%s-test-%d", item.TaskID, item.Run)
		spec.Command = []string{"sh", "-c", r.repo.Test}
		spec.Env = r.env
		if err := w.runStep(ctx, rep, spec, "test", "tests_failed"); err != nil {
			return err
		}
	}
	// Nothing the agent could start runs any more: its services and
	// tokens go before anything is published.
	w.endAccess(ctx, r)
	return w.publish(ctx, r, out)
}

// endAccess stops the run's services (MCP, gateway listeners) and revokes
// its MCP token; it is done once, before the run's last state is reported.
func (w *Worker) endAccess(ctx context.Context, r *run) {
	if r.accessEnded {
		return
	}
	r.accessEnded = true
	r.services.close()
	w.revokeRunTokens(ctx, r)
}

// merge returns a new map with base's entries, then extra's.
func merge(base, extra map[string]string) map[string]string {
	out := make(map[string]string, len(base)+len(extra))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

// runStep runs a setup or test command in the sandbox, logging its output.
func (w *Worker) runStep(ctx context.Context, rep *reporter, spec sandbox.Spec, stream, reason string) error {
	out := rep.writer(ctx, stream)
	spec.Stdout, spec.Stderr = out, out
	shown := strings.Join(spec.Command, " ")
	if len(spec.Command) == 3 && spec.Command[0] == "sh" && spec.Command[1] == "-c" {
		shown = spec.Command[2]
	}
	rep.line(ctx, stream, "$ "+shown)
	res, err := w.sandboxes.Run(ctx, spec)
	out.Close()
	if err != nil {
		return stepErr("sandbox", "start %s: %w", stream, err)
	}
	w.cfg.Metrics.sandboxEnded(res.Reason)
	if err := context.Cause(ctx); err != nil {
		return err
	}
	if !res.OK() {
		return stepErr(reasonOf(res, reason), "%s command failed: %s", stream, res.Reason)
	}
	return nil
}

func reasonOf(res sandbox.Result, fallback string) string {
	switch res.Reason {
	case sandbox.ReasonTimedOut, "oom_killed", "output_limit":
		return res.Reason
	}
	return fallback
}

// tighter returns the tighter of two budgets, limit by limit (zero is
// unlimited).
func tighter(a, b gateway.Budget) gateway.Budget {
	if b.Tokens > 0 && (a.Tokens == 0 || b.Tokens < a.Tokens) {
		a.Tokens = b.Tokens
	}
	if b.CostUSD > 0 && (a.CostUSD == 0 || b.CostUSD < a.CostUSD) {
		a.CostUSD = b.CostUSD
	}
	return a
}
