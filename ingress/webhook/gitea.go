package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/forge"
)

// Gitea payload shapes (Gitea's modules/structs, which Forgejo shares):
// only the fields Nightshift reads. URLs in payloads are links for people;
// the clone URL is always built from the configured git_url and
// repository.full_name.
type (
	gtUser struct {
		ID       int64  `json:"id"`
		Login    string `json:"login"`
		FullName string `json:"full_name"`
		Email    string `json:"email"`
	}
	gtRepo struct {
		FullName string `json:"full_name"`
	}
	gtLabel struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
	}
	gtIssue struct {
		ID          int64     `json:"id"`
		Number      int       `json:"number"`
		Title       string    `json:"title"`
		Body        string    `json:"body"`
		HTMLURL     string    `json:"html_url"`
		State       string    `json:"state"`
		Labels      []gtLabel `json:"labels"`
		PullRequest *struct {
			Merged bool `json:"merged"`
		} `json:"pull_request"`
	}
	gtComment struct {
		ID             int64   `json:"id"`
		HTMLURL        string  `json:"html_url"`
		Body           string  `json:"body"`
		User           *gtUser `json:"user"`
		OriginalAuthor string  `json:"original_author"`
	}
	gtBranch struct {
		Ref  string  `json:"ref"`
		SHA  string  `json:"sha"`
		Repo *gtRepo `json:"repo"`
	}
	gtPR struct {
		ID      int64     `json:"id"`
		Number  int       `json:"number"`
		HTMLURL string    `json:"html_url"`
		State   string    `json:"state"`
		Merged  bool      `json:"merged"`
		Head    *gtBranch `json:"head"`
		Base    *gtBranch `json:"base"`
	}
	gtRunPR struct {
		Number int      `json:"number"`
		Head   gtBranch `json:"head"`
		Base   gtBranch `json:"base"`
	}
	gtWorkflowRun struct {
		ID             int64     `json:"id"`
		DisplayTitle   string    `json:"display_title"`
		Path           string    `json:"path"`
		HTMLURL        string    `json:"html_url"`
		RunAttempt     int       `json:"run_attempt"`
		HeadSHA        string    `json:"head_sha"`
		HeadBranch     string    `json:"head_branch"`
		Status         string    `json:"status"`
		Conclusion     string    `json:"conclusion"`
		PullRequests   []gtRunPR `json:"pull_requests"`
		HeadRepository *gtRepo   `json:"head_repository"`
	}
	gtPayload struct {
		Action      string     `json:"action"`
		Issue       *gtIssue   `json:"issue"`
		PullRequest *gtPR      `json:"pull_request"`
		Comment     *gtComment `json:"comment"`
		Repository  *gtRepo    `json:"repository"`
		Sender      *gtUser    `json:"sender"`
		IsPull      bool       `json:"is_pull"`
		Changes     *struct {
			AddedLabels []gtLabel `json:"added_labels"`
		} `json:"changes"`
		Review *struct {
			Type    string `json:"type"`
			Content string `json:"content"`
		} `json:"review"`
		Workflow *struct {
			Name string `json:"name"`
		} `json:"workflow"`
		WorkflowRun *gtWorkflowRun `json:"workflow_run"`

		// status events
		ID          int64  `json:"id"`
		SHA         string `json:"sha"`
		State       string `json:"state"`
		Context     string `json:"context"`
		TargetURL   string `json:"target_url"`
		Description string `json:"description"`
	}
)

// GiteaSource is the webhook dialect of Gitea and Forgejo behind POST
// /hooks/gitea. Deliveries are signed with HMAC-SHA256 of the body in hex:
// X-Gitea-Signature (Forgejo also sends X-Forgejo-Signature; either is
// accepted). X-Gitea-Event names the event and X-Gitea-Event-Type refines
// it (issue_label, pull_request_comment); X-Gitea-Delivery is the
// delivery id (the X-Forgejo-* spellings are read when those are absent).
//
// What starts work:
//   - issue_comment created (on an issue or a pull request) mentioning the
//     trigger: comment.command, authorized by the author's permission;
//     on a pull request, a new comment without the trigger is pr.feedback
//     for the task that owns it, and a new comment on an issue without it
//     may answer a waiting task's question;
//   - issues label_updated (or opened) while the issue carries the label:
//     issue.labeled, once per issue and label (Gitea's hook does not say
//     which label was added, so later label changes do not start it again);
//   - status with state failure or error (not those Gitea Actions sets for
//     its jobs), and workflow_run completed with conclusion failure or
//     timed_out: ci.failed, capped per pull request (or branch, or commit);
//   - pull_request closed: pr.merged or pr.closed, which end the task that
//     owns the pull request; a review requesting changes
//     (pull_request_rejected) or commenting with a text
//     (pull_request_comment) is pr.feedback.
type GiteaSource struct{}

