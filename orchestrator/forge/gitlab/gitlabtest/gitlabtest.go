// Package gitlabtest runs a fake GitLab for tests: an httptest server that
// speaks the REST API v4 routes the gitlab driver uses (JSON shapes are the
// client library's types, marshalled; project ids are numbers or
// URL-escaped paths, as on GitLab) under /api/v4/, and serves real git
// repositories over smart HTTP (git http-backend through net/http/cgi) at
// /<namespace>/<name>.git.
//
// Authentication is enforced like GitLab does it: every API call needs a
// user's token in PRIVATE-TOKEN, git needs HTTP basic auth whose password
// is a token. Access follows the user's member access level on the
// project: Reporter (20) reads and fetches, Developer (30) opens merge
// requests and pushes, Guest (10) comments and awards emoji. A request its
// token was not good for is answered 401 or 403 and recorded in
// Violations, so a test can assert the driver stays within its rights.
//
// State lives in memory: projects, members, issues, merge requests, notes,
// award emoji, pipelines with jobs and traces, commit statuses. Tests read
// it back through the exported methods.
package gitlabtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go/v2"

	"github.com/nightshift/nightshift/orchestrator/forge/forgetest"
)

// Options configure a Server.
type Options struct {
	// BotUser is the username of Nightshift's token (a project access
	// token's bot user on GitLab). Default "nightshift-bot".
	BotUser string
	// BotToken is its token. Default "glpat-nightshift-test".
	BotToken string
}

// Server is a fake GitLab.
type Server struct {
	*httptest.Server
	// APIURL is the REST base (URL + "/api/v4/").
	APIURL string
	// GitURL is the clone base (URL + "/").
	GitURL string
	// BotUser and BotToken are Nightshift's account on this server.
	BotUser  string
	BotToken string

	root    string
	backend *cgi.Handler
	t       testing.TB

	mu         sync.Mutex
	nextID     int64
	users      map[string]*user // username (lower case) → user
	projects   map[string]*project
	byID       map[int64]*project
	violations []string
	requests   []string
	traces     map[int64]string // job id → trace
}

type user struct {
	ID       int64
	Username string
	Token    string
}

type project struct {
	ID            int64
	Path          string // namespace/name
	DefaultBranch string
	members       map[int64]int // user id → access level
	issues        map[int]*issue
	mrs           []*mr
	mrNotes       map[int][]*note
	pipelines     []*pipeline
	statuses      map[string][]*gl.CommitStatus
}

type issue struct {
	IID   int
	Title string
	Notes []*note
}

type note struct {
	ID     int64
	Body   string
	Author *user
	System bool
	Awards []*gl.AwardEmoji
}

type mr struct {
	IID             int
	Title, Body     string
	SourceBranch    string
	TargetBranch    string
	SourceProjectID int64
	State           string // opened, closed, merged
	Author          *user
	Created         time.Time
}

type pipeline struct {
	ID     int64
	Ref    string
	SHA    string
	Status string
	Jobs   []*gl.Job
}

// New starts a fake GitLab; it is closed when the test ends.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.BotUser == "" {
		opts.BotUser = "nightshift-bot"
	}
	if opts.BotToken == "" {
		opts.BotToken = "glpat-nightshift-test"
	}
	s := &Server{t: t, root: t.TempDir(), BotUser: opts.BotUser, BotToken: opts.BotToken, nextID: 100,
		users: map[string]*user{}, projects: map[string]*project{}, byID: map[int64]*project{}, traces: map[int64]string{}}
	s.addUser(opts.BotUser, opts.BotToken)
	s.backend = forgetest.GitBackend(t, s.root)
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	s.APIURL = s.URL + "/api/v4/"
	s.GitURL = s.URL + "/"
	t.Cleanup(s.Close)
	return s
}

func (s *Server) id() int64 {
	s.nextID++
	return s.nextID
}

// addUser creates a user (s.mu held or not needed yet).
func (s *Server) addUser(name, token string) *user {
	u := &user{ID: s.id(), Username: name, Token: token}
	s.users[strings.ToLower(name)] = u
	return u
}

