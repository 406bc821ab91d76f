// Package notify reports a task's life where people look: a Linear comment
// on the ticket the task came from, and one Slack message per task in the
// configured channel with Cancel and Retry buttons. It also owns the report
// state every reporter (the GitHub one included) shares.
//
// Guarantees:
//   - One remote message per task and channel, updated in place. What was
//     reported last (remote id, state, a digest of the text) is stored before
//     a reporter returns — in the replicated bucket NIGHTSHIFT_REPORTS that
//     every scheduler shares (NewKVStore; what the server uses), or in one
//     process's SQLite (NewStore, table report_state) — so a redelivered
//     change, a retried notification or a scheduler taking over from a dead
//     one never posts twice; a change whose text is unchanged is not sent
//     again; a report older than the last one sent is dropped.
//   - In the bucket, a report holds a revision-checked claim on its record
//     while it talks to the remote service; another scheduler waits the
//     claim out (or its expiry, when its holder died) and then decides again
//     on what was stored.
//   - A crash between posting and storing is recovered: a pending row is
//     written before the post, and the next report first looks the message up
//     remotely (comment marker, message metadata) before posting.
//   - Every outbound text passes the configured redactor.
package notify