var _ Source = GiteaSource{}

// Kind implements Source.
func (GiteaSource) Kind() forge.Kind { return forge.KindGitea }

// SignGitea returns the X-Gitea-Signature header value for body.
func SignGitea(secret string, body []byte) string { return hexHMAC(secret, body) }

// VerifyGitea checks header (X-Gitea-Signature or X-Forgejo-Signature: hex
// HMAC-SHA256 of the body) with each secret, in constant time.
func VerifyGitea(secrets []string, header string, body []byte) error {
	if len(secrets) == 0 {
		return ErrNoSecret
	}
	if header == "" {
		return ErrMissingSignature
	}
	return matchAny(secrets, strings.TrimPrefix(header, "sha256="), func(secret string) []byte { return hmacSHA256(secret, body) })
}

// Verify implements Source.
func (GiteaSource) Verify(h http.Header, body []byte, secrets []string) error {
	return VerifyGitea(secrets, giteaHeader(h, "Signature"), body)
}

// DeliveryID implements Source.
func (GiteaSource) DeliveryID(h http.Header) string {
	id := giteaHeader(h, "Delivery")
	if len(id) > 200 {
		return ""
	}
	return id
}

// giteaHeader reads X-Gitea-<name>, else X-Forgejo-<name>.
func giteaHeader(h http.Header, name string) string {
	if v := h.Get("X-Gitea-" + name); v != "" {
		return v
	}
	return h.Get("X-Forgejo-" + name)
}

// Normalize implements Source.
func (GiteaSource) Normalize(h http.Header, body []byte, opt SourceOptions) (SourceResult, error) {
	event := giteaHeader(h, "Event")
	if event == "" {
		return SourceResult{}, malformedf("missing X-Gitea-Event header")
	}
	return normalizeGitea(event, giteaHeader(h, "Event-Type"), body, opt)
}

// nightshiftMark starts the hidden markers Nightshift puts in what it
// writes (forge.Marker, question markers): a comment carrying one is
// Nightshift's own, whether or not bot_login is configured, and never
// becomes a trigger, feedback or an answer.
const nightshiftMark = "<!-- nightshift:"

// commitResolver is implemented by a Source whose CI events may name only
// a commit (Gitea's status hook carries no branch): the handler calls it,
// with the driver of the event's host, after Normalize and before the
// attempt cap and the publish.
type commitResolver interface {
	resolveCommit(ctx context.Context, d forge.Driver, r forge.Repo, res *SourceResult) error
}

// openAt is what the Gitea driver offers to find the pull requests whose
// head is a commit.
type openAt interface {
	OpenChangeRequestsAt(ctx context.Context, r forge.Repo, sha string) ([]forge.ChangeRequest, error)
}

var _ commitResolver = GiteaSource{}

// resolveCommit turns a CI failure that names only a commit into one on
// the open pull request whose head it is (so it follows up the task owning
// that pull request and the fix lands on its branch), or ignores it when
// the commit is the head of no open pull request.
func (GiteaSource) resolveCommit(ctx context.Context, d forge.Driver, r forge.Repo, res *SourceResult) error {
	ev := res.Event
	if ev == nil || ev.Kind != orchestrator.KindCIFailed || ev.Target.Type != "commit" || ev.Target.HeadSHA == "" {
		return nil
	}
	oa, ok := d.(openAt)
	if !ok {
		return nil
	}
	crs, err := oa.OpenChangeRequestsAt(ctx, r, ev.Target.HeadSHA)
	if err != nil {
		return fmt.Errorf("find the pull request of commit %s: %w", ev.Target.HeadSHA, err)
	}
	if len(crs) == 0 {
		*res = gtIgnored("commit %s is the head of no open pull request", ev.Target.HeadSHA)
		return nil
	}
	cr := crs[0]
	t := &ev.Target
	t.Type, t.Number, t.Branch, t.BaseBranch = "pull_request", cr.Number, cr.Head.Name, cr.Base
	if !cr.Head.Repo.IsZero() && !cr.Head.Repo.Same(r) {
		t.HeadRepo, _ = giteaRepo(strings.TrimSuffix(ev.Repo, r.Owner+"/"+r.Name+".git"), cr.Head.Repo.FullName())
	}
	res.AttemptKey = attemptKey(ev)
	return nil
}

