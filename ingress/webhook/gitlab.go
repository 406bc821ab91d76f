package webhook

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/forge"
)

// GitLab payload shapes (webhook API v4): only the fields Nightshift reads.
// URLs in payloads are links for people; the clone URL is always built from
// the configured git_url and project.path_with_namespace.
type (
	glUser struct {
		ID       int64  `json:"id"`
		Name     string `json:"name"`
		Username string `json:"username"`
		Email    string `json:"email"`
	}
	glProject struct {
		ID                int64  `json:"id"`
		PathWithNamespace string `json:"path_with_namespace"`
	}
	glLabel struct {
		ID    int64  `json:"id"`
		Title string `json:"title"`
	}
	glCommit struct {
		ID string `json:"id"`
	}
	// glMR is a merge request as note and pipeline hooks embed it, and the
	// object_attributes of a merge request hook.
	glMR struct {
		ID              int64      `json:"id"`
		IID             int        `json:"iid"`
		Title           string     `json:"title"`
		SourceBranch    string     `json:"source_branch"`
		TargetBranch    string     `json:"target_branch"`
		SourceProjectID int64      `json:"source_project_id"`
		TargetProjectID int64      `json:"target_project_id"`
		State           string     `json:"state"`
		Action          string     `json:"action"`
		URL             string     `json:"url"`
		LastCommit      *glCommit  `json:"last_commit"`
		Source          *glProject `json:"source"`
	}
	// glIssue is an issue as a note hook embeds it, and the
	// object_attributes of an issue hook.
	glIssue struct {
		ID           int64     `json:"id"`
		IID          int       `json:"iid"`
		Title        string    `json:"title"`
		Description  string    `json:"description"`
		URL          string    `json:"url"`
		UpdatedAt    string    `json:"updated_at"`
		State        string    `json:"state"`
		Action       string    `json:"action"`
		Confidential bool      `json:"confidential"`
		Labels       []glLabel `json:"labels"`
	}
	glNote struct {
		ID           int64  `json:"id"`
		Note         string `json:"note"`
		NoteableType string `json:"noteable_type"`
		System       bool   `json:"system"`
		Internal     bool   `json:"internal"`
		Action       string `json:"action"`
		URL          string `json:"url"`
	}
	glPipeline struct {
		ID     int64  `json:"id"`
		Ref    string `json:"ref"`
		Tag    bool   `json:"tag"`
		SHA    string `json:"sha"`
		Status string `json:"status"`
		URL    string `json:"url"`
	}
	glPayload struct {
		ObjectKind       string         `json:"object_kind"`
		User             *glUser        `json:"user"`
		Project          *glProject     `json:"project"`
		ObjectAttributes jsontext.Value `json:"object_attributes"`
		Issue            *glIssue       `json:"issue"`
		MergeRequest     *glMR          `json:"merge_request"`
		Changes          struct {
			Labels *struct {
				Previous []glLabel `json:"previous"`
				Current  []glLabel `json:"current"`
			} `json:"labels"`
			Assignees *struct {
				Previous []glUser `json:"previous"`
				Current  []glUser `json:"current"`
			} `json:"assignees"`
		} `json:"changes"`
		Assignees []glUser `json:"assignees"`

		// Job (build) hooks: the job's fields are top level.
		Ref                string `json:"ref"`
		Tag                bool   `json:"tag"`
		SHA                string `json:"sha"`
		BuildID            int64  `json:"build_id"`
		BuildName          string `json:"build_name"`
		BuildStage         string `json:"build_stage"`
		BuildStatus        string `json:"build_status"`
		BuildAllowFailure  bool   `json:"build_allow_failure"`
		BuildFailureReason string `json:"build_failure_reason"`
		PipelineID         int64  `json:"pipeline_id"`
	}
)

// GitLabSource returns the Source of GitLab deliveries (POST
// /hooks/gitlab): X-Gitlab-Token verification, X-Gitlab-Event dispatch,
// Idempotency-Key or X-Gitlab-Event-UUID as the delivery id.
func GitLabSource() Source { return gitlabSource{} }

type gitlabSource struct{}

var _ Source = gitlabSource{}

