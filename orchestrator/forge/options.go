package forge

import (
	"log/slog"
	"regexp"
	"strings"
)

// Options configure a Publisher and a Reporter. The zero value of a field
// means the default written next to it.
type Options struct {
	// PublicURL is how people reach Nightshift; task links are
	// PublicURL + "/tasks/" + id. Optional.
	PublicURL string
	// Draft reports whether change requests on repo (a clone URL) are
	// opened as drafts. Default: always true.
	Draft func(repo string) bool
	// LogExcerpt bounds the CI context put in a CI-fix prompt, in bytes.
	// Default 8 KiB.
	LogExcerpt int
	// Redact cleans every text sent to a forge. Default: identity.
	Redact func(string) string
	// Logger receives warnings. Default: discard.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	o.PublicURL = strings.TrimSuffix(o.PublicURL, "/")
	if o.Draft == nil {
		o.Draft = func(string) bool { return true }
	}
	if o.LogExcerpt <= 0 {
		o.LogExcerpt = 8 << 10
	}
	if o.Redact == nil {
		o.Redact = func(s string) string { return s }
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// taskURL returns the link to a task on the board ("" without PublicURL).
func (o Options) taskURL(id string) string {
	if o.PublicURL == "" {
		return ""
	}
	return o.PublicURL + "/tasks/" + id
}

// changeNoun is what the forge calls a change request.
func changeNoun(k Kind) string {
	if k == KindGitLab {
		return "Merge request"
	}
	return "Pull request"
}

var shaRe = regexp.MustCompile(`^[0-9a-f]{40}$`)

// firstBranch returns the first candidate that names a branch (not a SHA or
// a full ref).
func firstBranch(cands ...string) string {
	for _, b := range cands {
		if b != "" && !shaRe.MatchString(b) && !strings.HasPrefix(b, "refs/") {
			return b
		}
	}
	return ""
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
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

// Tail returns the last n bytes of s, starting at a line boundary, with a
// "[…]" line in front when something was cut. Drivers use it for
// CIFailure.Log.
func Tail(s string, n int) string {
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