// giteaEvents are the X-Gitea-Event values Nightshift decodes.
var giteaEvents = map[string]bool{
	"issue_comment": true, "issues": true, "pull_request": true, "status": true,
	"workflow_run": true, "pull_request_rejected": true, "pull_request_comment": true,
}

// normalizeGitea turns one Gitea delivery (event is X-Gitea-Event,
// eventType X-Gitea-Event-Type, possibly empty) into an event, an answer or
// a reason to ignore it. An error means the body is malformed.
func normalizeGitea(event, eventType string, body []byte, opt SourceOptions) (SourceResult, error) {
	if !giteaEvents[event] {
		if !json.Valid(body) {
			return SourceResult{}, malformedf("body is not JSON")
		}
		return gtIgnored("event %q starts no work", event), nil
	}
	var p gtPayload
	if err := jsonv2.Unmarshal(body, &p, jsontext.AllowDuplicateNames(true)); err != nil {
		return SourceResult{}, malformedf("decode %s payload: %v", event, err)
	}
	if p.Repository == nil || p.Repository.FullName == "" {
		return SourceResult{}, malformedf("%s payload has no repository", event)
	}
	repo, ok := giteaRepo(opt.GitURL, p.Repository.FullName)
	if !ok {
		return SourceResult{}, malformedf("repository full_name %q is not owner/name", p.Repository.FullName)
	}
	g := giteaNorm{opt: opt, p: &p, repo: repo, event: event}
	res, err := g.normalize(eventType)
	res.payload = &p
	return res, err
}

// normalize dispatches on the delivery's event.
func (g giteaNorm) normalize(eventType string) (SourceResult, error) {
	switch g.event {
	case "issue_comment":
		return g.comment()
	case "issues":
		return g.labeled(eventType)
	case "pull_request":
		return g.pullRequest()
	case "pull_request_rejected", "pull_request_comment":
		return g.review()
	case "status":
		return g.status()
	default: // workflow_run
		return g.workflowRun()
	}
}

func gtIgnored(format string, args ...any) SourceResult {
	return SourceResult{Ignore: fmt.Sprintf(format, args...)}
}

// giteaRepo is the clone URL of full_name (owner/name) on the forge whose
// clone base is gitURL, or false when full_name is not a plain owner/name.
func giteaRepo(gitURL, fullName string) (string, bool) {
	owner, name, ok := strings.Cut(fullName, "/")
	if !ok || !repoSegment(owner) || !repoSegment(name) || gitURL == "" {
		return "", false
	}
	return strings.TrimSuffix(gitURL, "/") + "/" + owner + "/" + name + ".git", true
}

// giteaNorm is one delivery being normalized.
type giteaNorm struct {
	opt   SourceOptions
	p     *gtPayload
	repo  string
	event string
}

func (g giteaNorm) newEvent(kind string, actor *gtUser) *orchestrator.Event {
	return &orchestrator.Event{Kind: kind, Repo: g.repo, RawEvent: g.event, Actor: g.actor(actor)}
}

// actor is who a Gitea user is; Gitea Actions' own user and logins ending
// in [bot] are bots.
func (g giteaNorm) actor(u *gtUser) orchestrator.Actor {
	if u == nil {
		return orchestrator.Actor{}
	}
	l := strings.ToLower(u.Login)
	return orchestrator.Actor{
		Login: u.Login, Name: u.FullName, Email: u.Email,
		IsBot: strings.HasSuffix(l, "[bot]") || l == "gitea-actions" || l == "forgejo-actions" || u.ID < 0,
	}
}

