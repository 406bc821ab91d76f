package cluster

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nightshift/nightshift/orchestrator/github/githubtest"
)

// Forge is the test GitHub (githubtest: REST wire format, git over smart
// HTTP through git http-backend) with one repository, Codertocat/Hello-World
// (the shared webhook fixtures' repository), whose every accepted ref
// update is logged by a post-receive hook.
type Forge struct {
	*githubtest.Server
	Owner, Name string
	// WebhookSecret signs deliveries to /hooks/github.
	WebhookSecret string
	dir           string
	keyFile       string
	pushLog       string
}

const forgeAppID = 4242

// NewForge starts the fake GitHub; it is closed when the test ends.
func NewForge(t testing.TB, dir string) *Forge {
	t.Helper()
	f := &Forge{Server: githubtest.New(t, githubtest.Options{AppID: forgeAppID}), Owner: "Codertocat", Name: "Hello-World",
		WebhookSecret: "whsec-cluster", dir: dir}
	f.CreateRepo(f.Owner, f.Name, map[string]string{"README.md": "# Hello World\n"})
	f.keyFile = filepath.Join(dir, "app.pem")
	if err := os.WriteFile(f.keyFile, []byte(f.PrivateKeyPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	// Every ref update receive-pack accepted, in order: "old new ref".
	f.pushLog = filepath.Join(dir, "pushes.log")
	hook := "#!/bin/sh\nwhile read old new ref; do echo \"$old $new $ref\" >> " + shellQuote(f.pushLog) + "; done\n"
	if err := os.WriteFile(filepath.Join(f.BareDir(f.Owner, f.Name), "hooks", "post-receive"), []byte(hook), 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// CloneURL is the repository's clone URL (what API tasks name).
func (f *Forge) RepoURL() string { return f.CloneURL(f.Owner, f.Name) }

// ConfigOptions shape the nightshift.yaml every role of a cluster gets.
type ConfigOptions struct {
	// Agent is the path of the agent's shell script (agent "script").
	Agent string
	// Replicas is nats.replicas.
	Replicas int
	// Concurrency is worker.concurrency (0: default).
	Concurrency int
	// Extra YAML appended at the top level.
	Extra string
}

// Config is a nightshift.yaml pointing at the forge (GitHub App auth),
// with the process sandbox and a shell agent.
func (f *Forge) Config(o ConfigOptions) string {
	s := fmt.Sprintf(`sandbox: {driver: process}
identity: {smtp_listen: "127.0.0.1:0"}
public_url: https://nightshift.example.test
nats: {replicas: %d}
github:
  webhook_secrets: [%q]
  app_id: %d
  private_key: "${file:%s}"
  api_url: %q
agents:
  script: {command: ["sh", %q]}
default_agent: script
repos:
  - match: "*"
    test: "test -f WORK.md"
`, max(o.Replicas, 1), f.WebhookSecret, forgeAppID, f.keyFile, f.APIURL, o.Agent)
	if o.Concurrency > 0 {
		s += fmt.Sprintf("worker: {concurrency: %d}\n", o.Concurrency)
	}
	return s + o.Extra
}

// CommentPayload is the shared issue_comment.created fixture as GitHub
// would send it for a new comment (id commentID, by the repository owner)
// on issue number, pointed at the forge.
func (f *Forge) CommentPayload(t testing.TB, number int, commentID int64, body string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ModuleRoot(t), "ingress/webhook/testdata/fixtures/octokit-webhooks/issue_comment.created.json"))
	if err != nil {
		t.Fatal(err)
	}
	var p map[string]any
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	repo := p["repository"].(map[string]any)
	repo["clone_url"] = f.RepoURL()
	repo["html_url"] = f.URL + "/" + f.Owner + "/" + f.Name
	issue := p["issue"].(map[string]any)
	issue["number"] = number
	issue["title"] = fmt.Sprintf("Chaos issue %d", number)
	issue["html_url"] = fmt.Sprintf("%s/%s/%s/issues/%d", f.URL, f.Owner, f.Name, number)
	c := p["comment"].(map[string]any)
	c["id"] = commentID
	c["body"] = body
	c["html_url"] = fmt.Sprintf("%s#issuecomment-%d", issue["html_url"], commentID)
	out, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Push is one ref update the forge accepted.
type Push struct{ Old, New, Ref string }

// Pushes lists the accepted updates of ref (e.g. refs/heads/nightshift/x), in order.
func (f *Forge) Pushes(ref string) []Push {
	b, _ := os.ReadFile(f.pushLog)
	var out []Push
	for _, line := range strings.Split(string(b), "\n") {
		p := strings.Fields(line)
		if len(p) == 3 && p[2] == ref {
			out = append(out, Push{p[0], p[1], p[2]})
		}
	}
	return out
}

// GitTry runs git in the repository's bare directory.
func (f *Forge) GitTry(args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = f.BareDir(f.Owner, f.Name)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// IsAncestor reports whether commit a is an ancestor of (or equal to) b.
func (f *Forge) IsAncestor(a, b string) bool {
	_, err := f.GitTry("merge-base", "--is-ancestor", a, b)
	return err == nil
}

// BranchCommits lists the commits on branch that main lacks, newest first,
// as "sha subject|trailer" lines: each is "sha<TAB>Nightshift-Task value".
func (f *Forge) BranchCommits(branch string) ([][2]string, error) {
	out, err := f.GitTry("log", "--format=%H%x09%(trailers:key=Nightshift-Task,valueonly,separator=%x2C)", "main..refs/heads/"+branch)
	if err != nil {
		return nil, fmt.Errorf("git log main..%s: %v: %s", branch, err, out)
	}
	var cs [][2]string
	for _, line := range strings.Split(out, "\n") {
		if line == "" {
			continue
		}
		sha, trailer, _ := strings.Cut(line, "\t")
		cs = append(cs, [2]string{sha, strings.TrimSpace(trailer)})
	}
	return cs, nil
}

// PRsFor lists the forge's pull requests whose head is branch.
func (f *Forge) PRsFor(branch string) int {
	n := 0
	for _, pr := range f.PullRequests(f.Owner, f.Name) {
		if pr.GetHead().GetRef() == branch {
			n++
		}
	}
	return n
}

const zeroSHA = "0000000000000000000000000000000000000000"

// CheckBranch checks the task's branch as the suites require: it exists
// and its head is the recorded commit; it holds wantCommits Nightshift
// commits (trailer Nightshift-Task: id) over main (0: do not check the
// count); every accepted update of it moved it forward (created, or
// fast-forwarded), so no run ever moved it back or sideways, and the last
// update is the recorded commit. It returns what is wrong, or nil.
func (f *Forge) CheckBranch(tk Task, wantCommits int) []string {
	var bad []string
	if tk.Branch == "" || tk.Commit == "" {
		return []string{fmt.Sprintf("task %s: branch %q commit %q recorded", tk.ID, tk.Branch, tk.Commit)}
	}
	ref := "refs/heads/" + tk.Branch
	head := f.RevParse(f.Owner, f.Name, ref)
	if head != tk.Commit {
		bad = append(bad, fmt.Sprintf("task %s: %s is at %s, the task recorded %s", tk.ID, tk.Branch, head, tk.Commit))
	}
	cs, err := f.BranchCommits(tk.Branch)
	if err != nil {
		return append(bad, err.Error())
	}
	for _, c := range cs {
		if c[1] != tk.ID {
			bad = append(bad, fmt.Sprintf("task %s: commit %s on %s has Nightshift-Task %q", tk.ID, c[0][:12], tk.Branch, c[1]))
		}
	}
	if wantCommits > 0 && len(cs) != wantCommits {
		bad = append(bad, fmt.Sprintf("task %s: %d commits on %s over main, want %d (run %d)", tk.ID, len(cs), tk.Branch, wantCommits, tk.Run))
	}
	pushes := f.Pushes(ref)
	for i, p := range pushes {
		if p.New == zeroSHA {
			bad = append(bad, fmt.Sprintf("task %s: update %d deleted %s", tk.ID, i+1, tk.Branch))
			continue
		}
		if p.Old != zeroSHA && !f.IsAncestor(p.Old, p.New) {
			bad = append(bad, fmt.Sprintf("task %s: update %d moved %s from %s to %s, not a fast-forward (a stale run rewrote it)",
				tk.ID, i+1, tk.Branch, p.Old[:12], p.New[:12]))
		}
	}
	if len(pushes) == 0 {
		bad = append(bad, fmt.Sprintf("task %s: no push to %s was accepted", tk.ID, tk.Branch))
	} else if last := pushes[len(pushes)-1]; last.New != tk.Commit {
		bad = append(bad, fmt.Sprintf("task %s: the last update of %s is %s, the task recorded %s", tk.ID, tk.Branch, last.New, tk.Commit))
	}
	return bad
}
