// Package webhook owns the webhook door of Nightshift: it turns signed HTTP
// deliveries from GitHub, Linear and Slack into normalized orchestrator
// events.
//
// Guarantees:
//   - Bodies are read up to a size limit and verified (HMAC, constant-time
//     compare, several secrets per source for rotation) before they are
//     parsed. A source with no secret configured refuses everything.
//   - Unverified senders cannot hold memory: the body buffer grows as bytes
//     arrive (never sized from Content-Length), the whole body must arrive
//     within Config.BodyTimeout (else 408), and at most Config.MaxReading
//     bodies are read at once (past that, 503 with Retry-After at once).
//   - 202 (or Slack's 200) is answered only after the Publisher reported the
//     JetStream PubAck; when the event could not be stored the answer is 503
//     and the delivery is not remembered, so the sender's redelivery works.
//     A comment whose author's permission cannot be looked up (the GitHub
//     API failed) is answered 503 the same way, with a message that names
//     the permission check.
//   - Transport dedupe: a delivery id is remembered in a JetStream KV bucket
//     (TTL at least three days, shared by every ingress process) after it was
//     stored; the event is also published with Nats-Msg-Id = delivery id so
//     two concurrent copies collapse inside JetStream's duplicate window.
//   - Semantic dedupe: every event carries an IdempotencyKey derived from the
//     business object (comment id, check run id + conclusion, workflow run
//     id + attempt, ...), identical whichever hook delivered it.
//   - Authorization: comment triggers come only from trusted authors (author
//     association, or write permission checked through the GitHub API), never
//     from bots or Nightshift's own account; CI-failure triggers are capped
//     per pull request or branch.
//   - Events never name a repository on this machine. Event.Repo for GitHub
//     events is GitHubConfig.GitURL + repository.full_name + ".git"
//     (https://github.com/owner/name.git by default); the payload's
//     clone_url and html_url are never read. Slack commands name owner/name,
//     host/owner/name or an https URL on a configured forge host; Linear's
//     repositories come from the configuration. An event whose repository
//     is not a remote http(s) or ssh URL is ignored with a reason. The
//     host/owner/name form used by repo globs is derivable from the clone
//     URL (see config.RepoKey).
package webhook