func (g giteaNorm) self(u *gtUser) bool {
	return u != nil && g.opt.BotLogin != "" && strings.EqualFold(u.Login, g.opt.BotLogin)
}

func (g giteaNorm) comment() (SourceResult, error) {
	p := g.p
	if p.Action != "created" {
		return gtIgnored("comment %s", orNone(p.Action)), nil
	}
	c := p.Comment
	if c == nil || c.ID == 0 {
		return SourceResult{}, malformedf("issue_comment payload has no comment")
	}
	if p.Issue == nil || p.Issue.Number == 0 {
		return SourceResult{}, malformedf("issue_comment payload has no issue")
	}
	if c.User == nil || c.User.Login == "" {
		return SourceResult{}, malformedf("issue_comment payload has no comment author")
	}
	if c.OriginalAuthor != "" {
		return gtIgnored("comment migrated from another forge"), nil
	}
	if g.self(c.User) || strings.Contains(c.Body, nightshiftMark) {
		return gtIgnored("comment by nightshift itself"), nil
	}
	onPR := p.IsPull || p.Issue.PullRequest != nil
	target := orchestrator.Target{Type: "issue", Number: p.Issue.Number, URL: c.HTMLURL, CommentID: c.ID}
	if onPR {
		target.Type = "pull_request"
		if pr := p.PullRequest; pr != nil && pr.Number == p.Issue.Number {
			g.setPR(&target, pr)
			target.URL = c.HTMLURL
		}
	}
	key := "gitea:comment:" + strconv.FormatInt(c.ID, 10)
	instruction, ok := commandIn(c.Body, g.opt.Trigger)
	body := strings.TrimSpace(c.Body)
	switch {
	case ok:
		ev := g.newEvent(orchestrator.KindComment, c.User)
		ev.Instruction, ev.Target, ev.IdempotencyKey = instruction, target, key
		return SourceResult{Event: ev, Auth: AuthComment}, nil
	case body == "":
		return gtIgnored("empty comment"), nil
	case !onPR:
		// No work; perhaps the answer to a waiting agent's question.
		return SourceResult{Answer: &SourceComment{Repo: g.repo, Target: orchestrator.Target{Type: "issue", Number: p.Issue.Number},
			ID: c.ID, URL: c.HTMLURL, Actor: g.actor(c.User), Body: body, RawEvent: g.event}}, nil
	}
	// Without the trigger, a comment on a pull request is feedback for the
	// task that owns it (the scheduler ignores it otherwise).
	ev := g.newEvent(orchestrator.KindPRFeedback, c.User)
	ev.Target, ev.IdempotencyKey = target, key
	ev.Instruction = fmt.Sprintf("Comment from @%s on the pull request:\n\n%s", c.User.Login, body)
	return SourceResult{Event: ev, Auth: AuthComment, AttemptKey: "review:" + attemptKey(ev)}, nil
}

// labeled is an issues delivery: the label on an issue starts work on it.
func (g giteaNorm) labeled(eventType string) (SourceResult, error) {
	p := g.p
	if p.Action != "label_updated" && p.Action != "opened" {
		return gtIgnored("issues %s", orNone(p.Action)), nil
	}
	is := p.Issue
	if is == nil || is.Number == 0 || is.ID == 0 {
		return SourceResult{}, malformedf("issues payload has no issue")
	}
	if is.PullRequest != nil {
		return gtIgnored("label on a pull request starts no work"), nil
	}
	if is.State == "closed" {
		return gtIgnored("issue is closed"), nil
	}
	labels := is.Labels
	if p.Changes != nil && p.Changes.AddedLabels != nil {
		labels = p.Changes.AddedLabels // a sender that says what was added
	}
	var label *gtLabel
	for i := range labels {
		if strings.EqualFold(labels[i].Name, g.opt.Label) {
			label = &labels[i]
			break
		}
	}
	if label == nil {
		return gtIgnored("issue does not carry label %q", g.opt.Label), nil
	}
	if g.self(p.Sender) {
		return gtIgnored("label set by nightshift itself"), nil
	}
	ev := g.newEvent(orchestrator.KindIssueLabeled, p.Sender)
	ev.Instruction = strings.TrimSpace(is.Title + "\n\n" + is.Body)
	ev.Target = orchestrator.Target{Type: "issue", Number: is.Number, URL: is.HTMLURL}
	ev.IdempotencyKey = fmt.Sprintf("gitea:issue_label:%d:%d", is.ID, label.ID)
	return SourceResult{Event: ev, Auth: AuthLabel}, nil
}

