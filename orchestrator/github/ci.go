package github

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"regexp"

	gh "github.com/google/go-github/v60/github"

	"github.com/nightshift/nightshift/orchestrator/forge"
)

// maxLogDownload bounds how much of a job log is read to take its tail.
const maxLogDownload = 8 << 20

// CIFailures implements forge.Driver: the failing check runs of the commit
// (the latest of each; q.Prefer first), each with its output and, for
// GitHub Actions jobs among the first q.MaxLogs, the tail of its job log;
// then the failing commit statuses (the newest per context). Tokens hold
// checks, actions and statuses read. A lookup that fails leaves what the
// others found, returned with the error.
func (c *Client) CIFailures(ctx context.Context, r Repo, q forge.CIQuery) ([]forge.CIFailure, error) {
	api, err := c.apiFor(ctx, r, Permissions{"checks": "read", "actions": "read", "statuses": "read"})
	if err != nil {
		return nil, err
	}
	var errs []error
	runs, _, err := api.Checks.ListCheckRunsForRef(ctx, r.Owner, r.Name, q.Ref, &gh.ListCheckRunsOptions{
		Filter: gh.String("latest"), ListOptions: gh.ListOptions{PerPage: 100}})
	if err != nil {
		errs = append(errs, wrap("list check runs", r, err))
	}
	var failing []*gh.CheckRun
	if runs != nil {
		for _, cr := range runs.CheckRuns {
			if failedConclusion(cr.GetConclusion()) {
				if q.Prefer != "" && cr.GetName() == q.Prefer {
					failing = append([]*gh.CheckRun{cr}, failing...)
				} else {
					failing = append(failing, cr)
				}
			}
		}
	}
	var out []forge.CIFailure
	for i, cr := range failing {
		out2 := cr.GetOutput()
		f := forge.CIFailure{Kind: forge.CICheck, Name: cr.GetName(), Conclusion: cr.GetConclusion(), URL: cr.GetHTMLURL(),
			Output: []string{out2.GetTitle(), out2.GetSummary(), out2.GetText()}}
		if i < q.MaxLogs && (cr.GetApp().GetSlug() == "github-actions" || cr.GetApp().GetSlug() == "") {
			f.Log = c.jobLog(ctx, api, r, cr.GetID(), q.LogBytes)
		}
		out = append(out, f)
	}
	statuses, _, err := api.Repositories.ListStatuses(ctx, r.Owner, r.Name, q.Ref, &gh.ListOptions{PerPage: 100})
	if err != nil {
		errs = append(errs, wrap("list statuses", r, err))
	}
	seen := map[string]bool{}
	for _, st := range statuses { // newest first: the first per context is current
		if seen[st.GetContext()] {
			continue
		}
		seen[st.GetContext()] = true
		if st.GetState() == "failure" || st.GetState() == "error" {
			out = append(out, forge.CIFailure{Kind: forge.CIStatus, Name: st.GetContext(), Conclusion: st.GetState(),
				URL: st.GetTargetURL(), Description: st.GetDescription()})
		}
	}
	return out, errors.Join(errs...)
}

func failedConclusion(c string) bool {
	return c == "failure" || c == "timed_out" || c == "action_required" || c == "startup_failure"
}

// logStamp is the timestamp GitHub Actions puts in front of every log line.
var logStamp = regexp.MustCompile(`(?m)^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z `)

// jobLog returns the last n bytes (whole lines) of a GitHub Actions job log,
// or "" when it cannot be had.
func (c *Client) jobLog(ctx context.Context, api *gh.Client, r Repo, jobID int64, n int) string {
	if n <= 0 {
		return ""
	}
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
	return forge.Tail(logStamp.ReplaceAllString(string(bytes.ToValidUTF8(data, nil)), ""), n)
}