// User creates (or returns) user name and returns its id and token.
func (s *Server) User(name string) (id int64, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[strings.ToLower(name)]
	if !ok {
		u = s.addUser(name, "glpat-"+strings.ToLower(name)+"-"+strconv.FormatInt(s.nextID, 10))
	}
	return u.ID, u.Token
}

func (s *Server) git(dir string, args ...string) string {
	s.t.Helper()
	return forgetest.Git(s.t, dir, args...)
}

func (s *Server) gitTry(dir string, args ...string) (string, error) {
	return forgetest.GitTry(dir, args...)
}

// BareDir is the path of a project's bare git directory.
func (s *Server) BareDir(path string) string {
	return filepath.Join(s.root, filepath.FromSlash(path)+".git")
}

// CloneURL is a project's https-style clone URL on this server.
func (s *Server) CloneURL(path string) string { return s.GitURL + path + ".git" }

// CreateProject creates project path (namespace/name, nested groups
// allowed) with one commit on main holding files. The bot user is a
// Developer of it.
func (s *Server) CreateProject(path string, files map[string]string) int64 {
	s.t.Helper()
	bare := s.BareDir(path)
	s.git("", "init", "-q", "--bare", "-b", "main", bare)
	s.git(bare, "config", "http.receivepack", "true")
	s.mu.Lock()
	p := &project{ID: s.id(), Path: path, DefaultBranch: "main", members: map[int64]int{}, issues: map[int]*issue{},
		mrNotes: map[int][]*note{}, statuses: map[string][]*gl.CommitStatus{}}
	p.members[s.users[strings.ToLower(s.BotUser)].ID] = int(gl.DeveloperPermissions)
	s.projects[path] = p
	s.byID[p.ID] = p
	s.mu.Unlock()
	s.Commit(path, "main", files, "init")
	return p.ID
}

// Commit adds a commit with files on branch (created from main when
// missing) and returns its SHA.
func (s *Server) Commit(path, branch string, files map[string]string, msg string) string {
	s.t.Helper()
	bare := s.BareDir(path)
	work := s.t.TempDir()
	s.git("", "init", "-q", "-b", branch, work)
	if out, err := s.gitTry(bare, "rev-parse", "--verify", "-q", "refs/heads/"+branch); err == nil && strings.TrimSpace(out) != "" {
		s.git(work, "fetch", "-q", bare, branch)
		s.git(work, "reset", "-q", "--hard", "FETCH_HEAD")
	} else if out, err := s.gitTry(bare, "rev-parse", "--verify", "-q", "refs/heads/main"); err == nil && strings.TrimSpace(out) != "" {
		s.git(work, "fetch", "-q", bare, "main")
		s.git(work, "reset", "-q", "--hard", "FETCH_HEAD")
	}
	for p, c := range files {
		full := filepath.Join(work, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			s.t.Fatal(err)
		}
	}
	s.git(work, "add", "-A")
	s.git(work, "commit", "-q", "--allow-empty", "-m", msg)
	s.git(work, "push", "-q", bare, "HEAD:refs/heads/"+branch)
	return strings.TrimSpace(s.git(work, "rev-parse", "HEAD"))
}

// Git runs git in a project's bare directory and returns its trimmed output.
func (s *Server) Git(path string, args ...string) string {
	s.t.Helper()
	return strings.TrimSpace(s.git(s.BareDir(path), args...))
}