// setPR fills t from a pull request of the payload.
func (g giteaNorm) setPR(t *orchestrator.Target, pr *gtPR) {
	t.Type = "pull_request"
	t.Number = pr.Number
	t.URL = pr.HTMLURL
	if pr.Head != nil {
		t.Branch, t.HeadSHA = pr.Head.Ref, pr.Head.SHA
		if pr.Base != nil {
			t.HeadRepo = g.headRepo(pr.Head.Repo, pr.Base.Repo)
		}
	}
	if pr.Base != nil {
		t.BaseBranch = pr.Base.Ref
	}
}

// headRepo is the clone URL of a fork's head repository, "" when head is
// the base repository (or gone, or not a plain owner/name).
func (g giteaNorm) headRepo(head, base *gtRepo) string {
	if head == nil || head.FullName == "" {
		return ""
	}
	baseName := g.p.Repository.FullName
	if base != nil && base.FullName != "" {
		baseName = base.FullName
	}
	if strings.EqualFold(head.FullName, baseName) {
		return ""
	}
	r, _ := giteaRepo(g.opt.GitURL, head.FullName)
	return r
}

// pullRequest is a pull request closed, merged or not: it ends the task
// that owns it. Other actions start nothing.
func (g giteaNorm) pullRequest() (SourceResult, error) {
	p := g.p
	pr := p.PullRequest
	if pr == nil || pr.Number == 0 {
		return SourceResult{}, malformedf("pull_request payload has no pull_request")
	}
	if p.Action != "closed" {
		return gtIgnored("pull_request %s starts no work", orNone(p.Action)), nil
	}
	ev := g.newEvent(orchestrator.KindPRClosed, p.Sender)
	g.setPR(&ev.Target, pr)
	ev.Instruction = "pull request closed"
	if pr.Merged {
		ev.Kind, ev.Instruction = orchestrator.KindPRMerged, "merged"
	}
	ev.IdempotencyKey = fmt.Sprintf("gitea:pull_request:%s#%d:closed:%s", p.Repository.FullName, pr.Number, ev.Target.HeadSHA)
	return SourceResult{Event: ev}, nil
}

// review is a submitted review: requesting changes (X-Gitea-Event
// pull_request_rejected), or commenting with a text (pull_request_comment,
// Gitea's name for a review comment): feedback for the task that owns the
// pull request. Gitea's review hook carries no review id, so its key is
// the pull request, its head, the reviewer and a digest of the text.
func (g giteaNorm) review() (SourceResult, error) {
	p := g.p
	pr := p.PullRequest
	if pr == nil || pr.Number == 0 {
		return SourceResult{}, malformedf("%s payload has no pull_request", g.event)
	}
	if p.Action != "reviewed" {
		return gtIgnored("%s %s", g.event, orNone(p.Action)), nil
	}
	if g.self(p.Sender) {
		return gtIgnored("review by nightshift itself"), nil
	}
	text := ""
	if p.Review != nil {
		text = strings.TrimSpace(p.Review.Content)
	}
	what := "changes requested"
	if g.event == "pull_request_comment" {
		if text == "" {
			return gtIgnored("review comment without a text"), nil
		}
		what = "comment"
	}
	if strings.Contains(text, nightshiftMark) {
		return gtIgnored("review by nightshift itself"), nil
	}
	ev := g.newEvent(orchestrator.KindPRFeedback, p.Sender)
	g.setPR(&ev.Target, pr)
	login := ""
	if p.Sender != nil {
		login = p.Sender.Login
	}
	ev.Instruction = fmt.Sprintf("Review (%s) from @%s:\n\n%s", what, login,
		firstNonEmpty(text, "Changes were requested; address the review's comments."))
	sum := sha256.Sum256([]byte(text))
	ev.IdempotencyKey = fmt.Sprintf("gitea:review:%s#%d:%s:%s:%s", p.Repository.FullName, pr.Number, ev.Target.HeadSHA,
		strings.ToLower(login), hex.EncodeToString(sum[:8]))
	return SourceResult{Event: ev, Auth: AuthComment, AttemptKey: "review:" + attemptKey(ev)}, nil
}

