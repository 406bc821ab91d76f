package gitea

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/nightshift/nightshift/orchestrator/forge"
)

var shaRe = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

// CIFailures implements forge.Driver: the failing jobs of the commit's
// failed Gitea Actions runs (with the end of their logs), then its failing
// commit statuses (latest per context) that are not those jobs' own.
func (d *Driver) CIFailures(ctx context.Context, r forge.Repo, q forge.CIQuery) ([]forge.CIFailure, error) {
	sha, err := d.commitOf(ctx, r, q.Ref)
	if err != nil {
		return nil, err
	}
	checks, jobURLs, err := d.actionFailures(ctx, r, sha, q)
	if err != nil {
		return nil, err
	}
	statuses, err := d.statusFailures(ctx, r, sha, jobURLs)
	if err != nil {
		return nil, err
	}
	// The preferred name first, among checks and among statuses alike.
	if q.Prefer != "" {
		pref := func(a, b forge.CIFailure) int {
			pa, pb := a.Name == q.Prefer, b.Name == q.Prefer
			switch {
			case pa && !pb:
				return -1
			case pb && !pa:
				return 1
			}
			return 0
		}
		slices.SortStableFunc(checks, pref)
		slices.SortStableFunc(statuses, pref)
		if len(checks) == 0 || checks[0].Name != q.Prefer {
			if len(statuses) > 0 && statuses[0].Name == q.Prefer {
				return append(statuses[:1:1], append(checks, statuses[1:]...)...), nil
			}
		}
	}
	return append(checks, statuses...), nil
}

// commitOf resolves ref (a SHA or a branch) to a commit SHA.
func (d *Driver) commitOf(ctx context.Context, r forge.Repo, ref string) (string, error) {
	if ref == "" {
		return "", errors.New("gitea: CI failures of an empty ref")
	}
	if shaRe.MatchString(ref) {
		return ref, nil
	}
	var b struct {
		Commit struct {
			ID string `json:"id"`
		} `json:"commit"`
	}
	if _, err := d.call(ctx, fmt.Sprintf("get branch %s of %s", ref, r.FullName()), http.MethodGet,
		repoPath(r)+"/branches/"+url.PathEscape(ref), nil, &b); err != nil {
		return "", err
	}
	if b.Commit.ID == "" {
		return "", fmt.Errorf("gitea: branch %s of %s has no commit", ref, r.FullName())
	}
	return b.Commit.ID, nil
}

// statusFailures returns the failing (failure, error) latest statuses of
// sha, leaving out those whose link is one of jobURLs (paths).
func (d *Driver) statusFailures(ctx context.Context, r forge.Repo, sha string, jobURLs map[string]bool) ([]forge.CIFailure, error) {
	var combined struct {
		Statuses []struct {
			Context     string `json:"context"`
			Status      string `json:"status"`
			TargetURL   string `json:"target_url"`
			Description string `json:"description"`
		} `json:"statuses"`
	}
	_, err := d.call(ctx, fmt.Sprintf("get statuses of %s in %s", sha, r.FullName()), http.MethodGet,
		fmt.Sprintf("%s/commits/%s/status", repoPath(r), url.PathEscape(sha)), nil, &combined)
	if errors.Is(err, forge.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []forge.CIFailure
	for _, s := range combined.Statuses {
		if (s.Status != "failure" && s.Status != "error") || jobURLs[urlPath(s.TargetURL)] {
			continue
		}
		out = append(out, forge.CIFailure{Kind: forge.CIStatus, Name: s.Context, Conclusion: s.Status, URL: s.TargetURL, Description: s.Description})
	}
	return out, nil
}

// actionFailures returns the failing jobs of sha's failed Actions runs
// and the links of all their jobs (whose commit statuses they are). A
// repository without Actions has none.
func (d *Driver) actionFailures(ctx context.Context, r forge.Repo, sha string, q forge.CIQuery) ([]forge.CIFailure, map[string]bool, error) {
	var runs struct {
		WorkflowRuns []struct {
			ID           int64  `json:"id"`
			DisplayTitle string `json:"display_title"`
			Conclusion   string `json:"conclusion"`
			Status       string `json:"status"`
			HeadSHA      string `json:"head_sha"`
		} `json:"workflow_runs"`
	}
	_, err := d.call(ctx, fmt.Sprintf("list Actions runs of %s in %s", sha, r.FullName()), http.MethodGet,
		fmt.Sprintf("%s/actions/runs?head_sha=%s&limit=50", repoPath(r), url.QueryEscape(sha)), nil, &runs)
	var ae *APIError
	if errors.Is(err, forge.ErrNotFound) || errors.As(err, &ae) && ae.Status == http.StatusForbidden {
		return nil, nil, nil // Actions disabled for the repository, or not readable
	}
	if err != nil {
		return nil, nil, err
	}
	jobURLs := map[string]bool{}
	var out []forge.CIFailure
	logs := 0
	for _, run := range runs.WorkflowRuns {
		if run.HeadSHA != "" && run.HeadSHA != sha {
			continue
		}
		var jobs struct {
			Jobs []struct {
				ID         int64  `json:"id"`
				Name       string `json:"name"`
				HTMLURL    string `json:"html_url"`
				Conclusion string `json:"conclusion"`
				Status     string `json:"status"`
			} `json:"jobs"`
		}
		if _, err := d.call(ctx, fmt.Sprintf("list jobs of Actions run %d in %s", run.ID, r.FullName()), http.MethodGet,
			fmt.Sprintf("%s/actions/runs/%d/jobs?limit=50", repoPath(r), run.ID), nil, &jobs); err != nil {
			return nil, nil, err
		}
		for _, j := range jobs.Jobs {
			jobURLs[urlPath(j.HTMLURL)] = true
			c := firstNonEmpty(j.Conclusion, j.Status)
			if c != "failure" && c != "timed_out" {
				continue
			}
			f := forge.CIFailure{Kind: forge.CICheck, Name: j.Name, Conclusion: c, URL: j.HTMLURL}
			if logs < q.MaxLogs && q.LogBytes > 0 {
				logs++
				b, err := d.raw(ctx, fmt.Sprintf("read log of job %d in %s", j.ID, r.FullName()),
					fmt.Sprintf("%s/actions/jobs/%d/logs", repoPath(r), j.ID), int64(q.LogBytes)*4)
				if err != nil {
					d.log.Warn("read Actions job log", "repo", r.Key(), "job", j.ID, "err", err)
				} else {
					f.Log = forge.Tail(stripTimestamps(string(b)), q.LogBytes)
				}
			}
			out = append(out, f)
		}
	}
	return out, jobURLs, nil
}

// urlPath is the path of a link: Gitea gives Actions jobs absolute links
// and their commit statuses relative ones.
func urlPath(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Path == "" {
		return s
	}
	return strings.TrimSuffix(u.Path, "/")
}

// tsRe matches the timestamp Gitea Actions puts before each log line.
var tsRe = regexp.MustCompile(`(?m)^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z ?`)

func stripTimestamps(s string) string { return tsRe.ReplaceAllString(s, "") }

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