// Kind implements Source.
func (gitlabSource) Kind() forge.Kind { return forge.KindGitLab }

// Verify implements Source: X-Gitlab-Token against the secrets.
func (gitlabSource) Verify(h http.Header, _ []byte, secrets []string) error {
	return VerifyGitLab(secrets, h.Get("X-Gitlab-Token"))
}

// DeliveryID implements Source: Idempotency-Key (GitLab 17.4 and later:
// the same on every retry of one event), else X-Gitlab-Event-UUID.
func (gitlabSource) DeliveryID(h http.Header) string {
	return gitlabDeliveryID(h.Get("Idempotency-Key"), h.Get("X-Gitlab-Event-UUID"))
}

// Normalize implements Source.
func (gitlabSource) Normalize(h http.Header, body []byte, opt SourceOptions) (SourceResult, error) {
	return normalizeGitLab(h.Get("X-Gitlab-Event"), body, opt)
}

// GitLab X-Gitlab-Event values Nightshift reads. Every other event is
// answered 200 ignored.
const (
	glNoteHook         = "Note Hook"
	glConfidentialNote = "Confidential Note Hook"
	glIssueHook        = "Issue Hook"
	glConfidentialIss  = "Confidential Issue Hook"
	glMergeRequestHook = "Merge Request Hook"
	glPipelineHook     = "Pipeline Hook"
	glJobHook          = "Job Hook"
)

// VerifyGitLab checks token (the X-Gitlab-Token value, the webhook's
// secret token in clear) against each secret in constant time. GitLab
// does not sign bodies: the token is a shared secret sent with every
// delivery, so the route must be served over TLS.
func VerifyGitLab(secrets []string, token string) error {
	if len(secrets) == 0 {
		return ErrNoSecret
	}
	if token == "" {
		return ErrMissingSignature
	}
	// Compare digests so neither the length of a secret nor the position
	// of the first differing byte shows in the time taken, and look at
	// every secret so the time does not say which one matched.
	got := sha256.Sum256([]byte(token))
	ok := 0
	for _, s := range secrets {
		if s == "" {
			continue
		}
		want := sha256.Sum256([]byte(s))
		ok |= subtle.ConstantTimeCompare(got[:], want[:])
	}
	if ok == 0 {
		return ErrBadSignature
	}
	return nil
}

// gitlabDeliveryID picks the delivery id among GitLab's headers; "" when
// there is none (the handler then names the delivery by its body). An id
// longer than 200 bytes is not GitLab's and is not used.
func gitlabDeliveryID(idempotencyKey, eventUUID string) string {
	switch {
	case idempotencyKey != "" && len(idempotencyKey) <= 200:
		return idempotencyKey
	case eventUUID != "" && len(eventUUID) <= 200:
		return eventUUID
	}
	return ""
}

// decodeGitLab decodes a GitLab body of an event the normalizer reads.
func decodeGitLab(event string, body []byte) (*glPayload, error) {
	var p glPayload
	if err := jsonv2.Unmarshal(body, &p, jsontext.AllowDuplicateNames(true)); err != nil {
		return nil, malformedf("decode %s payload: %v", event, err)
	}
	return &p, nil
}

// normalizeGitLab turns one GitLab delivery (event is X-Gitlab-Event) into
// an event, an answer or a reason to ignore it. An error means the body is
// malformed.
func normalizeGitLab(event string, body []byte, opt SourceOptions) (SourceResult, error) {
	switch event {
	case glNoteHook, glConfidentialNote, glIssueHook, glConfidentialIss, glMergeRequestHook, glPipelineHook, glJobHook:
	default:
		if !json.Valid(body) {
			return SourceResult{}, malformedf("body is not JSON")
		}
		if event == "" {
			return SourceResult{}, malformedf("missing X-Gitlab-Event header")
		}
		return glIgnored("event %q starts no work", event), nil
	}
	p, err := decodeGitLab(event, body)
	if err != nil {
		return SourceResult{}, err
	}
	res, err := normalizeGitLabPayload(event, p, opt)
	res.payload = p
	return res, err
}

func glIgnored(format string, args ...any) SourceResult {
	return SourceResult{Ignore: fmt.Sprintf(format, args...)}
}

