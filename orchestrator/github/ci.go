package github

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"

	gh "github.com/google/go-github/v60/github"

	"github.com/nightshift/nightshift/orchestrator"
)

// maxLogDownload bounds how much of a job log is read to take its tail.
const maxLogDownload = 8 << 20

// ciContext describes the failing checks of the commit a CI-failure task is
// about: each failing check run's output and the tail of its job log (for
// GitHub Actions), and failing commit statuses. The result is bounded by
// Config.LogExcerpt and redacted. Lookup failures are logged and leave
// what was found.
func (c *Client) ciContext(ctx context.Context, r Repo, item orchestrator.WorkItem, pr *gh.PullRequest) string {
	ref := item.Target.HeadSHA
	if pr != nil && pr.GetHead().GetSHA() != "" {
		ref = pr.GetHead().GetSHA() // the latest head: a follow-up fixes the newest failure
	}
	if ref == "" {
		ref = item.Target.Branch
	}
	if ref == "" {
		return ""
	}
	api, err := c.apiFor(ctx, r, Permissions{"checks": "read", "actions": "read", "statuses": "read"})
	if err != nil {
		c.log.Warn("ci context", "repo", r.FullName(), "err", err)
		return ""
	}
	budget := c.cfg.LogExcerpt
	var b strings.Builder
	fmt.Fprintf(&b, "## CI failure\nChecks failed on %s of %s. Fix the cause so they pass; do not disable or skip them.\n", short(ref), r.FullName())

	runs, _, err := api.Checks.ListCheckRunsForRef(ctx, r.Owner, r.Name, ref, &gh.ListCheckRunsOptions{
		Filter: gh.String("latest"), ListOptions: gh.ListOptions{PerPage: 100}})
	if err != nil {
		c.log.Warn("list check runs", "repo", r.FullName(), "err", err)
	}
	var failing []*gh.CheckRun
	if runs != nil {
		for _, cr := range runs.CheckRuns {
			if failedConclusion(cr.GetConclusion()) {
				if cr.GetName() == item.Target.Check {
					failing = append([]*gh.CheckRun{cr}, failing...)
				} else {
					failing = append(failing, cr)
				}
			}
		}
	}
	for i, cr := range failing {
		if i == 3 {
			fmt.Fprintf(&b, "\n(%d more failing checks not shown)\n", len(failing)-3)
			break
		}
		fmt.Fprintf(&b, "\n### Check %q: %s\n", cr.GetName(), cr.GetConclusion())
		if u := cr.GetHTMLURL(); u != "" {
			b.WriteString(u + "\n")
		}
		out := cr.GetOutput()
		for _, s := range []string{out.GetTitle(), out.GetSummary(), out.GetText()} {
			if s = strings.TrimSpace(s); s != "" {
				b.WriteString(clip(s, budget/4) + "\n")
			}
		}
		if cr.GetApp().GetSlug() == "github-actions" || cr.GetApp().GetSlug() == "" {
			if tail := c.jobLog(ctx, api, r, cr.GetID(), budget/2); tail != "" {
				b.WriteString("Log excerpt (end of the job log):\n```text\n" + tail + "\n```\n")
			}
		}
	}
	statuses, _, err := api.Repositories.ListStatuses(ctx, r.Owner, r.Name, ref, &gh.ListOptions{PerPage: 100})
	if err != nil {
		c.log.Warn("list statuses", "repo", r.FullName(), "err", err)
	}
	seen := map[string]bool{}
	for _, st := range statuses { // newest first: the first per context is current
		if seen[st.GetContext()] {
			continue
		}
		seen[st.GetContext()] = true
		if st.GetState() == "failure" || st.GetState() == "error" {
			fmt.Fprintf(&b, "\n### Status %q: %s\n%s %s\n", st.GetContext(), st.GetState(), st.GetDescription(), st.GetTargetURL())
		}
	}
	return c.cfg.Redact(clip(b.String(), budget))
}

func failedConclusion(c string) bool {
	return c == "failure" || c == "timed_out" || c == "action_required" || c == "startup_failure"
}

// logStamp is the timestamp GitHub Actions puts in front of every log line.
var logStamp = regexp.MustCompile(`(?m)^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z `)

// jobLog returns the last n bytes (whole lines) of a GitHub Actions job log,
// or "" when it cannot be had.
func (c *Client) jobLog(ctx context.Context, api *gh.Client, r Repo, jobID int64, n int) string {
	u, _, err := api.Actions.GetWorkflowJobLogs(ctx, r.Owner, r.Name, jobID, 2)
	if err != nil {
		c.log.Debug("job log location", "repo", r.FullName(), "job", jobID, "err", err)
		return ""
	}
	// The location is a pre-signed download URL: no credentials go there.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return ""
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		c.log.Warn("download job log", "repo", r.FullName(), "job", jobID, "err", err)
		return ""
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxLogDownload))
	return tail(logStamp.ReplaceAllString(string(bytes.ToValidUTF8(data, nil)), ""), n)
}

// tail returns the last n bytes of s, starting at a line boundary.
func tail(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return "[…]\n" + s
}

// clip returns at most n bytes of s.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "\n[…]"
}

func short(sha string) string {
	if len(sha) > 12 && shaRe.MatchString(sha) {
		return sha[:12]
	}
	return sha
}
