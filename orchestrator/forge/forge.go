// Package forge is the orchestrator's port to the forges work comes from and
// goes back to: GitHub, GitLab, Gitea/Forgejo. A forge driver (a subpackage
// named after its technology: orchestrator/github, orchestrator/gitlab,
// orchestrator/gitea) implements Driver: a small set of concrete calls on one
// forge host. Everything that is policy lives here, once, for every forge:
//
//   - Publisher (orchestrator.PullRequests) plans a run's branches and finds
//     or creates its change request after the push (find-before-create,
//     draft, the repository's template, the task link and diff stats).
//   - Reporter (orchestrator.Notifier) reacts to the triggering comment and
//     keeps one progress comment per task up to date (created once, then
//     edited in place; found again through its hidden marker), asks the
//     agent's questions and answers refused triggers.
//   - Registry maps a clone URL, a repository key (host/owner/name) or a
//     webhook route (a Kind and a host) to the driver of that host, so
//     several GitHub Enterprise, GitLab and Gitea hosts work at once.
//
// Every driver runs the conformance suite in forge/forgetest.
//
// Words: a change request is a pull request (GitHub, Gitea) or a merge
// request (GitLab). Events about one carry Target.Type "pull_request"
// whatever the forge, and Target.Number is its number within the repository
// (GitLab's iid). A repository's identity across forges is its key,
// host/owner/name (config.RepoKey), which repos[].match globs match; on
// GitLab, owner is the full namespace path (group/subgroup).
package forge

import (
	"context"
	"errors"
	"strings"

	"github.com/nightshift/nightshift/worktree"
)

// Kind names a forge's API family. The kind of a driver is also the
// orchestrator.Source of the events its webhooks produce.
type Kind string

// Forge kinds. Forgejo speaks Gitea's API: it is KindGitea.
const (
	KindGitHub Kind = "github"
	KindGitLab Kind = "gitlab"
	KindGitea  Kind = "gitea"
)

// ParseKind returns the kind a configuration names: github, gitlab, gitea,
// or forgejo (an alias of gitea). Case is ignored.
func ParseKind(s string) (Kind, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "github":
		return KindGitHub, true
	case "gitlab":
		return KindGitLab, true
	case "gitea", "forgejo":
		return KindGitea, true
	}
	return "", false
}

// Errors drivers return (wrapped, with what they could not do).
var (
	// ErrNotFound is a repository, change request, comment or file the
	// forge does not have (HTTP 404).
	ErrNotFound = errors.New("forge: not found")
	// ErrConflict is a create the forge refused because the object exists
	// or the request conflicts with its state (GitHub 422 on a pull
	// request create, GitLab and Gitea 409): the caller looks again.
	ErrConflict = errors.New("forge: conflict")
)

// Repo is a repository on one forge host.
type Repo struct {
	// Host is the host[:port] of the forge's git URL, lower case.
	Host string
	// Owner is the user, organization or (GitLab) full namespace path.
	Owner string
	// Name is the repository (project) name.
	Name string
}

// FullName returns owner/name.
func (r Repo) FullName() string { return r.Owner + "/" + r.Name }

// Key returns host/owner/name, the identity repos[].match globs match.
func (r Repo) Key() string { return strings.ToLower(r.Host) + "/" + r.Owner + "/" + r.Name }

// IsZero reports whether r names no repository (a deleted fork).
func (r Repo) IsZero() bool { return r.Owner == "" && r.Name == "" }

// Same reports whether r and o are the same repository (case-insensitive,
// as forges treat names; an empty Host matches any).
func (r Repo) Same(o Repo) bool {
	return strings.EqualFold(r.Owner, o.Owner) && strings.EqualFold(r.Name, o.Name) &&
		(r.Host == "" || o.Host == "" || strings.EqualFold(r.Host, o.Host))
}

// Branch is a branch of a repository: the head of a change request.
type Branch struct {
	Repo Repo
	Name string
}

// ChangeState is the state of a change request.
type ChangeState string