// wantKind is the object_kind each event carries.
var wantKind = map[string]string{
	glNoteHook: "note", glConfidentialNote: "note", glIssueHook: "issue", glConfidentialIss: "issue",
	glMergeRequestHook: "merge_request", glPipelineHook: "pipeline", glJobHook: "build",
}

// glDelivery is one GitLab delivery being normalized.
type glDelivery struct {
	ev      *orchestrator.Event
	p       *glPayload
	opt     SourceOptions
	project string // path_with_namespace
}

func normalizeGitLabPayload(event string, p *glPayload, opt SourceOptions) (SourceResult, error) {
	if p.ObjectKind != wantKind[event] {
		return SourceResult{}, malformedf("%s payload has object_kind %q, want %q", event, p.ObjectKind, wantKind[event])
	}
	if p.Project == nil || p.Project.PathWithNamespace == "" {
		return SourceResult{}, malformedf("%s payload has no project", event)
	}
	repo, ok := gitlabRepo(opt.GitURL, p.Project.PathWithNamespace)
	if !ok {
		return SourceResult{}, malformedf("project path_with_namespace %q is not group/.../name", p.Project.PathWithNamespace)
	}
	d := glDelivery{ev: &orchestrator.Event{Repo: repo, RawEvent: event}, p: p, opt: opt, project: p.Project.PathWithNamespace}
	if p.User != nil {
		d.ev.Actor = glActor(*p.User, opt.BotLogin)
	}
	switch event {
	case glNoteHook:
		return d.note()
	case glConfidentialNote:
		return glIgnored("confidential note: its answer would be public"), nil
	case glConfidentialIss:
		return glIgnored("confidential issue: its work would be public"), nil
	case glIssueHook:
		return d.issue()
	case glMergeRequestHook:
		return d.mergeRequest()
	case glPipelineHook:
		return d.pipeline()
	default: // Job Hook
		return d.job()
	}
}

// objectAttributes decodes the payload's object_attributes into v.
func objectAttributes(event string, p *glPayload, v any) error {
	if len(p.ObjectAttributes) == 0 || p.ObjectAttributes.Kind() != '{' {
		return malformedf("%s payload has no object_attributes", event)
	}
	if err := jsonv2.Unmarshal(p.ObjectAttributes, v, jsontext.AllowDuplicateNames(true)); err != nil {
		return malformedf("decode %s object_attributes: %v", event, err)
	}
	return nil
}

// note is a note (comment) on an issue or merge request: a command when it
// mentions the trigger; otherwise, on a merge request, feedback for the
// task that owns it, and on an issue a possible answer to a waiting
// task's question.
func (d glDelivery) note() (SourceResult, error) {
	p, ev := d.p, d.ev
	var note glNote
	if err := objectAttributes(glNoteHook, p, &note); err != nil {
		return SourceResult{}, err
	}
	if note.ID == 0 {
		return SourceResult{}, malformedf("note payload has no note id")
	}
	// GitLab before 16.x sent note hooks on creation only, without action.
	if note.Action != "" && note.Action != "create" {
		return glIgnored("note %s", note.Action), nil
	}
	if note.System {
		return glIgnored("system note"), nil
	}
	if p.User == nil || p.User.Username == "" {
		return SourceResult{}, malformedf("note payload has no user")
	}
	if note.Internal {
		return glIgnored("internal note: its answer would be public"), nil
	}
	ev.Target.CommentID = note.ID
	ev.IdempotencyKey = "gitlab:note:" + strconv.FormatInt(note.ID, 10)
	switch note.NoteableType {
	case "Issue":
		if p.Issue == nil || p.Issue.IID == 0 {
			return SourceResult{}, malformedf("issue note payload has no issue")
		}
		if p.Issue.Confidential {
			return glIgnored("note on a confidential issue: its answer would be public"), nil
		}
		ev.Target.Type = "issue"
		ev.Target.Number = p.Issue.IID
	case "MergeRequest":
		if p.MergeRequest == nil || p.MergeRequest.IID == 0 {
			return SourceResult{}, malformedf("merge request note payload has no merge_request")
		}
		setMR(&ev.Target, p.MergeRequest, d.opt.GitURL)
	default:
		return glIgnored("note on a %s starts no work", orNone(note.NoteableType)), nil
	}
	ev.Target.URL = note.URL
	if instruction, ok := commandIn(note.Note, d.opt.Trigger); ok {
		ev.Kind = orchestrator.KindComment
		ev.Instruction = instruction
		return SourceResult{Event: ev, Auth: AuthComment}, nil
	}
	body := strings.TrimSpace(note.Note)
	if body == "" {
		return glIgnored("empty note"), nil
	}
	if ev.Target.Type != "pull_request" {
		return SourceResult{Answer: &SourceComment{Repo: ev.Repo, Target: orchestrator.Target{Type: "issue", Number: ev.Target.Number},
			ID: note.ID, URL: note.URL, Actor: ev.Actor, Body: body, RawEvent: ev.RawEvent}}, nil
	}
	// Without the trigger, a note on a merge request is feedback for the
	// task that owns it (the scheduler ignores it otherwise).
	ev.Kind = orchestrator.KindPRFeedback
	ev.Instruction = fmt.Sprintf("Comment from @%s on the merge request:\n\n%s", p.User.Username, body)
	return SourceResult{Event: ev, Auth: AuthComment, AttemptKey: "review:" + glAttemptKey(ev)}, nil
}