// status is a commit status; failure and error start CI-fix work on the
// commit (Gitea's hook does not name branches: the scheduler finds the
// pull request whose head it is).
func (g giteaNorm) status() (SourceResult, error) {
	p := g.p
	if p.ID == 0 || p.SHA == "" {
		return SourceResult{}, malformedf("status payload has no id or sha")
	}
	if p.State != "failure" && p.State != "error" {
		return gtIgnored("status %s", orNone(p.State)), nil
	}
	if strings.Contains(p.TargetURL, "/"+p.Repository.FullName+"/actions/runs/") {
		// Gitea Actions sets a status per job too; the run's own
		// workflow_run delivery starts the fix, once.
		return gtIgnored("status of a Gitea Actions job; its workflow_run delivery starts the fix"), nil
	}
	ev := g.newEvent(orchestrator.KindCIFailed, p.Sender)
	ev.Target = orchestrator.Target{Type: "commit", HeadSHA: p.SHA, Check: p.Context, URL: p.TargetURL}
	ev.Instruction = fmt.Sprintf("Status %q is %s", p.Context, p.State)
	for _, s := range []string{p.Description, p.TargetURL} {
		if s != "" {
			ev.Instruction += ": " + s
		}
	}
	ev.IdempotencyKey = fmt.Sprintf("gitea:status:%s:%d", p.Repository.FullName, p.ID)
	return SourceResult{Event: ev, AttemptKey: attemptKey(ev)}, nil
}

// workflowRun is a Gitea Actions run; a completed failing one starts
// CI-fix work on its pull request, or its branch.
func (g giteaNorm) workflowRun() (SourceResult, error) {
	p := g.p
	wr := p.WorkflowRun
	if wr == nil || wr.ID == 0 {
		return SourceResult{}, malformedf("workflow_run payload has no workflow_run")
	}
	if p.Action != "completed" || !ciFailed(wr.Conclusion) {
		return gtIgnored("workflow_run %s with conclusion %s", orNone(p.Action), orNone(wr.Conclusion)), nil
	}
	ev := g.newEvent(orchestrator.KindCIFailed, p.Sender)
	name := wr.DisplayTitle
	if p.Workflow != nil && p.Workflow.Name != "" {
		name = p.Workflow.Name
	}
	name = firstNonEmpty(name, wr.Path, "workflow")
	switch {
	case len(wr.PullRequests) > 0 && wr.PullRequests[0].Number != 0:
		pr := wr.PullRequests[0]
		ev.Target = orchestrator.Target{Type: "pull_request", Number: pr.Number, Branch: pr.Head.Ref,
			HeadSHA: firstNonEmpty(pr.Head.SHA, wr.HeadSHA), BaseBranch: pr.Base.Ref}
		ev.Target.HeadRepo = g.headRepo(pr.Head.Repo, pr.Base.Repo)
	case p.PullRequest != nil && p.PullRequest.Number != 0:
		g.setPR(&ev.Target, p.PullRequest)
		ev.Target.HeadSHA = firstNonEmpty(ev.Target.HeadSHA, wr.HeadSHA)
	case wr.HeadBranch != "":
		ev.Target = orchestrator.Target{Type: "branch", Branch: wr.HeadBranch, HeadSHA: wr.HeadSHA}
	default:
		ev.Target = orchestrator.Target{Type: "commit", HeadSHA: wr.HeadSHA}
	}
	if ev.Target.HeadRepo == "" && wr.HeadRepository != nil {
		ev.Target.HeadRepo = g.headRepo(wr.HeadRepository, p.Repository)
	}
	ev.Target.Check = name
	ev.Target.URL = firstNonEmpty(wr.HTMLURL, ev.Target.URL)
	attempt := max(wr.RunAttempt, 1)
	ev.Instruction = fmt.Sprintf("Workflow %q failed (%s, attempt %d): %s", name, wr.Conclusion, attempt, wr.HTMLURL)
	ev.IdempotencyKey = fmt.Sprintf("gitea:workflow_run:%s:%d:%d", p.Repository.FullName, wr.ID, attempt)
	return SourceResult{Event: ev, AttemptKey: attemptKey(ev)}, nil
}