// Change request states.
const (
	StateOpen   ChangeState = "open"
	StateClosed ChangeState = "closed" // closed without merging
	StateMerged ChangeState = "merged"
)

// ChangeRequest is a pull request (GitHub, Gitea) or merge request (GitLab).
type ChangeRequest struct {
	// Number is its number within the base repository (GitLab's iid).
	Number int
	// URL is its web page.
	URL   string
	State ChangeState
	Draft bool
	Title string
	Body  string
	// Head is the branch it proposes. Head.Repo is zero when the fork it
	// came from was deleted.
	Head Branch
	// HeadSHA is the head branch's current commit, when the forge says.
	HeadSHA string
	// HeadRef is a ref in the base repository that points at the head
	// commit even for forks (refs/pull/N/head on GitHub and Gitea,
	// refs/merge-requests/N/head on GitLab).
	HeadRef string
	// Base is the branch it merges into (in the repository it lives in).
	Base string
}

// NewChangeRequest is a change request to create.
type NewChangeRequest struct {
	// Head is the pushed branch. Its repository is the one the change
	// request is created in, or the repository it was forked from.
	Head  Branch
	Base  string
	Title string
	Body  string
	// Draft opens it as a draft (GitLab: the "Draft: " title prefix).
	Draft bool
}

// ChangeEdit is an update of a change request; empty fields are left alone.
type ChangeEdit struct {
	Title string
	Body  string
	// Reopen reopens a closed (unmerged) change request.
	Reopen bool
}

// ThreadKind says whether a thread is an issue or a change request (GitLab
// has separate endpoints for their notes; GitHub separate permissions).
type ThreadKind string

// Thread kinds.
const (
	ThreadIssue  ThreadKind = "issue"
	ThreadChange ThreadKind = "pull_request"
)

// Thread is the conversation of an issue or change request in a repository.
type Thread struct {
	Repo   Repo
	Kind   ThreadKind
	Number int
}

// CommentRef names one comment in a thread.
type CommentRef struct {
	Thread Thread
	ID     int64
	// URL is the comment's web URL when known; a driver may tell a review
	// (diff) comment from a discussion comment by it (GitHub's
	// #discussion_r anchors).
	URL string
}

// Reactions Nightshift adds. Every forge knows these names.
const (
	// ReactionEyes acknowledges a trigger: a task was accepted.
	ReactionEyes = "eyes"
)

// Access is a person's access level on a repository, ordered.
type Access int

// Access levels, lowest first. GitLab maps Guest and Reporter to read,
// Developer to write, Maintainer to maintain, Owner to admin; Gitea maps
// read, write, admin and owner the same way.
const (
	AccessNone Access = iota
	AccessRead
	AccessTriage
	AccessWrite
	AccessMaintain
	AccessAdmin
)

// CanTrigger reports whether a comment by someone with access a may start
// work: write access or more.
func (a Access) CanTrigger() bool { return a >= AccessWrite }

// String returns the level's name: none, read, triage, write, maintain,
// admin.
func (a Access) String() string {
	switch a {
	case AccessRead:
		return "read"
	case AccessTriage:
		return "triage"
	case AccessWrite:
		return "write"
	case AccessMaintain:
		return "maintain"
	case AccessAdmin:
		return "admin"
	}
	return "none"
}

// CIKind says what a CI failure is.
type CIKind string

// CI failure kinds.
const (
	// CICheck is a check run, a CI job or an Actions job: it may have
	// output and a log.
	CICheck CIKind = "check"
	// CIStatus is a commit status (a context with a state and a link).
	CIStatus CIKind = "status"
)

// CIQuery asks for the failing CI of one commit.
type CIQuery struct {
	// Ref is a commit SHA or a branch name.
	Ref string
	// Prefer is a check name listed first when it failed (the one the
	// trigger named).
	Prefer string
	// MaxLogs bounds how many failing checks get their log read (the first
	// ones, in the order returned).
	MaxLogs int
	// LogBytes is how much of the end of each log to keep (whole lines).
	LogBytes int
}

