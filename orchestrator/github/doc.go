// Package github is the GitHub forge.Driver: it authenticates as a GitHub
// App (or with a plain token) and answers the port's calls (pull requests,
// reactions, comments, CI failures, collaborator permission, push
// credentials) on one GitHub host. What Nightshift does with them (where a
// run's branch goes, find-before-create, the progress comment) is
// forge.Publisher's and forge.Reporter's; Client.Plan/Open and Reporter
// are those over this one host. It passes forgetest on githubtest, a fake
// GitHub speaking the REST wire format.
//
// Guarantees:
//   - Least privilege: with an App, every step mints an installation token
//     narrowed to the one repository and the permissions that step needs
//     (contents:write to fetch and push, pull_requests:write to open pull
//     requests, issues:write to comment, read scopes to look things up).
//     Tokens are cached until five minutes before they expire; the token
//     handed to a run for its push has at least PushTokenTTL left. Only the
//     orchestrator pushes: the token never enters the sandbox.
//   - Exactly once: a retried or redelivered run finds its pull request by
//     head branch before creating one; the progress comment of a task is
//     found again through its hidden marker (<!-- nightshift:task:<id> -->)
//     and the report state stored in SQLite, so redeliveries update it in
//     place instead of posting again.
//   - Everything Nightshift writes to GitHub passes the configured redactor.
//
// Repositories are recognized by their clone URL. The clone host is derived
// from the API URL: https://api.github.com/ serves github.com, and a GitHub
// Enterprise API at https://ghe.example.com/api/v3/ serves
// https://ghe.example.com/. Config.GitURL overrides it. Repositories on other
// hosts (local paths, other forges) are left alone: Plan returns the default
// plan and Open opens nothing.
package github
