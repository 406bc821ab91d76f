package webhook

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/orchestrator"
)

// GitHub payload shapes: only the fields Nightshift reads.
type (
	ghUser struct {
		Login string `json:"login"`
		Type  string `json:"type"`
		Name  string `json:"name"`
		Email string `json:"email"`
	}
	// ghRepo is a repository: only its full_name is read. The payload's
	// URLs (clone_url, html_url, ...) are never used: the clone URL is
	// built from the configured GitHub.GitURL.
	ghRepo struct {
		FullName string `json:"full_name"`
	}
	ghLabel struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
	}
	ghComment struct {
		ID                int64  `json:"id"`
		HTMLURL           string `json:"html_url"`
		Body              string `json:"body"`
		User              ghUser `json:"user"`
		AuthorAssociation string `json:"author_association"`
		Path              string `json:"path"`
		Line              int    `json:"line"`
	}
	ghReview struct {
		ID                int64  `json:"id"`
		Body              string `json:"body"`
		State             string `json:"state"`
		HTMLURL           string `json:"html_url"`
		User              ghUser `json:"user"`
		AuthorAssociation string `json:"author_association"`
	}
	ghIssue struct {
		ID          int64  `json:"id"`
		Number      int    `json:"number"`
		Title       string `json:"title"`
		Body        string `json:"body"`
		HTMLURL     string `json:"html_url"`
		UpdatedAt   string `json:"updated_at"`
		PullRequest *struct {
			URL string `json:"url"`
		} `json:"pull_request"`
	}
	ghRef struct {
		Ref  string  `json:"ref"`
		SHA  string  `json:"sha"`
		Repo *ghRepo `json:"repo"`
	}
	ghPR struct {
		Number  int    `json:"number"`
		HTMLURL string `json:"html_url"`
		Head    ghRef  `json:"head"`
		Base    ghRef  `json:"base"`
		Merged  bool   `json:"merged"`
	}
	ghCheckRun struct {
		ID           int64  `json:"id"`
		Name         string `json:"name"`
		HeadSHA      string `json:"head_sha"`
		Status       string `json:"status"`
		Conclusion   string `json:"conclusion"`
		HTMLURL      string `json:"html_url"`
		PullRequests []ghPR `json:"pull_requests"`
		CheckSuite   struct {
			HeadBranch string `json:"head_branch"`
		} `json:"check_suite"`
	}
	ghWorkflowRun struct {
		ID             int64   `json:"id"`
		Name           string  `json:"name"`
		HeadBranch     string  `json:"head_branch"`
		HeadSHA        string  `json:"head_sha"`
		Status         string  `json:"status"`
		Conclusion     string  `json:"conclusion"`
		RunAttempt     int     `json:"run_attempt"`
		HTMLURL        string  `json:"html_url"`
		PullRequests   []ghPR  `json:"pull_requests"`
		HeadRepository *ghRepo `json:"head_repository"`
	}
	ghPayload struct {
		Action      string         `json:"action"`
		Comment     *ghComment     `json:"comment"`
		Review      *ghReview      `json:"review"`
		Issue       *ghIssue       `json:"issue"`
		PullRequest *ghPR          `json:"pull_request"`
		Label       *ghLabel       `json:"label"`
		Repository  *ghRepo        `json:"repository"`
		Sender      ghUser         `json:"sender"`
		CheckRun    *ghCheckRun    `json:"check_run"`
		WorkflowRun *ghWorkflowRun `json:"workflow_run"`

		// status events
		ID          int64  `json:"id"`
		SHA         string `json:"sha"`
		State       string `json:"state"`
		Context     string `json:"context"`
		TargetURL   string `json:"target_url"`
		Description string `json:"description"`
		Branches    []struct {
			Name string `json:"name"`
		} `json:"branches"`
	}
)

// normalized is what a normalizer decided about one delivery.
type normalized struct {
	ev     *orchestrator.Event // nil when ignored
	ignore string              // why no work starts

	// auth names the authorization the trigger needs.
	auth authMode
	// owner and name of the GitHub repository (for the permission API).
	owner, name string
	// attemptKey, when set, counts CI-failure attempts.
	attemptKey string
	// rawIsJSON says the raw body was decoded as JSON (so it is valid JSON
	// and becomes Event.Raw as is); otherwise Raw is the body as a string.
	rawIsJSON bool
	// via is the forge host (GitLab, Gitea) the delivery came from; nil
	// for GitHub, Linear and Slack.
	via *forgeHost
}

