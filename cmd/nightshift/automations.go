package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nightshift/nightshift/ingress/api"
	"github.com/nightshift/nightshift/orchestrator/automation"
)

// automationSubs are the sub-commands of "nightshift automations".
var automationSubs = []string{"ls", "show", "enable", "disable", "run", "runs"}

const automationsUsage = `usage: nightshift automations ls | show NAME | enable NAME | disable NAME | run NAME | runs NAME [--limit N]   (--json on each)

Automations are user-defined triggers (automations: in nightshift.yaml, or
PUT /api/v1/automations/NAME): a schedule or an event filter that starts an
agent run. ls lists them with their switch, state and next fire time; show
prints one with its definition and latest runs; enable switches one on (and
resumes one that paused itself after failed runs, clearing the count);
disable switches it off; run starts a run now on its repositories; runs
prints its timeline (runs, their outcome and cost, refusals and skips with
the reason).

examples:
  nightshift automations ls
  nightshift automations show nightly-deps --json
  nightshift automations enable triage-bugs
  nightshift automations run nightly-deps`

func runAutomations(ctx context.Context, a *app, args []string) error {
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("automations "+sub, flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs, a)
	limit := 20
	if sub == "runs" {
		fs.IntVar(&limit, "limit", 20, "how many runs")
	}
	pos, err := parseFlags(a, fs, "automations "+sub, args, nil)
	if err != nil {
		return err
	}
	c := cf.client()
	if sub == "ls" {
		if len(pos) > 0 {
			return usageErrorf("automations ls: unexpected argument %q", pos[0])
		}
		var resp struct {
			Automations []api.AutomationView `json:"automations"`
		}
		if err := c.do(ctx, "GET", "/api/v1/automations", nil, &resp); err != nil {
			return err
		}
		if cf.json {
			return printJSON(a.stdout, resp.Automations)
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tSTATUS\tTRIGGER\tMODE\tNEXT FIRE\tFAILURES")
		for _, v := range resp.Automations {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", v.Name, status(v), trigger(v), v.Definition.Mode, nextFire(v), v.Failures)
		}
		return tw.Flush()
	}
	if len(pos) != 1 {
		return usageErrorf("automations %s needs one automation name", sub)
	}
	path := "/api/v1/automations/" + url.PathEscape(pos[0])
	switch sub {
	case "show", "enable", "disable":
		var v api.AutomationView
		method, p := "GET", path
		if sub != "show" {
			method, p = "POST", path+"/"+sub
		}
		if err := c.do(ctx, method, p, nil, &v); err != nil {
			return err
		}
		if cf.json {
			return printJSON(a.stdout, v)
		}
		if sub != "show" {
			fmt.Fprintf(a.stdout, "%s: %s (version %d)\n", v.Name, status(v), v.Version)
			return nil
		}
		var runs struct {
			Runs []automation.Run `json:"runs"`
		}
		if err := c.do(ctx, "GET", path+"/runs?limit=10", nil, &runs); err != nil {
			return err
		}
		printAutomation(a.stdout, v, runs.Runs)
		return nil
	case "run":
		var resp struct {
			Runs []automation.Run `json:"runs"`
		}
		if err := c.do(ctx, "POST", path+"/run", nil, &resp); err != nil {
			return err
		}
		if cf.json {
			return printJSON(a.stdout, resp.Runs)
		}
		for _, r := range resp.Runs {
			if r.TaskID != "" && (r.Status == automation.RunStarted || r.Status == automation.RunPending) {
				fmt.Fprintf(a.stdout, "%s: started task %s on %s\n", r.Automation, r.TaskID, r.Repo)
			} else {
				fmt.Fprintf(a.stdout, "%s: %s on %s: %s\n", r.Automation, r.Status, r.Repo, r.Reason)
			}
		}
		return nil
	case "runs":
		var resp struct {
			Runs []automation.Run `json:"runs"`
		}
		if err := c.do(ctx, "GET", fmt.Sprintf("%s/runs?limit=%d", path, limit), nil, &resp); err != nil {
			return err
		}
		if cf.json {
			return printJSON(a.stdout, resp.Runs)
		}
		printRuns(a.stdout, resp.Runs)
		return nil
	}
	return usageErrorf("automations: unknown command %q (want %s)", sub, strings.Join(automationSubs, ", "))
}

func status(v api.AutomationView) string {
	switch {
	case !v.Enabled:
		return "disabled"
	case v.Paused:
		return "paused"
	}
	return "enabled"
}

func trigger(v api.AutomationView) string {
	d := v.Definition
	if d.Schedule != "" {
		s := d.Schedule
		if d.Timezone != "" {
			s += " " + d.Timezone
		}
		return s
	}
	if d.On != nil {
		return "on " + orAny(d.On.Source) + " " + orAny(d.On.Kind)
	}
	return "-"
}

func orAny(s string) string {
	if s == "" {
		return "*"
	}
	return s
}

func nextFire(v api.AutomationView) string {
	if v.NextFire == nil {
		return "-"
	}
	return v.NextFire.Local().Format(time.DateTime)
}

func printAutomation(w io.Writer, v api.AutomationView, runs []automation.Run) {
	d := v.Definition
	fmt.Fprintf(w, "name:     %s (version %d, from %s)\n", v.Name, v.Version, v.Origin)
	fmt.Fprintf(w, "status:   %s\n", status(v))
	if v.Paused {
		fmt.Fprintf(w, "paused:   %s (nightshift automations enable %s resumes it)\n", v.PausedReason, v.Name)
	}
	fmt.Fprintf(w, "trigger:  %s\n", trigger(v))
	for _, f := range d.Where {
		fmt.Fprintf(w, "  where   %s %s %s\n", f.Field, f.Op, strings.Join(f.Value, ", "))
	}
	fmt.Fprintf(w, "next:     %s\n", nextFire(v))
	repos := d.Repos
	if d.Repo != "" {
		repos = []string{d.Repo}
	}
	if len(repos) == 0 {
		repos = []string{"(the event's)"}
	}
	fmt.Fprintf(w, "repo:     %s\n", strings.Join(repos, ", "))
	fmt.Fprintf(w, "mode:     %s, respond %s, inbox %v\n", d.Mode, d.Respond, d.Inbox)
	fmt.Fprintf(w, "guards:   concurrency %d, pause after %d failures (now %d), spent today $%.2f", d.Concurrency, d.PauseAfter, v.Failures, v.DayCostUSD)
	if d.Budget.PerDayUSD > 0 {
		fmt.Fprintf(w, " of $%.2f", d.Budget.PerDayUSD)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "prompt:   %s\n", clip(firstLineOf(d.Prompt), 70))
	if len(runs) > 0 {
		fmt.Fprintln(w, "\nlatest runs:")
		printRuns(w, runs)
	}
}

func printRuns(w io.Writer, runs []automation.Run) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AT\tTRIGGER\tSTATUS\tTASK\tCOST\tREASON")
	for _, r := range runs {
		task := r.TaskID
		if r.Status == automation.RunRefused || r.Status == automation.RunSkipped || r.Status == automation.RunPaused {
			task = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t$%.2f\t%s\n", r.At.Local().Format(time.DateTime), r.Trigger, r.Status, task, r.CostUSD, clip(r.Reason, 60))
	}
	tw.Flush()
}