// RevParse returns the SHA of ref in project path, or "" when it does not
// exist.
func (s *Server) RevParse(path, ref string) string {
	out, err := s.gitTry(s.BareDir(path), "rev-parse", "--verify", "-q", ref)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// SetMember gives user (created when missing) access level on project
// path; 0 removes the membership.
func (s *Server) SetMember(path, username string, level int) {
	uid, _ := s.User(username)
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.mustProject(path)
	if level == 0 {
		delete(p.members, uid)
		return
	}
	p.members[uid] = level
}

func (s *Server) mustProject(path string) *project {
	p, ok := s.projects[path]
	if !ok {
		s.t.Fatalf("gitlabtest: no project %s", path)
	}
	return p
}

// CreateIssue opens an issue in project path and returns its iid.
func (s *Server) CreateIssue(path, title string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.mustProject(path)
	iid := len(p.issues) + 1
	p.issues[iid] = &issue{IID: iid, Title: title}
	return iid
}

// AddNote adds a note by username (created when missing) to issue iid, or
// merge request iid when onMR, and returns its id.
func (s *Server) AddNote(path string, onMR bool, iid int, username, body string) int64 {
	s.User(username)
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.mustProject(path)
	n := &note{ID: s.id(), Body: body, Author: s.users[strings.ToLower(username)]}
	if onMR {
		p.mrNotes[iid] = append(p.mrNotes[iid], n)
	} else {
		is, ok := p.issues[iid]
		if !ok {
			s.t.Fatalf("gitlabtest: no issue #%d in %s", iid, path)
		}
		is.Notes = append(is.Notes, n)
	}
	return n.ID
}

// AddMergeRequest records an open merge request from source (a branch of
// the same project) into target, authored by username, and returns its iid.
func (s *Server) AddMergeRequest(path, source, target, title, username string) int {
	s.User(username)
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.mustProject(path)
	m := &mr{IID: len(p.mrs) + 1, Title: title, SourceBranch: source, TargetBranch: target, SourceProjectID: p.ID,
		State: "opened", Author: s.users[strings.ToLower(username)], Created: time.Now()}
	p.mrs = append(p.mrs, m)
	return m.IID
}

// SetMergeRequestState sets merge request iid's state (opened, closed, merged).
func (s *Server) SetMergeRequestState(path string, iid int, state string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.mustProject(path).mrs {
		if m.IID == iid {
			m.State = state
		}
	}
}

// FailPipeline records a failed pipeline on ref at sha whose job name
// failed with trace, and returns the pipeline and job ids.
func (s *Server) FailPipeline(path, ref, sha, job, trace string) (pipelineID, jobID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.mustProject(path)
	pl := &pipeline{ID: s.id(), Ref: ref, SHA: sha, Status: "failed"}
	j := &gl.Job{ID: s.id(), Name: job, Stage: "test", Status: "failed", FailureReason: "script_failure",
		Ref: ref, WebURL: fmt.Sprintf("%s/%s/-/jobs/%d", s.URL, path, pl.ID)}
	j.Pipeline.ID, j.Pipeline.Ref, j.Pipeline.Sha, j.Pipeline.Status = pl.ID, ref, sha, "failed"
	pl.Jobs = append(pl.Jobs, j)
	p.pipelines = append(p.pipelines, pl)
	s.traces[j.ID] = trace
	return pl.ID, j.ID
}

// SetStatus records a commit status (external CI) on sha.
func (s *Server) SetStatus(path, sha, name, status, description, target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.mustProject(path)
	p.statuses[sha] = append(p.statuses[sha], &gl.CommitStatus{ID: s.id(), SHA: sha, Name: name, Status: status,
		Description: description, TargetURL: target})
}

// MergeRequests returns project path's merge requests, in any state, as
// the API shows them.
func (s *Server) MergeRequests(path string) []gl.BasicMergeRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.mustProject(path)
	var out []gl.BasicMergeRequest
	for _, m := range p.mrs {
		out = append(out, *s.mrJSON(p, m))
	}
	return out
}

// Notes returns the notes of issue iid (or merge request iid when onMR),
// oldest first.
func (s *Server) Notes(path string, onMR bool, iid int) []gl.Note {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []gl.Note
	for _, n := range s.notesOf(s.mustProject(path), onMR, iid) {
		out = append(out, *noteJSON(n))
	}
	return out
}

// Awards returns the award emoji on a note as "name by username".
func (s *Server) Awards(path string, onMR bool, iid int, noteID int64) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, n := range s.notesOf(s.mustProject(path), onMR, iid) {
		if n.ID == noteID {
			for _, a := range n.Awards {
				out = append(out, a.Name+" by "+a.User.Username)
			}
		}
	}
	return out
}