// CIFailure is one failing check or status of a commit.
type CIFailure struct {
	Kind CIKind
	// Name is the check, job or status context name.
	Name string
	// Conclusion is the forge's word for the failure (failure, timed_out,
	// error, failed, ...).
	Conclusion string
	// URL links to the failure's page.
	URL string
	// Output holds a check's texts (title, summary, details), in order.
	Output []string
	// Description is a status's description.
	Description string
	// Log is the end of the job log (whole lines, timestamps stripped), ""
	// when there is none or it could not be read.
	Log string
}

// Driver is one forge host's API: what Publisher and Reporter need and
// nothing more. Calls are idempotent where the contract says so; every
// call authenticates itself with the least the forge offers (GitHub App
// tokens narrowed per call, project tokens, ...). Texts passed in are
// already redacted. Drivers must pass forgetest.Run.
type Driver interface {
	// Kind returns the driver's API family.
	Kind() Kind
	// Host returns the host[:port] of the forge's git URL, lower case.
	Host() string
	// RepoOf returns the repository a clone URL names when it is on this
	// host (https://host/owner/name(.git), ssh://git@host/owner/name.git,
	// git@host:owner/name.git), with Host set.
	RepoOf(cloneURL string) (Repo, bool)
	// CloneURL returns r's https clone URL.
	CloneURL(r Repo) string
	// PushAuth returns credentials that fetch from and push to r, valid
	// long enough for a run (at least 50 minutes).
	PushAuth(ctx context.Context, r Repo) (worktree.Auth, error)
	// DefaultBranch returns r's default branch.
	DefaultBranch(ctx context.Context, r Repo) (string, error)
	// Template returns r's change request template at ref (a commit or
	// branch; "" is the default branch), trimmed, or "" when r has none.
	Template(ctx context.Context, r Repo, ref string) (string, error)

	// ChangeRequest returns change request number of r (ErrNotFound).
	ChangeRequest(ctx context.Context, r Repo, number int) (ChangeRequest, error)
	// FindChangeRequests returns the change requests of r whose head is
	// head (open ones only unless all), newest first.
	FindChangeRequests(ctx context.Context, r Repo, head Branch, all bool) ([]ChangeRequest, error)
	// OpenChangeRequest creates a change request in r. It returns an error
	// wrapping ErrConflict when the forge refuses because one exists.
	OpenChangeRequest(ctx context.Context, r Repo, req NewChangeRequest) (ChangeRequest, error)
	// EditChangeRequest updates change request number of r.
	EditChangeRequest(ctx context.Context, r Repo, number int, edit ChangeEdit) (ChangeRequest, error)

	// React adds reaction (ReactionEyes) to a comment. Reacting twice
	// leaves one reaction.
	React(ctx context.Context, c CommentRef, reaction string) error
	// Comment adds a comment to a thread and returns its id.
	Comment(ctx context.Context, th Thread, body string) (int64, error)
	// EditComment replaces the body of comment id in a thread.
	EditComment(ctx context.Context, th Thread, id int64, body string) error
	// FindComment returns the id of the first comment of the thread whose
	// body contains marker, or 0 when there is none.
	FindComment(ctx context.Context, th Thread, marker string) (int64, error)

	// CIFailures returns the failing checks (Prefer first) and then the
	// failing statuses of a commit. A forge without one of them returns
	// only the other. When one lookup fails it returns what the others
	// found with the error.
	CIFailures(ctx context.Context, r Repo, q CIQuery) ([]CIFailure, error)
	// Permission returns login's access on r; a login with no role on r
	// has AccessNone (or AccessRead where the forge says so for a public
	// repository), not an error.
	Permission(ctx context.Context, r Repo, login string) (Access, error)
}

// Marker returns the hidden marker Nightshift puts in everything it writes
// for task id (change request bodies, progress comments), so it can find
// it again.
func Marker(id string) string { return "<!-- nightshift:task:" + id + " -->" }