// issue is an issue hook: the configured label added, or the issue
// assigned to Nightshift's own user, starts work on the issue.
func (d glDelivery) issue() (SourceResult, error) {
	p, ev := d.p, d.ev
	var is glIssue
	if err := objectAttributes(glIssueHook, p, &is); err != nil {
		return SourceResult{}, err
	}
	if is.ID == 0 || is.IID == 0 {
		return SourceResult{}, malformedf("issue payload has no issue id")
	}
	if is.Confidential {
		return glIgnored("confidential issue: its work would be public"), nil
	}
	if is.Action != "open" && is.Action != "update" && is.Action != "reopen" {
		return glIgnored("issue %s", orNone(is.Action)), nil
	}
	if is.State != "" && is.State != "opened" {
		return glIgnored("issue is %s", is.State), nil
	}
	ev.Target = orchestrator.Target{Type: "issue", Number: is.IID, URL: is.URL}
	ev.Instruction = strings.TrimSpace(is.Title + "\n\n" + is.Description)
	if l, ok := labelAdded(p, is, d.opt.Label); ok {
		ev.Kind = orchestrator.KindIssueLabeled
		ev.IdempotencyKey = fmt.Sprintf("gitlab:issue_label:%d:%d:%s", is.ID, l.ID, is.UpdatedAt)
		return SourceResult{Event: ev, Auth: AuthLabel}, nil
	}
	if d.opt.BotLogin != "" && assignedTo(p, is, d.opt.BotLogin) {
		ev.Kind = orchestrator.KindTicketAssigned
		ev.IdempotencyKey = fmt.Sprintf("gitlab:issue_assign:%d:%s", is.ID, is.UpdatedAt)
		return SourceResult{Event: ev, Auth: AuthLabel}, nil
	}
	return glIgnored("issue %s neither adds label %q nor assigns %s", is.Action, d.opt.Label, orNone(d.opt.BotLogin)), nil
}

// labelAdded returns the configured label when this hook added it: it is
// in changes.labels.current and not in previous, or, for an issue opened
// with it, in the issue's labels.
func labelAdded(p *glPayload, is glIssue, label string) (glLabel, bool) {
	has := func(ls []glLabel) (glLabel, bool) {
		for _, l := range ls {
			if label != "" && strings.EqualFold(l.Title, label) {
				return l, true
			}
		}
		return glLabel{}, false
	}
	if c := p.Changes.Labels; c != nil {
		l, now := has(c.Current)
		_, before := has(c.Previous)
		return l, now && !before
	}
	if is.Action == "open" {
		return has(is.Labels)
	}
	return glLabel{}, false
}