// Violations returns the requests refused for lack of rights.
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.violations)
}

// Requests returns "METHOD /path" of every API request, in order.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

func (s *Server) notesOf(p *project, onMR bool, iid int) []*note {
	if onMR {
		return p.mrNotes[iid]
	}
	if is, ok := p.issues[iid]; ok {
		return is.Notes
	}
	return nil
}

func (s *Server) mrJSON(p *project, m *mr) *gl.BasicMergeRequest {
	sha := ""
	if src := s.byID[m.SourceProjectID]; src != nil {
		sha = s.RevParse(src.Path, "refs/heads/"+m.SourceBranch)
	}
	created := m.Created
	out := &gl.BasicMergeRequest{
		ID: int64(m.IID) + p.ID*1000, IID: int64(m.IID), ProjectID: p.ID, Title: m.Title, Description: m.Body,
		State: m.State, SourceBranch: m.SourceBranch, TargetBranch: m.TargetBranch,
		SourceProjectID: m.SourceProjectID, TargetProjectID: p.ID, SHA: sha, CreatedAt: &created,
		Draft:  strings.HasPrefix(strings.ToLower(m.Title), "draft:"),
		WebURL: fmt.Sprintf("%s/%s/-/merge_requests/%d", s.URL, p.Path, m.IID),
	}
	if m.Author != nil {
		out.Author = &gl.BasicUser{ID: m.Author.ID, Username: m.Author.Username}
	}
	return out
}

func noteJSON(n *note) *gl.Note {
	out := &gl.Note{ID: n.ID, Body: n.Body, System: n.System}
	out.Author.ID, out.Author.Username = n.Author.ID, n.Author.Username
	return out
}

// --- HTTP ---

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func message(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"message": msg})
}

func (s *Server) violate(w http.ResponseWriter, status int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.violations = append(s.violations, msg)
	message(w, status, fmt.Sprintf("%d %s", status, http.StatusText(status)))
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/api/v4/") {
		s.serveAPI(w, r)
		return
	}
	s.serveGit(w, r)
}

// serveGit serves /<namespace>/<name>.git/... with basic auth whose
// password is a token: Reporter fetches, Developer pushes.
func (s *Server) serveGit(w http.ResponseWriter, r *http.Request) {
	path, _, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), ".git/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	_, pass, ok := r.BasicAuth()
	if !ok {
		w.Header().Set("WWW-Authenticate", `Basic realm="GitLab"`)
		http.Error(w, "HTTP Basic: Access denied", http.StatusUnauthorized)
		return
	}
	push := r.URL.Query().Get("service") == "git-receive-pack" || strings.HasSuffix(r.URL.Path, "/git-receive-pack")
	need := int(gl.ReporterPermissions)
	if push {
		need = int(gl.DeveloperPermissions)
	}
	s.mu.Lock()
	u := s.byToken(pass)
	p := s.projects[path]
	switch {
	case u == nil:
		s.violations = append(s.violations, "git "+r.Method+" "+r.URL.Path+": bad token")
		s.mu.Unlock()
		w.Header().Set("WWW-Authenticate", `Basic realm="GitLab"`)
		http.Error(w, "HTTP Basic: Access denied", http.StatusUnauthorized)
		return
	case p == nil:
		s.mu.Unlock()
		http.NotFound(w, r)
		return
	case p.members[u.ID] < need:
		s.violations = append(s.violations, fmt.Sprintf("git %s %s: %s has level %d, needs %d", r.Method, r.URL.Path, u.Username, p.members[u.ID], need))
		s.mu.Unlock()
		http.Error(w, "You are not allowed to push code to this project.", http.StatusForbidden)
		return
	}
	s.mu.Unlock()
	s.backend.ServeHTTP(w, r)
}

func (s *Server) byToken(tok string) *user {
	if tok == "" {
		return nil
	}
	for _, u := range s.users {
		if u.Token == tok {
			return u
		}
	}
	return nil
}

