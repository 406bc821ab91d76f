// Package notify reports a task's life where people look: a Linear comment
// on the ticket the task came from, and one Slack message per task in the
// configured channel with Cancel and Retry buttons. It also owns the report
// state every reporter (the GitHub one included) shares.
//
// Guarantees:
//   - One remote message per task and channel, updated in place. What was
//     reported last (remote id, state, a digest of the text) is stored in
//     SQLite (table report_state) before a reporter returns, so a redelivered
//     change or a retried notification never posts twice; a change whose text
//     is unchanged is not sent again; a report older than the last one sent
//     is dropped.
//   - A crash between posting and storing is recovered: a pending row is
//     written before the post, and the next report first looks the message up
//     remotely (comment marker, message metadata) before posting.
//   - Every outbound text passes the configured redactor.
package notify