// authMode is the authorization a trigger needs before it may start work.
type authMode int

const (
	authNone    authMode = iota // CI failures, Linear, Slack (signed by the workspace)
	authComment                 // a comment: trusted author, never a bot
	authLabel                   // a label: the labeler already has triage access
)

func ignored(format string, args ...any) normalized {
	return normalized{ignore: fmt.Sprintf(format, args...)}
}

// githubOptions is the slice of configuration GitHub normalization reads.
type githubOptions struct {
	Trigger string
	Label   string
	Forge   forgeOptions
}

// normalizeGitHub turns one GitHub delivery into an event, or a reason to
// ignore it. An error means the body is malformed.
func normalizeGitHub(event string, body []byte, opt githubOptions) (normalized, error) {
	n, _, err := decodeGitHub(event, body, opt)
	return n, err
}

// decodeGitHub is normalizeGitHub that also returns the decoded payload, or
// nil for an event it does not decode, so the handler can take a comment
// that starts no work as an answer without decoding the body again.
func decodeGitHub(event string, body []byte, opt githubOptions) (normalized, *ghPayload, error) {
	switch event {
	case "issue_comment", "pull_request_review_comment", "issues", "check_run", "workflow_run", "status",
		"pull_request_review", "pull_request":
	default:
		// Not decoded, but still only well-formed bodies get a 200.
		if !json.Valid(body) {
			return normalized{}, nil, malformedf("body is not JSON")
		}
		if event == "ping" {
			return ignored("ping"), nil, nil
		}
		return ignored("event %q starts no work", event), nil, nil
	}
	var p ghPayload
	if err := jsonv2.Unmarshal(body, &p, jsontext.AllowDuplicateNames(true)); err != nil {
		return normalized{}, nil, malformedf("decode %s payload: %v", event, err)
	}
	n, err := normalizePayload(event, &p, opt)
	return n, &p, err
}

// normalizePayload is normalizeGitHub for a decoded payload.
func normalizePayload(event string, p *ghPayload, opt githubOptions) (normalized, error) {
	if p.Repository == nil || p.Repository.FullName == "" {
		return normalized{}, malformedf("%s payload has no repository", event)
	}
	owner, name, repo, ok := githubRepo(opt.Forge, p.Repository.FullName)
	if !ok {
		return normalized{}, malformedf("repository full_name %q is not owner/name", p.Repository.FullName)
	}
	ev := &orchestrator.Event{
		Source:   orchestrator.SourceGitHub,
		Repo:     repo,
		RawEvent: event,
		Actor:    ghActor(p.Sender, ""),
	}
	n := normalized{ev: ev, owner: owner, name: name, rawIsJSON: true}
	switch event {
	case "issue_comment", "pull_request_review_comment":
		return n.comment(event, p, opt)
	case "workflow_run":
		return n.workflowRun(p, opt.Forge)
	case "issues":
		return n.labeled(p, opt)
	case "check_run":
		return n.checkRun(p, opt.Forge)
	case "pull_request_review":
		return n.review(p, opt.Forge)
	case "pull_request":
		return n.pullRequest(p, opt.Forge)
	default: // status
		return n.status(p)
	}
}