// assignedTo reports whether this hook assigned the issue to user: it is
// in changes.assignees.current and not in previous, or, for an issue
// opened assigned, among its assignees.
func assignedTo(p *glPayload, is glIssue, user string) bool {
	has := func(us []glUser) bool {
		return slices.ContainsFunc(us, func(u glUser) bool { return strings.EqualFold(u.Username, user) })
	}
	if c := p.Changes.Assignees; c != nil {
		return has(c.Current) && !has(c.Previous)
	}
	return is.Action == "open" && has(p.Assignees)
}

// mergeRequest is a merge request merged or closed: it ends the task that
// owns the merge request. Other actions start nothing.
func (d glDelivery) mergeRequest() (SourceResult, error) {
	ev := d.ev
	var mr glMR
	if err := objectAttributes(glMergeRequestHook, d.p, &mr); err != nil {
		return SourceResult{}, err
	}
	if mr.IID == 0 {
		return SourceResult{}, malformedf("merge request payload has no iid")
	}
	switch mr.Action {
	case "merge":
		ev.Kind, ev.Instruction = orchestrator.KindPRMerged, "merged"
	case "close":
		ev.Kind, ev.Instruction = orchestrator.KindPRClosed, "merge request closed"
	default:
		return glIgnored("merge request %s starts no work", orNone(mr.Action)), nil
	}
	setMR(&ev.Target, &mr, "")
	sha := ""
	if mr.LastCommit != nil {
		sha = mr.LastCommit.ID
	}
	ev.IdempotencyKey = fmt.Sprintf("gitlab:merge_request:%s!%d:%s:%s", d.project, mr.IID, mr.Action, sha)
	return SourceResult{Event: ev}, nil
}

// mrRefRe matches the refs GitLab runs merge request pipelines on.
var mrRefRe = regexp.MustCompile(`^refs/merge-requests/([0-9]{1,9})/(head|merge|train)$`)

// pipeline is a failed pipeline: CI-fix work on its merge request (when
// the hook names one) or its branch. The semantic key is the pipeline, so
// the job hooks of the same pipeline add nothing.
func (d glDelivery) pipeline() (SourceResult, error) {
	p, ev := d.p, d.ev
	var pl glPipeline
	if err := objectAttributes(glPipelineHook, p, &pl); err != nil {
		return SourceResult{}, err
	}
	if pl.ID == 0 {
		return SourceResult{}, malformedf("pipeline payload has no id")
	}
	if pl.Status != "failed" {
		return glIgnored("pipeline %s", orNone(pl.Status)), nil
	}
	if pl.Tag {
		return glIgnored("pipeline on tag %s", pl.Ref), nil
	}
	ev.Kind = orchestrator.KindCIFailed
	if mr := p.MergeRequest; mr != nil && mr.IID != 0 {
		setMR(&ev.Target, mr, "")
		ev.Target.HeadSHA = pl.SHA
	} else {
		ev.Target = glCITarget(pl.Ref, pl.SHA)
	}
	ev.Target.Check = "pipeline"
	ev.Target.URL = firstNonEmpty(pl.URL, ev.Target.URL)
	ev.Instruction = fmt.Sprintf("Pipeline %d failed on %s", pl.ID, orNone(firstNonEmpty(ev.Target.Branch, pl.Ref)))
	if pl.URL != "" {
		ev.Instruction += ": " + pl.URL
	}
	ev.IdempotencyKey = fmt.Sprintf("gitlab:pipeline:%d:failed", pl.ID)
	return SourceResult{Event: ev, AttemptKey: glAttemptKey(ev)}, nil
}

