package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/nightshift/nightshift/orchestrator/agent"
	"github.com/nightshift/nightshift/orchestrator/gateway"
)

// runAgent runs the agent in the sandbox, through the model gateway when
// there is one, and returns what it reported.
func (w *Worker) runAgent(ctx context.Context, stop context.CancelCauseFunc, r *run) (agent.Outcome, error) {
	item, rep := r.item, r.rep
	ti := TaskIdentity{ID: r.ident.ID, Name: r.ident.Name, Email: r.ident.Email, Phone: r.ident.Phone}
	rep.state(ctx, StateRunning, "agent "+item.Agent, Patch{Identity: &ti, BaseCommit: &r.wt.BaseCommit})
	adapter, err := w.agents.Adapter(item.Agent)
	if err != nil {
		return agent.Outcome{}, stepErr("agent_unknown", "agent %q: %w", item.Agent, err)
	}
	// The agent's HOME lives beside the worktree and persists across the
	// task's runs (a follow-up resumes the session stored there); a fresh
	// run starts with an empty one.
	home := filepath.Join(filepath.Dir(r.wt.Dir), "home")
	if err := prepareHome(home, !item.FollowUp); err != nil {
		return agent.Outcome{}, stepErr("agent_home", "%w", err)
	}
	insideHome := home
	if w.cfg.SandboxHome != "" {
		insideHome = w.cfg.SandboxHome
	}
	spec := r.spec
	req := agent.Request{Prompt: prompt(item, r.plan), SessionID: item.SessionID, Dir: r.wt.Dir, Home: insideHome,
		Env: r.env, MCPURL: r.mcpURL, MCPToken: r.mcpToken, ReadOnly: r.readOnly()}
	if w.cfg.Model != nil {
		req.Model = w.cfg.Model(item.Agent)
	}
	if w.cfg.Gateway != nil {
		hooks := gateway.Hooks{
			// The host never touches the worktree while the agent's
			// processes live: the soft limit is only noted. Work is
			// checkpointed after the sandbox is gone (hard limit, below).
			OnSoftLimit: func(u gateway.Usage) {
				rep.line(ctx, "system", fmt.Sprintf("budget: %d tokens used; nearing the limit", u.Tokens()))
			},
			OnHardLimit: func(u gateway.Usage) {
				rep.line(ctx, "system", fmt.Sprintf("budget exhausted at %d tokens ($%.4f); stopping the agent", u.Tokens(), u.CostUSD))
				stop(errBudget)
			},
		}
		hooks.Redact = rep.redact.String
		gtok := w.cfg.Gateway.RegisterTTL(item.TaskID, r.repo.Budget, hooks, w.agentTokenTTL(r.repo.Timeout))
		defer w.cfg.Gateway.Unregister(item.TaskID)
		rep.tokens.add("NIGHTSHIFT_GATEWAY_TOKEN", gtok)
		url, fwd, stopGateway, err := w.serveRunService(r, "gateway", GatewayPort, w.cfg.Gateway.TaskHandler(item.TaskID))
		if err != nil {
			return agent.Outcome{}, stepErr("provision", "serve the model gateway to the sandbox: %w", err)
		}
		defer stopGateway()
		if fwd != nil {
			spec.Forwards = append(spec.Forwards, *fwd)
		}
		req.GatewayURL, req.GatewayToken = url, gtok
	}
	inv, err := adapter.Prepare(req)
	if err != nil {
		return agent.Outcome{}, stepErr("agent_failed", "prepare agent: %w", err)
	}
	if err := writeHomeFiles(home, inv.Files); err != nil {
		return agent.Outcome{}, stepErr("agent_home", "write agent files: %w", err)
	}
	parser := adapter.NewParser(func(l agent.Line) { rep.line(ctx, "agent", kindPrefix(l.Kind)+l.Text) })
	stderr := rep.writer(ctx, "agent")
	spec.ID = fmt.Sprintf("%s-agent-%d", item.TaskID, item.Run)
	spec.Home = home
	spec.Command = inv.Argv
	spec.Env = merge(r.env, inv.Env)
	spec.Stdin = strings.NewReader(inv.Stdin)
	spec.Stdout = parser
	spec.Stderr = stderr
	// A question asked during this run (MCP ask_human) is one recorded
	// after this point.
	_, askedBefore, qerr := w.bus.lastQuestion(ctx, item.TaskID)
	if qerr != nil {
		rep.log.Warn("read the task's questions", "err", qerr)
	}
	res, err := w.sandboxes.Run(ctx, spec)
	stderr.Close()
	if err != nil {
		return agent.Outcome{}, stepErr("sandbox", "start agent: %w", err)
	}
	w.cfg.Metrics.sandboxEnded(res.Reason)
	out := parser.Outcome(res.ExitCode)
	usage := Usage{InputTokens: out.Usage.InputTokens, OutputTokens: out.Usage.OutputTokens, CostUSD: out.Usage.CostUSD}
	if w.cfg.Gateway != nil {
		if g := w.cfg.Gateway.Usage(item.TaskID); g.Tokens() > 0 {
			usage = Usage{InputTokens: g.InputTokens, OutputTokens: g.OutputTokens, CostUSD: g.CostUSD}
		}
	}
	rep.usage = &usage
	if errors.Is(context.Cause(ctx), errBudget) {
		// Keep the work: commit what the agent left and push it.
		w.checkpoint(context.WithoutCancel(ctx), r)
		return out, context.Cause(ctx)
	}
	if err := context.Cause(ctx); err != nil {
		return out, err
	}
	if q, seq, err := w.bus.lastQuestion(ctx, item.TaskID); err != nil {
		rep.log.Warn("read the task's questions", "err", err)
	} else if seq > askedBefore && qerr == nil {
		out.Question = q.Question
	}
	if out.Question != "" {
		// The agent asked and ended its turn: the task waits for an
		// answer, which resumes this session; nothing is published.
		q := rep.redact.String(out.Question)
		rep.line(ctx, "system", "the agent asks: "+q)
		w.endAccess(ctx, r)
		rep.state(ctx, StateNeedsInput, "question", Patch{SessionID: &out.SessionID, Usage: &usage, Question: &q})
		return out, errAsked
	}
	if !res.OK() {
		return out, stepErr(reasonOf(res, "agent_failed"), "agent %s: %s", item.Agent, res.Reason)
	}
	if out.Err != nil {
		return out, stepErr("agent_failed", "agent %s: %w", item.Agent, out.Err)
	}
	if !r.readOnly() {
		rep.state(ctx, StateTesting, "", Patch{SessionID: &out.SessionID, Usage: &usage})
	}
	return out, nil
}