// segments splits the escaped API path into unescaped segments, so a
// project path (group%2Fname) or a file path stays one segment.
func segments(r *http.Request) []string {
	raw := strings.Trim(strings.TrimPrefix(r.URL.EscapedPath(), "/api/v4/"), "/")
	parts := strings.Split(raw, "/")
	for i, p := range parts {
		if u, err := url.PathUnescape(p); err == nil {
			parts[i] = u
		}
	}
	return parts
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, r.Method+" "+r.URL.EscapedPath())
	u := s.byToken(r.Header.Get("PRIVATE-TOKEN"))
	if u == nil {
		s.violate(w, http.StatusUnauthorized, "%s %s: no or bad PRIVATE-TOKEN", r.Method, r.URL.Path)
		return
	}
	p := segments(r)
	m := r.Method
	switch {
	case m == "GET" && len(p) == 1 && p[0] == "user":
		writeJSON(w, http.StatusOK, &gl.User{ID: u.ID, Username: u.Username, Name: u.Username, State: "active"})
		return
	case m == "GET" && len(p) == 1 && p[0] == "users":
		name := strings.ToLower(r.URL.Query().Get("username"))
		out := []*gl.User{}
		if v, ok := s.users[name]; ok && name != "" {
			out = append(out, &gl.User{ID: v.ID, Username: v.Username, Name: v.Username, State: "active"})
		}
		writeJSON(w, http.StatusOK, out)
		return
	case len(p) >= 2 && p[0] == "projects":
	default:
		message(w, http.StatusNotFound, "404 Not Found")
		return
	}
	proj := s.projects[p[1]]
	if id, err := strconv.ParseInt(p[1], 10, 64); err == nil {
		proj = s.byID[id]
	}
	if proj == nil {
		message(w, http.StatusNotFound, "404 Project Not Found")
		return
	}
	level := proj.members[u.ID]
	need := func(min int) bool {
		if level < min {
			s.violate(w, http.StatusForbidden, "%s %s: %s has level %d on %s, needs %d", m, r.URL.Path, u.Username, level, proj.Path, min)
			return false
		}
		return true
	}
	rest := p[2:]
	reporter, developer, guest := int(gl.ReporterPermissions), int(gl.DeveloperPermissions), int(gl.GuestPermissions)
	switch {
	case m == "GET" && len(rest) == 0:
		if need(guest) {
			writeJSON(w, http.StatusOK, &gl.Project{ID: proj.ID, PathWithNamespace: proj.Path, DefaultBranch: proj.DefaultBranch,
				Path: proj.Path[strings.LastIndex(proj.Path, "/")+1:], WebURL: s.URL + "/" + proj.Path, HTTPURLToRepo: s.CloneURL(proj.Path)})
		}
	case m == "GET" && len(rest) == 3 && rest[0] == "members" && rest[1] == "all":
		uid, _ := strconv.ParseInt(rest[2], 10, 64)
		lvl, ok := proj.members[uid]
		if !need(guest) {
			return
		}
		var v *user
		for _, x := range s.users {
			if x.ID == uid {
				v = x
			}
		}
		if !ok || v == nil {
			message(w, http.StatusNotFound, "404 Not found")
			return
		}
		writeJSON(w, http.StatusOK, &gl.ProjectMember{ID: uid, Username: v.Username, State: "active", AccessLevel: gl.AccessLevelValue(lvl)})
	case m == "GET" && len(rest) == 4 && rest[0] == "repository" && rest[1] == "files" && rest[3] == "raw":
		if !need(reporter) {
			return
		}
		ref := r.URL.Query().Get("ref")
		if ref == "" {
			ref = proj.DefaultBranch
		}
		out, err := s.gitTry(s.BareDir(proj.Path), "show", ref+":"+rest[2])
		if err != nil {
			message(w, http.StatusNotFound, "404 File Not Found")
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, out)
	case len(rest) >= 1 && rest[0] == "merge_requests":
		s.mergeRequests(w, r, u, proj, rest[1:], need)
	case len(rest) >= 3 && rest[0] == "issues":
		iid, _ := strconv.Atoi(rest[1])
		is, ok := proj.issues[iid]
		if !ok {
			message(w, http.StatusNotFound, "404 Issue Not Found")
			return
		}
		if rest[2] == "notes" {
			s.notes(w, r, u, &is.Notes, rest[3:], need)
			return
		}
		message(w, http.StatusNotFound, "404 Not Found")
	case m == "GET" && len(rest) == 1 && rest[0] == "pipelines":
		if !need(reporter) {
			return
		}
		q := r.URL.Query()
		out := []*gl.PipelineInfo{}
		for i := len(proj.pipelines) - 1; i >= 0; i-- { // newest first (order_by=id, sort=desc)
			pl := proj.pipelines[i]
			if (q.Get("sha") != "" && pl.SHA != q.Get("sha")) || (q.Get("ref") != "" && pl.Ref != q.Get("ref")) {
				continue
			}
			out = append(out, &gl.PipelineInfo{ID: pl.ID, ProjectID: proj.ID, Status: pl.Status, Ref: pl.Ref, SHA: pl.SHA,
				WebURL: fmt.Sprintf("%s/%s/-/pipelines/%d", s.URL, proj.Path, pl.ID)})
		}
		if n, _ := strconv.Atoi(q.Get("per_page")); n > 0 && len(out) > n {
			out = out[:n]
		}
		writeJSON(w, http.StatusOK, out)
	case m == "GET" && len(rest) == 3 && rest[0] == "pipelines" && rest[2] == "jobs":
		if !need(reporter) {
			return
		}
		id, _ := strconv.ParseInt(rest[1], 10, 64)
		scope := r.URL.Query()["scope[]"]
		out := []*gl.Job{}
		for _, pl := range proj.pipelines {
			if pl.ID != id {
				continue
			}
			for _, j := range pl.Jobs {
				if len(scope) == 0 || slices.Contains(scope, j.Status) {
					out = append(out, j)
				}
			}
		}
		writeJSON(w, http.StatusOK, out)
	case m == "GET" && len(rest) == 3 && rest[0] == "jobs" && rest[2] == "trace":
		if !need(reporter) {
			return
		}
		id, _ := strconv.ParseInt(rest[1], 10, 64)
		tr, ok := s.traces[id]
		if !ok {
			message(w, http.StatusNotFound, "404 Not Found")
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, tr)
	case m == "GET" && len(rest) == 4 && rest[0] == "repository" && rest[1] == "commits" && rest[3] == "statuses":
		if !need(reporter) {
			return
		}
		out := []*gl.CommitStatus{}
		out = append(out, proj.statuses[rest[2]]...)
		for _, pl := range proj.pipelines { // jobs are statuses too, as on GitLab
			if pl.SHA != rest[2] {
				continue
			}
			for _, j := range pl.Jobs {
				out = append(out, &gl.CommitStatus{ID: j.ID, SHA: pl.SHA, Name: j.Name, Status: j.Status, TargetURL: j.WebURL})
			}
		}
		writeJSON(w, http.StatusOK, out)
	default:
		_ = developer
		message(w, http.StatusNotFound, "404 Not Found")
	}
}