func (n normalized) comment(event string, p *ghPayload, opt githubOptions) (normalized, error) {
	if p.Action != "created" {
		return ignored("comment %s", orNone(p.Action)), nil
	}
	c := p.Comment
	if c == nil || c.ID == 0 {
		return normalized{}, malformedf("%s payload has no comment", event)
	}
	instruction, ok := commandIn(c.Body, opt.Trigger)
	onPR := event == "pull_request_review_comment" || p.Issue != nil && p.Issue.PullRequest != nil
	if !ok && !onPR {
		return ignored("comment does not mention %s", opt.Trigger), nil
	}
	if !ok {
		// Without the trigger, a comment on a pull request is feedback
		// for the task that owns it (the scheduler ignores it otherwise).
		return n.feedbackComment(event, p, opt.Forge)
	}
	ev := n.ev
	ev.Kind = orchestrator.KindComment
	ev.Instruction = instruction
	ev.Actor = ghActor(c.User, c.AuthorAssociation)
	ev.IdempotencyKey = "github:comment:" + strconv.FormatInt(c.ID, 10)
	ev.Target.CommentID = c.ID
	switch {
	case event == "pull_request_review_comment":
		if p.PullRequest == nil || p.PullRequest.Number == 0 {
			return normalized{}, malformedf("review comment payload has no pull_request")
		}
		// Review comments have their own id space; keep keys apart.
		ev.IdempotencyKey = "github:review_comment:" + strconv.FormatInt(c.ID, 10)
		setPR(&ev.Target, p.PullRequest, opt.Forge)
		ev.Target.URL = c.HTMLURL
	case p.Issue == nil || p.Issue.Number == 0:
		return normalized{}, malformedf("issue_comment payload has no issue")
	default:
		ev.Target.Type = "issue"
		if p.Issue.PullRequest != nil {
			ev.Target.Type = "pull_request"
		}
		ev.Target.Number = p.Issue.Number
		ev.Target.URL = c.HTMLURL
	}
	n.auth = authComment
	return n, nil
}

func (n normalized) labeled(p *ghPayload, opt githubOptions) (normalized, error) {
	if p.Action != "labeled" {
		return ignored("issues %s", orNone(p.Action)), nil
	}
	if p.Label == nil || p.Issue == nil || p.Issue.Number == 0 {
		return normalized{}, malformedf("issues labeled payload has no label or issue")
	}
	if !strings.EqualFold(p.Label.Name, opt.Label) {
		return ignored("label %q is not %q", p.Label.Name, opt.Label), nil
	}
	ev := n.ev
	ev.Kind = orchestrator.KindIssueLabeled
	ev.Instruction = strings.TrimSpace(p.Issue.Title + "\n\n" + p.Issue.Body)
	ev.Target = orchestrator.Target{Type: "issue", Number: p.Issue.Number, URL: p.Issue.HTMLURL}
	ev.IdempotencyKey = fmt.Sprintf("github:issue_label:%d:%d:%s", p.Issue.ID, p.Label.ID, p.Issue.UpdatedAt)
	n.auth = authLabel
	return n, nil
}

func ciFailed(conclusion string) bool { return conclusion == "failure" || conclusion == "timed_out" }

func (n normalized) checkRun(p *ghPayload, forge forgeOptions) (normalized, error) {
	cr := p.CheckRun
	if cr == nil || cr.ID == 0 {
		return normalized{}, malformedf("check_run payload has no check_run")
	}
	if p.Action != "completed" || !ciFailed(cr.Conclusion) {
		return ignored("check_run %s with conclusion %s", orNone(p.Action), orNone(cr.Conclusion)), nil
	}
	ev := n.ev
	ev.Kind = orchestrator.KindCIFailed
	ev.Target = ciTarget(cr.PullRequests, cr.CheckSuite.HeadBranch, cr.HeadSHA, forge)
	ev.Target.Check = cr.Name
	ev.Target.URL = firstNonEmpty(ev.Target.URL, cr.HTMLURL)
	ev.Instruction = fmt.Sprintf("Check %q failed (%s): %s", cr.Name, cr.Conclusion, cr.HTMLURL)
	ev.IdempotencyKey = fmt.Sprintf("github:check_run:%d:%s", cr.ID, cr.Conclusion)
	n.attemptKey = attemptKey(ev)
	return n, nil
}

func (n normalized) workflowRun(p *ghPayload, forge forgeOptions) (normalized, error) {
	wr := p.WorkflowRun
	if wr == nil || wr.ID == 0 {
		return normalized{}, malformedf("workflow_run payload has no workflow_run")
	}
	if p.Action != "completed" || !ciFailed(wr.Conclusion) {
		return ignored("workflow_run %s with conclusion %s", orNone(p.Action), orNone(wr.Conclusion)), nil
	}
	ev := n.ev
	ev.Kind = orchestrator.KindCIFailed
	ev.Target = ciTarget(wr.PullRequests, wr.HeadBranch, wr.HeadSHA, forge)
	ev.Target.Check = wr.Name
	ev.Target.URL = firstNonEmpty(ev.Target.URL, wr.HTMLURL)
	if wr.HeadRepository != nil && wr.HeadRepository.FullName != "" && !strings.EqualFold(wr.HeadRepository.FullName, p.Repository.FullName) {
		ev.Target.HeadRepo = headRepo(forge, wr.HeadRepository)
	}
	attempt := max(wr.RunAttempt, 1)
	ev.Instruction = fmt.Sprintf("Workflow %q failed (%s, attempt %d): %s", firstNonEmpty(wr.Name, "workflow"), wr.Conclusion, attempt, wr.HTMLURL)
	ev.IdempotencyKey = fmt.Sprintf("github:workflow_run:%d:%d", wr.ID, attempt)
	n.attemptKey = attemptKey(ev)
	return n, nil
}