// prompt is what the agent is asked: the task's prompt, or a follow-up's
// messages, plus what the plan adds (a failing CI log).
func prompt(item WorkItem, plan Plan) string {
	p := item.Prompt
	if item.FollowUp && len(item.Messages) > 0 {
		texts := make([]string, len(item.Messages))
		for i, m := range item.Messages {
			texts[i] = m.Text
		}
		p = strings.Join(texts, "\n\n")
	}
	if plan.PromptContext != "" {
		p += "\n\n" + plan.PromptContext
	}
	switch {
	case item.Mode == ModePlan:
		p += "\n\nDo not change any file now. Study the code and propose a plan: the changes you would make, file by file, " +
			"and how you would test them. Your final message is the plan a person reviews before any code is written."
	case item.Mode == ModeAnswer:
		p += "\n\nDo not change any file. Your final message is the answer."
	case item.Plan != "":
		p += "\n\nCarry out this plan, which was reviewed and approved:\n\n" + item.Plan
	}
	return p
}

// readOnly reports whether the run only looks (plan, answer): the worktree
// is mounted read-only and nothing is committed or pushed.
func (r *run) readOnly() bool { return r.item.Mode == ModePlan || r.item.Mode == ModeAnswer }

// finishReadOnly ends a plan or answer run: a plan is posted for review
// (needs_input, until approved or re-planned), an answer ends the task.
func (w *Worker) finishReadOnly(ctx context.Context, r *run, out agent.Outcome) error {
	rep := r.rep
	// A plan run's result is its plan (Claude Code writes it to its plan
	// file), an answer run's its final message.
	text := strings.TrimSpace(out.Plan)
	if text == "" || r.item.Mode == ModeAnswer {
		text = strings.TrimSpace(out.Summary)
	}
	text = rep.redact.String(text)
	if text == "" {
		return stepErr("agent_failed", "the agent ended without a %s", r.item.Mode)
	}
	if r.item.Mode == ModeAnswer {
		rep.line(ctx, "system", "answered")
		rep.state(ctx, StateDone, "answered", Patch{Answer: &text, Usage: rep.usage})
		return nil
	}
	q := "Proposed plan:\n\n" + text + "\n\nReply `/approve` to make the change, or reply with what to change to plan again."
	rep.line(ctx, "system", "plan ready for review")
	rep.state(ctx, StateNeedsInput, "plan", Patch{Plan: &text, Question: &q, SessionID: &out.SessionID, Usage: rep.usage})
	return nil
}