// decode reads a JSON (or form) request body into v.
func decode(r *http.Request, v any) error {
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		return json.NewDecoder(r.Body).Decode(v)
	}
	return fmt.Errorf("want a JSON body, got %q", r.Header.Get("Content-Type"))
}

func (s *Server) mergeRequests(w http.ResponseWriter, r *http.Request, u *user, proj *project, rest []string, need func(int) bool) {
	m := r.Method
	reporter, developer, guest := int(gl.ReporterPermissions), int(gl.DeveloperPermissions), int(gl.GuestPermissions)
	switch {
	case m == "GET" && len(rest) == 0:
		if !need(reporter) {
			return
		}
		q := r.URL.Query()
		out := []*gl.BasicMergeRequest{}
		for i := len(proj.mrs) - 1; i >= 0; i-- { // newest first
			x := proj.mrs[i]
			if b := q.Get("source_branch"); b != "" && x.SourceBranch != b {
				continue
			}
			if st := q.Get("state"); st != "" && st != "all" && x.State != st {
				continue
			}
			out = append(out, s.mrJSON(proj, x))
		}
		writeJSON(w, http.StatusOK, out)
	case m == "POST" && len(rest) == 0:
		// Created in proj (the source project); target_project_id may
		// name the project it was forked from.
		if !need(developer) {
			return
		}
		var in struct {
			Title           string `json:"title"`
			Description     string `json:"description"`
			SourceBranch    string `json:"source_branch"`
			TargetBranch    string `json:"target_branch"`
			TargetProjectID int64  `json:"target_project_id"`
		}
		if err := decode(r, &in); err != nil {
			message(w, http.StatusBadRequest, err.Error())
			return
		}
		if in.Title == "" || in.SourceBranch == "" || in.TargetBranch == "" {
			message(w, http.StatusBadRequest, "400 Bad request - title, source_branch, target_branch are missing")
			return
		}
		target := proj
		if in.TargetProjectID != 0 && in.TargetProjectID != proj.ID {
			target = s.byID[in.TargetProjectID]
			if target == nil {
				message(w, http.StatusNotFound, "404 Project Not Found")
				return
			}
		}
		if s.RevParse(proj.Path, "refs/heads/"+in.SourceBranch) == "" {
			message(w, http.StatusBadRequest, "Source branch does not exist")
			return
		}
		for _, x := range target.mrs {
			if x.State == "opened" && x.SourceBranch == in.SourceBranch && x.SourceProjectID == proj.ID {
				message(w, http.StatusConflict, fmt.Sprintf("Another open merge request already exists for this source branch: !%d", x.IID))
				return
			}
		}
		x := &mr{IID: len(target.mrs) + 1, Title: in.Title, Body: in.Description, SourceBranch: in.SourceBranch,
			TargetBranch: in.TargetBranch, SourceProjectID: proj.ID, State: "opened", Author: u, Created: time.Now()}
		target.mrs = append(target.mrs, x)
		writeJSON(w, http.StatusCreated, &gl.MergeRequest{BasicMergeRequest: *s.mrJSON(target, x)})
	case len(rest) >= 1:
		iid, _ := strconv.Atoi(rest[0])
		var x *mr
		for _, c := range proj.mrs {
			if c.IID == iid {
				x = c
			}
		}
		if x == nil {
			message(w, http.StatusNotFound, "404 Not found")
			return
		}
		switch {
		case m == "GET" && len(rest) == 1:
			if need(reporter) {
				writeJSON(w, http.StatusOK, &gl.MergeRequest{BasicMergeRequest: *s.mrJSON(proj, x)})
			}
		case m == "PUT" && len(rest) == 1:
			if !need(developer) {
				return
			}
			var in struct {
				Title       *string `json:"title"`
				Description *string `json:"description"`
				StateEvent  string  `json:"state_event"`
			}
			if err := decode(r, &in); err != nil {
				message(w, http.StatusBadRequest, err.Error())
				return
			}
			if in.Title != nil {
				x.Title = *in.Title
			}
			if in.Description != nil {
				x.Body = *in.Description
			}
			switch in.StateEvent {
			case "reopen":
				if x.State == "closed" {
					x.State = "opened"
				}
			case "close":
				if x.State == "opened" {
					x.State = "closed"
				}
			}
			writeJSON(w, http.StatusOK, &gl.MergeRequest{BasicMergeRequest: *s.mrJSON(proj, x)})
		case len(rest) >= 2 && rest[1] == "notes":
			notes := proj.mrNotes[iid]
			s.notes(w, r, u, &notes, rest[2:], need)
			proj.mrNotes[iid] = notes
		default:
			_ = guest
			message(w, http.StatusNotFound, "404 Not Found")
		}
	default:
		message(w, http.StatusNotFound, "404 Not Found")
	}
}