func (n normalized) status(p *ghPayload) (normalized, error) {
	if p.ID == 0 || p.SHA == "" {
		return normalized{}, malformedf("status payload has no id or sha")
	}
	if p.State != "failure" && p.State != "error" {
		return ignored("status %s", orNone(p.State)), nil
	}
	ev := n.ev
	ev.Kind = orchestrator.KindCIFailed
	ev.Target = orchestrator.Target{Type: "commit", HeadSHA: p.SHA, Check: p.Context, URL: p.TargetURL}
	if len(p.Branches) == 1 {
		ev.Target.Type = "branch"
		ev.Target.Branch = p.Branches[0].Name
	}
	ev.Instruction = fmt.Sprintf("Status %q is %s", p.Context, p.State)
	for _, s := range []string{p.Description, p.TargetURL} {
		if s != "" {
			ev.Instruction += ": " + s
		}
	}
	ev.IdempotencyKey = fmt.Sprintf("github:status:%d", p.ID)
	n.attemptKey = attemptKey(ev)
	return n, nil
}

// ciTarget is the pull request a CI run belongs to or, when GitHub did not
// say (fork pull requests arrive with pull_requests empty), the branch and
// head SHA so the scheduler can resolve the pull request later.
func ciTarget(prs []ghPR, branch, sha string, forge forgeOptions) orchestrator.Target {
	if len(prs) > 0 && prs[0].Number != 0 {
		var t orchestrator.Target
		setPR(&t, &prs[0], forge)
		if t.HeadSHA == "" {
			t.HeadSHA = sha
		}
		if t.Branch == "" {
			t.Branch = branch
		}
		return t
	}
	if branch == "" {
		return orchestrator.Target{Type: "commit", HeadSHA: sha}
	}
	return orchestrator.Target{Type: "branch", Branch: branch, HeadSHA: sha}
}

func setPR(t *orchestrator.Target, pr *ghPR, forge forgeOptions) {
	t.Type = "pull_request"
	t.Number = pr.Number
	t.URL = pr.HTMLURL
	t.Branch = pr.Head.Ref
	t.HeadSHA = pr.Head.SHA
	t.BaseBranch = pr.Base.Ref
	if pr.Head.Repo != nil && pr.Base.Repo != nil && pr.Head.Repo.FullName != "" &&
		!strings.EqualFold(pr.Head.Repo.FullName, pr.Base.Repo.FullName) {
		t.HeadRepo = headRepo(forge, pr.Head.Repo)
	}
}

// attemptKey names the CI-failure attempt counter of an event's target: the
// pull request when known, else the branch, else the commit.
func attemptKey(ev *orchestrator.Event) string {
	switch {
	case ev.Target.Number != 0:
		return fmt.Sprintf("%s#%d", config.RepoKey(ev.Repo), ev.Target.Number)
	case ev.Target.Branch != "":
		return config.RepoKey(ev.Repo) + "@" + ev.Target.Branch
	default:
		return config.RepoKey(ev.Repo) + "@" + ev.Target.HeadSHA
	}
}

func ghActor(u ghUser, association string) orchestrator.Actor {
	return orchestrator.Actor{
		Login:       u.Login,
		Name:        u.Name,
		Email:       u.Email,
		Association: association,
		IsBot:       isBot(u),
	}
}

func isBot(u ghUser) bool {
	return strings.EqualFold(u.Type, "Bot") || strings.HasSuffix(strings.ToLower(u.Login), "[bot]")
}

