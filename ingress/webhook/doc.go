// Package webhook owns the webhook door of Nightshift: it turns signed HTTP
// deliveries from GitHub, Linear and Slack into normalized orchestrator
// events.
//
// Guarantees:
//   - Bodies are read up to a size limit and verified (HMAC, constant-time
//     compare, several secrets per source for rotation) before they are
//     parsed. A source with no secret configured refuses everything.
//   - 202 (or Slack's 200) is answered only after the Publisher reported the
//     JetStream PubAck; when the event could not be stored the answer is 503
//     and the delivery is not remembered, so the sender's redelivery works.
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
//
// Event.Repo for GitHub events is the repository's clone_url
// (https://github.com/owner/name.git), falling back to html_url + ".git";
// a clone URL is what the worker needs and the host/owner/name form used by
// repo globs is derivable from it (see config.RepoKey).
package webhook