// notes serves .../notes[/:id[/award_emoji]] of one issue or merge request.
func (s *Server) notes(w http.ResponseWriter, r *http.Request, u *user, notes *[]*note, rest []string, need func(int) bool) {
	m := r.Method
	reporter, guest := int(gl.ReporterPermissions), int(gl.GuestPermissions)
	switch {
	case m == "GET" && len(rest) == 0:
		if !need(reporter) {
			return
		}
		q := r.URL.Query()
		all := []*gl.Note{}
		for _, n := range *notes {
			all = append(all, noteJSON(n))
		}
		if q.Get("sort") == "desc" {
			slices.Reverse(all)
		}
		per, _ := strconv.Atoi(q.Get("per_page"))
		if per <= 0 {
			per = 20
		}
		page, _ := strconv.Atoi(q.Get("page"))
		if page <= 0 {
			page = 1
		}
		lo, hi := min((page-1)*per, len(all)), min(page*per, len(all))
		if hi < len(all) {
			w.Header().Set("X-Next-Page", strconv.Itoa(page+1))
		}
		w.Header().Set("X-Page", strconv.Itoa(page))
		writeJSON(w, http.StatusOK, all[lo:hi])
	case m == "POST" && len(rest) == 0:
		if !need(guest) {
			return
		}
		var in struct {
			Body string `json:"body"`
		}
		if err := decode(r, &in); err != nil || in.Body == "" {
			message(w, http.StatusBadRequest, "400 Bad request - body is missing")
			return
		}
		n := &note{ID: s.id(), Body: in.Body, Author: u}
		*notes = append(*notes, n)
		writeJSON(w, http.StatusCreated, noteJSON(n))
	case len(rest) >= 1:
		id, _ := strconv.ParseInt(rest[0], 10, 64)
		var n *note
		for _, c := range *notes {
			if c.ID == id {
				n = c
			}
		}
		if n == nil {
			message(w, http.StatusNotFound, "404 Not found")
			return
		}
		switch {
		case m == "PUT" && len(rest) == 1:
			if !need(guest) {
				return
			}
			if n.Author != u {
				s.violate(w, http.StatusForbidden, "PUT %s: %s edits a note of %s", r.URL.Path, u.Username, n.Author.Username)
				return
			}
			var in struct {
				Body string `json:"body"`
			}
			if err := decode(r, &in); err != nil || in.Body == "" {
				message(w, http.StatusBadRequest, "400 Bad request - body is missing")
				return
			}
			n.Body = in.Body
			writeJSON(w, http.StatusOK, noteJSON(n))
		case m == "GET" && len(rest) == 2 && rest[1] == "award_emoji":
			if need(reporter) {
				out := []*gl.AwardEmoji{}
				out = append(out, n.Awards...)
				writeJSON(w, http.StatusOK, out)
			}
		case m == "POST" && len(rest) == 2 && rest[1] == "award_emoji":
			if !need(guest) {
				return
			}
			var in struct {
				Name string `json:"name"`
			}
			if err := decode(r, &in); err != nil || in.Name == "" {
				message(w, http.StatusBadRequest, "400 Bad request - name is missing")
				return
			}
			for _, a := range n.Awards {
				if a.Name == in.Name && a.User.ID == u.ID {
					// GitLab answers a repeated award like this.
					message(w, http.StatusNotFound, "404 Award Emoji Name has already been taken Not Found")
					return
				}
			}
			now := time.Now()
			a := &gl.AwardEmoji{ID: s.id(), Name: in.Name, User: gl.BasicUser{ID: u.ID, Username: u.Username},
				CreatedAt: &now, AwardableID: n.ID, AwardableType: "Note"}
			n.Awards = append(n.Awards, a)
			writeJSON(w, http.StatusCreated, a)
		default:
			message(w, http.StatusNotFound, "404 Not Found")
		}
	default:
		message(w, http.StatusNotFound, "404 Not Found")
	}
}
