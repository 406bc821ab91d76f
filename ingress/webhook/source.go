package webhook

import (
	"net/http"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/forge"
)

// Source is one forge's webhook dialect behind its route (POST
// /hooks/gitlab, POST /hooks/gitea): how a delivery is authenticated and
// what it means. The handler owns everything else, for every forge alike:
// the body limits, trying each configured forge of the route's kind until
// one verifies, transport dedupe by DeliveryID, the permission check of
// comment triggers (through the forge's driver), the CI attempt cap, the
// publish, answers to waiting questions and the status codes of the
// /hooks/github contract.
type Source interface {
	// Kind is the forge kind the source speaks; the route is
	// "/hooks/" + Kind and the events' Source is orchestrator.Source(Kind).
	Kind() forge.Kind
	// Verify checks a delivery against the webhook secrets of one
	// configured forge before anything is parsed (constant-time compare,
	// any of the secrets may match). It returns nil, or ErrNoSecret (no
	// secret), ErrMissingSignature (no header) or ErrBadSignature (no
	// match): all answered 401.
	Verify(header http.Header, body []byte, secrets []string) error
	// DeliveryID returns the delivery's id header (X-Gitlab-Event-UUID,
	// X-Gitea-Delivery), "" when absent (the body hash is used then).
	DeliveryID(header http.Header) string
	// Normalize turns a verified delivery into an event, an answer or a
	// reason to ignore it. An error is a malformed delivery (return
	// malformedf(...): 400); a body that is not JSON must be an error.
	Normalize(header http.Header, body []byte, opt SourceOptions) (SourceResult, error)
}

// SourceOptions is the configuration of the forge whose secret verified a
// delivery.
type SourceOptions struct {
	// Host is the forge's host[:port] (lower case).
	Host string
	// GitURL is the forge's clone base, "https://git.example.com/" (with
	// the trailing slash). Event.Repo must be GitURL + owner/name + ".git",
	// owner/name taken from the payload's path (GitLab
	// project.path_with_namespace, Gitea repository.full_name) and checked
	// with repoSegment; URLs in payloads are never used.
	GitURL string
	// Trigger starts a comment command ("@nightshift"; "/nightshift" too).
	Trigger string
	// Label on an issue starts work ("nightshift").
	Label string
	// BotLogin is Nightshift's own login on the forge; its comments never
	// trigger (the handler refuses them too).
	BotLogin string
}

// AuthKind is the authorization a trigger needs before it may start work.
type AuthKind int

// Authorization kinds.
const (
	// AuthNone: CI failures, merges and closes (the forge signed them).
	AuthNone AuthKind = iota
	// AuthComment: a comment; its author must not be a bot or Nightshift
	// and must have write access (forge.Driver.Permission).
	AuthComment
	// AuthLabel: a label or assignment; only Nightshift itself and denied
	// logins are refused (labelling already takes triage access).
	AuthLabel
)

// SourceResult is what a Source made of one verified delivery: exactly one
// of Event, Answer, or Ignore.
type SourceResult struct {
	// Event is the normalized trigger. Leave Source, ID, DeliveryID,
	// ReceivedAt and Raw empty: the handler sets them. IdempotencyKey must
	// come from the business object, prefixed with the kind
	// ("gitlab:note:123", "gitea:comment:45").
	Event *orchestrator.Event
	// Auth is the authorization Event needs.
	Auth AuthKind
	// AttemptKey, when set, counts CI-fix attempts of Event (the change
	// request or branch, e.g. "git.example.com/o/n#12"); past the cap the
	// trigger is refused.
	AttemptKey string
	// Answer is a new comment that starts no work (no trigger word): it
	// becomes the answer of a task waiting on its issue or change request,
	// if any, when its author may trigger.
	Answer *SourceComment
	// Ignore says why the delivery starts nothing.
	Ignore string

	// payload is the body as Normalize decoded it (nil: not decoded), for
	// the source's observe: an ignored delivery is not decoded twice.
	payload any
}

// SourceComment is a comment that may answer a waiting task's question.
type SourceComment struct {
	// Repo is the clone URL (as Event.Repo).
	Repo string
	// Target is the issue or change request commented on (Type "issue" or
	// "pull_request", Number).
	Target orchestrator.Target
	// ID and URL identify the comment.
	ID  int64
	URL string
	// Actor wrote it.
	Actor orchestrator.Actor
	// Body is the comment's text.
	Body string
	// RawEvent names the forge's event (X-Gitlab-Event, X-Gitea-Event).
	RawEvent string
}