// job is a failed job (not allowed to fail): CI-fix work on its branch.
// Job hooks do not name the merge request; the scheduler resolves it from
// the branch. It shares the pipeline's semantic key, so the pipeline's own
// failure hook and the other failed jobs of the pipeline add nothing.
func (d glDelivery) job() (SourceResult, error) {
	p, ev := d.p, d.ev
	if p.BuildID == 0 {
		return SourceResult{}, malformedf("job payload has no build_id")
	}
	if p.BuildStatus != "failed" {
		return glIgnored("job %s", orNone(p.BuildStatus)), nil
	}
	if p.BuildAllowFailure {
		return glIgnored("job %q is allowed to fail", p.BuildName), nil
	}
	if p.Tag {
		return glIgnored("job on tag %s", p.Ref), nil
	}
	ev.Kind = orchestrator.KindCIFailed
	ev.Target = glCITarget(p.Ref, p.SHA)
	ev.Target.Check = p.BuildName
	ev.Instruction = fmt.Sprintf("Job %q (stage %s) failed on %s", p.BuildName, orNone(p.BuildStage), orNone(firstNonEmpty(ev.Target.Branch, p.Ref)))
	if p.BuildFailureReason != "" {
		ev.Instruction += " (" + p.BuildFailureReason + ")"
	}
	if p.PipelineID != 0 {
		ev.IdempotencyKey = fmt.Sprintf("gitlab:pipeline:%d:failed", p.PipelineID)
	} else {
		ev.IdempotencyKey = fmt.Sprintf("gitlab:job:%d:failed", p.BuildID)
	}
	return SourceResult{Event: ev, AttemptKey: glAttemptKey(ev)}, nil
}

// glCITarget is the target of a CI failure on ref: the merge request of a
// refs/merge-requests/IID/... ref, else the branch, else the commit.
func glCITarget(ref, sha string) orchestrator.Target {
	if m := mrRefRe.FindStringSubmatch(ref); m != nil {
		iid, _ := strconv.Atoi(m[1])
		return orchestrator.Target{Type: "pull_request", Number: iid, HeadSHA: sha}
	}
	if ref == "" || strings.HasPrefix(ref, "refs/") {
		return orchestrator.Target{Type: "commit", HeadSHA: sha}
	}
	return orchestrator.Target{Type: "branch", Branch: ref, HeadSHA: sha}
}

// setMR points t at merge request mr. gitURL, when set, turns a fork's
// source project into HeadRepo.
func setMR(t *orchestrator.Target, mr *glMR, gitURL string) {
	t.Type = "pull_request"
	t.Number = mr.IID
	t.URL = mr.URL
	t.Branch = mr.SourceBranch
	t.BaseBranch = mr.TargetBranch
	if mr.LastCommit != nil {
		t.HeadSHA = mr.LastCommit.ID
	}
	if gitURL != "" && mr.SourceProjectID != 0 && mr.TargetProjectID != 0 && mr.SourceProjectID != mr.TargetProjectID &&
		mr.Source != nil {
		if r, ok := gitlabRepo(gitURL, mr.Source.PathWithNamespace); ok {
			t.HeadRepo = r
		}
	}
}

// glAttemptKey names the CI-failure attempt counter of a GitLab event: the
// merge request's source branch when known (pipeline and job hooks of the
// same merge request then share it), else the merge request, else the
// commit.
func glAttemptKey(ev *orchestrator.Event) string {
	switch {
	case ev.Target.Branch != "":
		return config.RepoKey(ev.Repo) + "@" + ev.Target.Branch
	case ev.Target.Number != 0:
		return fmt.Sprintf("%s!%d", config.RepoKey(ev.Repo), ev.Target.Number)
	default:
		return config.RepoKey(ev.Repo) + "@" + ev.Target.HeadSHA
	}
}

// botUserRe matches the users GitLab creates for project, group and
// service-account tokens (project_42_bot_0123abcd, group_7_bot, ...).
var botUserRe = regexp.MustCompile(`^(project|group)_[0-9]+_bot[0-9]*(_[0-9a-f]+)?$|^service_account_`)

func glActor(u glUser, botLogin string) orchestrator.Actor {
	return orchestrator.Actor{
		Login: u.Username,
		Name:  u.Name,
		Email: u.Email,
		IsBot: botUserRe.MatchString(u.Username) || (botLogin != "" && strings.EqualFold(u.Username, botLogin)),
	}
}

// gitlabRepo turns a project's path_with_namespace (group/sub/name) into
// the clone URL on the configured GitLab, or false when it is not a path
// of plain segments.
func gitlabRepo(gitURL, path string) (string, bool) {
	if gitURL == "" {
		return "", false
	}
	parts := strings.Split(path, "/")
	if len(parts) < 2 || len(parts) > 21 || !allSegments(parts) {
		return "", false
	}
	return strings.TrimSuffix(gitURL, "/") + "/" + path + ".git", true
}