// headRepo is the clone URL of a fork's head repository on the configured
// GitHub, or "" when its full_name is not a plain owner/name.
func headRepo(forge forgeOptions, r *ghRepo) string {
	_, _, repo, ok := githubRepo(forge, r.FullName)
	if !ok {
		return ""
	}
	return repo
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// feedbackComment is a comment on a pull request that does not mention the
// trigger: a follow-up for the task that owns the pull request, if any.
func (n normalized) feedbackComment(event string, p *ghPayload, forge forgeOptions) (normalized, error) {
	c := p.Comment
	body := strings.TrimSpace(c.Body)
	if body == "" {
		return ignored("empty comment"), nil
	}
	ev := n.ev
	ev.Kind = orchestrator.KindPRFeedback
	ev.Actor = ghActor(c.User, c.AuthorAssociation)
	ev.Target.CommentID = c.ID
	if event == "pull_request_review_comment" {
		if p.PullRequest == nil || p.PullRequest.Number == 0 {
			return normalized{}, malformedf("review comment payload has no pull_request")
		}
		setPR(&ev.Target, p.PullRequest, forge)
		where := c.Path
		if c.Line > 0 {
			where = fmt.Sprintf("%s line %d", c.Path, c.Line)
		}
		ev.Instruction = fmt.Sprintf("Review comment from @%s on %s:\n\n%s", c.User.Login, orNone(where), body)
		ev.IdempotencyKey = "github:review_comment:" + strconv.FormatInt(c.ID, 10)
	} else {
		if p.Issue == nil || p.Issue.Number == 0 {
			return normalized{}, malformedf("issue_comment payload has no issue")
		}
		ev.Target.Type = "pull_request"
		ev.Target.Number = p.Issue.Number
		ev.Target.URL = p.Issue.HTMLURL
		ev.Instruction = fmt.Sprintf("Comment from @%s on the pull request:\n\n%s", c.User.Login, body)
		ev.IdempotencyKey = "github:comment:" + strconv.FormatInt(c.ID, 10)
	}
	n.auth = authComment
	n.attemptKey = "review:" + attemptKey(ev)
	return n, nil
}

// review is a submitted pull request review with a body or requesting
// changes: a follow-up for the task that owns the pull request. An approval
// or a bare "commented" review (its line comments arrive on their own)
// starts nothing.
func (n normalized) review(p *ghPayload, forge forgeOptions) (normalized, error) {
	r := p.Review
	if r == nil || r.ID == 0 || p.PullRequest == nil || p.PullRequest.Number == 0 {
		return normalized{}, malformedf("pull_request_review payload has no review or pull_request")
	}
	if p.Action != "submitted" {
		return ignored("pull_request_review %s", orNone(p.Action)), nil
	}
	state := strings.ToLower(r.State)
	body := strings.TrimSpace(r.Body)
	if body == "" && state != "changes_requested" {
		return ignored("review %s without a body", orNone(state)), nil
	}
	ev := n.ev
	ev.Kind = orchestrator.KindPRFeedback
	ev.Actor = ghActor(r.User, r.AuthorAssociation)
	setPR(&ev.Target, p.PullRequest, forge)
	ev.Instruction = fmt.Sprintf("Review (%s) from @%s:\n\n%s", strings.ReplaceAll(state, "_", " "), r.User.Login,
		firstNonEmpty(body, "Changes were requested; address the review's comments."))
	ev.IdempotencyKey = "github:review:" + strconv.FormatInt(r.ID, 10)
	n.auth = authComment
	n.attemptKey = "review:" + attemptKey(ev)
	return n, nil
}

// pullRequest is a pull request closed, merged or not: it ends the task
// that owns the pull request. Other actions start nothing.
func (n normalized) pullRequest(p *ghPayload, forge forgeOptions) (normalized, error) {
	pr := p.PullRequest
	if pr == nil || pr.Number == 0 {
		return normalized{}, malformedf("pull_request payload has no pull_request")
	}
	if p.Action != "closed" {
		return ignored("pull_request %s starts no work", orNone(p.Action)), nil
	}
	ev := n.ev
	setPR(&ev.Target, pr, forge)
	ev.Kind = orchestrator.KindPRClosed
	ev.Instruction = "pull request closed"
	if pr.Merged {
		ev.Kind = orchestrator.KindPRMerged
		ev.Instruction = "merged"
	}
	ev.IdempotencyKey = fmt.Sprintf("github:pull_request:%s#%d:%s:%s", p.Repository.FullName, pr.Number, p.Action, pr.Head.SHA)
	return n, nil
}
