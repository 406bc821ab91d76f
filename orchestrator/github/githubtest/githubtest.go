// Package githubtest runs a fake GitHub for tests: an httptest server that
// speaks the REST API routes Nightshift uses (JSON shapes are go-github's
// types, marshalled) under /api/v3/, and serves real git repositories over
// smart HTTP (git http-backend through net/http/cgi) at /<owner>/<name>.git
// with basic auth.
//
// Authentication is enforced like GitHub does it: App JWTs (RS256, verified
// with the App's public key) may only look up installations and mint
// installation tokens; an installation token carries the repositories and
// permissions it was minted with and every route checks them. Requests a
// token was not good for are answered 403 and recorded in Violations, so a
// test can assert least privilege.
package githubtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
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

	"github.com/golang-jwt/jwt/v5"
	gh "github.com/google/go-github/v60/github"

	"github.com/nightshift/nightshift/orchestrator/forge/forgetest"
)

// Options configure a Server.
type Options struct {
	// AppID enables GitHub App authentication (a key pair is generated).
	AppID int64
	// Token is a static token with every permission on every repository
	// (a personal access token). Optional.
	Token string
	// BotLogin is the login comments and pull requests are created as.
	// Default "nightshift[bot]".
	BotLogin string
}

// MintedToken is an installation token the server issued.
type MintedToken struct {
	Token        string
	Repositories []string
	Permissions  map[string]string
	ExpiresAt    time.Time
}

// Server is a fake GitHub.
type Server struct {
	*httptest.Server
	// APIURL is the REST base (URL + "/api/v3/").
	APIURL string
	// GitURL is the clone base (URL + "/").
	GitURL string
	// PrivateKeyPEM is the App's private key (PKCS#1), when AppID is set.
	PrivateKeyPEM string
	AppID         int64

	opts    Options
	key     *rsa.PrivateKey
	root    string
	backend *cgi.Handler
	t       testing.TB

	mu         sync.Mutex
	tokens     map[string]*MintedToken
	minted     []MintedToken
	violations []string
	requests   []string
	pulls      map[string][]*gh.PullRequest // owner/name → pull requests
	comments   map[string][]*gh.IssueComment
	reactions  []string                  // "owner/name:comment id:content"
	perms      map[string]string         // "owner/name/login" (lower case) → permission
	checkRuns  map[string][]*gh.CheckRun // sha → runs
	statuses   map[string][]*gh.RepoStatus
	jobLogs    map[int64]string
	nextID     int64
	installs   map[string]int64
	// TokenTTL is how long minted tokens live. Default 1h.
	TokenTTL time.Duration
}

// New starts a fake GitHub; it is closed when the test ends.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.BotLogin == "" {
		opts.BotLogin = "nightshift[bot]"
	}
	s := &Server{opts: opts, t: t, root: t.TempDir(), AppID: opts.AppID,
		tokens: map[string]*MintedToken{}, pulls: map[string][]*gh.PullRequest{},
		comments: map[string][]*gh.IssueComment{}, checkRuns: map[string][]*gh.CheckRun{},
		statuses: map[string][]*gh.RepoStatus{}, jobLogs: map[int64]string{}, installs: map[string]int64{}, perms: map[string]string{},
		nextID: 1000, TokenTTL: time.Hour}
	if opts.AppID != 0 {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		s.key = key
		s.PrivateKeyPEM = string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	}
	s.backend = forgetest.GitBackend(t, s.root)
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	s.APIURL = s.URL + "/api/v3/"
	s.GitURL = s.URL + "/"
	t.Cleanup(s.Close)
	return s
}

func (s *Server) git(dir string, args ...string) string {
	s.t.Helper()
	return forgetest.Git(s.t, dir, args...)
}

func (s *Server) gitTry(dir string, args ...string) (string, error) {
	return forgetest.GitTry(dir, args...)
}

// BareDir is the path of a repository's bare git directory.
func (s *Server) BareDir(owner, name string) string {
	return filepath.Join(s.root, owner, name+".git")
}

// CloneURL is a repository's https-style clone URL on this server.
func (s *Server) CloneURL(owner, name string) string { return s.GitURL + owner + "/" + name + ".git" }

// CreateRepo creates owner/name with one commit on main holding files.
func (s *Server) CreateRepo(owner, name string, files map[string]string) string {
	s.t.Helper()
	bare := s.BareDir(owner, name)
	s.git("", "init", "-q", "--bare", "-b", "main", bare)
	s.git(bare, "config", "http.receivepack", "true")
	s.commitOn(owner, name, "main", "", files, "init")
	return s.CloneURL(owner, name)
}

// Commit adds a commit with files on branch (created from from, or main,
// when missing) and returns its SHA.
func (s *Server) Commit(owner, name, branch string, files map[string]string, msg string) string {
	s.t.Helper()
	return s.commitOn(owner, name, branch, "main", files, msg)
}

func (s *Server) commitOn(owner, name, branch, from string, files map[string]string, msg string) string {
	bare := s.BareDir(owner, name)
	work := s.t.TempDir()
	s.git("", "init", "-q", "-b", branch, work)
	if out, err := s.gitTry(bare, "rev-parse", "--verify", "-q", "refs/heads/"+branch); err == nil && strings.TrimSpace(out) != "" {
		s.git(work, "fetch", "-q", bare, branch)
		s.git(work, "reset", "-q", "--hard", "FETCH_HEAD")
	} else if from != "" {
		s.git(work, "fetch", "-q", bare, from)
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

// Git runs git in a repository's bare directory and returns its trimmed output.
func (s *Server) Git(owner, name string, args ...string) string {
	s.t.Helper()
	return strings.TrimSpace(s.git(s.BareDir(owner, name), args...))
}

// RevParse returns the SHA of ref in owner/name, or "" when it does not exist.
func (s *Server) RevParse(owner, name, ref string) string {
	out, err := s.gitTry(s.BareDir(owner, name), "rev-parse", "--verify", "-q", ref)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// AddPR records an open pull request from head (a branch of headRepo,
// "owner/name"; "" means the same repository) into base.
func (s *Server) AddPR(owner, name string, number int, headRepo, head, base string) *gh.PullRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := owner + "/" + name
	if headRepo == "" {
		headRepo = key
	}
	pr := &gh.PullRequest{Number: gh.Int(number), State: gh.String("open"), Title: gh.String("PR " + strconv.Itoa(number)),
		Body: gh.String(""), Draft: gh.Bool(false), User: &gh.User{Login: gh.String("octocat")},
		Head: &gh.PullRequestBranch{Ref: gh.String(head), Label: gh.String(strings.Split(headRepo, "/")[0] + ":" + head),
			Repo: s.repoJSON(headRepo)},
		Base: &gh.PullRequestBranch{Ref: gh.String(base), Repo: s.repoJSON(key)}}
	s.pulls[key] = append(s.pulls[key], pr)
	return pr
}

func (s *Server) repoJSON(full string) *gh.Repository {
	owner, name, _ := strings.Cut(full, "/")
	return &gh.Repository{FullName: gh.String(full), Name: gh.String(name), Owner: &gh.User{Login: gh.String(owner)},
		CloneURL: gh.String(s.CloneURL(owner, name)), HTMLURL: gh.String(s.URL + "/" + full), DefaultBranch: gh.String("main")}
}

// PullRequests returns the pull requests of owner/name (copies, current
// head SHAs filled in).
func (s *Server) PullRequests(owner, name string) []gh.PullRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []gh.PullRequest
	for _, pr := range s.pulls[owner+"/"+name] {
		out = append(out, *s.withSHA(pr))
	}
	return out
}

// Comments returns the comments on issue or pull request number.
func (s *Server) Comments(owner, name string, number int) []gh.IssueComment {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []gh.IssueComment
	for _, c := range s.comments[fmt.Sprintf("%s/%s#%d", owner, name, number)] {
		out = append(out, *c)
	}
	return out
}

// Reactions returns the reactions created, as "owner/name:comment-id:content".
func (s *Server) Reactions() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reactions)
}

// SetPermission gives login a permission on owner/name (admin, write, read
// or none), as GET .../collaborators/{login}/permission reports it.
func (s *Server) SetPermission(owner, name, login, perm string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.perms[strings.ToLower(owner+"/"+name+"/"+login)] = perm
}

// SetCheckRuns sets the check runs of a commit.
func (s *Server) SetCheckRuns(sha string, runs ...*gh.CheckRun) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checkRuns[sha] = runs
}

// SetStatuses sets the commit statuses of a commit (newest first).
func (s *Server) SetStatuses(sha string, sts ...*gh.RepoStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.statuses[sha] = sts
}

// SetJobLog sets the log of a GitHub Actions job.
func (s *Server) SetJobLog(id int64, log string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jobLogs[id] = log
}

// Minted returns the installation tokens issued so far.
func (s *Server) Minted() []MintedToken {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.minted)
}

// Violations lists requests refused for missing permissions or bad
// credentials.
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.violations)
}

// Requests lists "METHOD path" of every API request served.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Count returns how many requests matched method and a path substring.
func (s *Server) Count(method, pathPart string) int {
	n := 0
	for _, r := range s.Requests() {
		m, p, _ := strings.Cut(r, " ")
		if m == method && strings.Contains(p, pathPart) {
			n++
		}
	}
	return n
}

func (s *Server) violate(w http.ResponseWriter, status int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.violations = append(s.violations, msg)
	s.mu.Unlock()
	writeJSON(w, status, map[string]string{"message": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func notFound(w http.ResponseWriter) {
	writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasPrefix(r.URL.Path, "/api/v3/"):
		s.mu.Lock()
		s.requests = append(s.requests, r.Method+" "+r.URL.Path)
		s.mu.Unlock()
		s.serveAPI(w, r, strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/api/v3/"), "/"), "/"))
	case strings.HasPrefix(r.URL.Path, "/_logs/"):
		id, _ := strconv.ParseInt(strings.TrimPrefix(r.URL.Path, "/_logs/"), 10, 64)
		s.mu.Lock()
		log, ok := s.jobLogs[id]
		s.mu.Unlock()
		if !ok {
			notFound(w)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, log)
	default:
		s.serveGit(w, r)
	}
}

// serveGit serves /<owner>/<name>.git/... with basic auth: the password
// must be the static token or an installation token with contents:write
// (push) or contents:read (fetch) on the repository.
func (s *Server) serveGit(w http.ResponseWriter, r *http.Request) {
	parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 3)
	if len(parts) < 3 || !strings.HasSuffix(parts[1], ".git") {
		http.NotFound(w, r)
		return
	}
	repo := parts[0] + "/" + strings.TrimSuffix(parts[1], ".git")
	user, pass, ok := r.BasicAuth()
	if !ok || user != "x-access-token" {
		w.Header().Set("WWW-Authenticate", `Basic realm="GitHub"`)
		http.Error(w, "authentication required", http.StatusUnauthorized)
		return
	}
	push := r.URL.Query().Get("service") == "git-receive-pack" || strings.HasSuffix(r.URL.Path, "/git-receive-pack")
	need := "read"
	if push {
		need = "write"
	}
	if err := s.allowed(pass, repo, "contents", need); err != "" {
		s.mu.Lock()
		s.violations = append(s.violations, "git "+r.Method+" "+r.URL.Path+": "+err)
		s.mu.Unlock()
		if strings.HasPrefix(err, "bad credentials") {
			w.Header().Set("WWW-Authenticate", `Basic realm="GitHub"`)
			http.Error(w, err, http.StatusUnauthorized)
			return
		}
		http.Error(w, err, http.StatusForbidden)
		return
	}
	s.backend.ServeHTTP(w, r)
}

var levels = map[string]int{"": 0, "read": 1, "write": 2}

// allowed checks token against repo and permission perm at level need. It
// returns "" when allowed, else why not.
func (s *Server) allowed(token, repo, perm, need string) string {
	if s.opts.Token != "" && token == s.opts.Token {
		return ""
	}
	s.mu.Lock()
	mt, ok := s.tokens[token]
	s.mu.Unlock()
	switch {
	case !ok:
		return "bad credentials"
	case time.Now().After(mt.ExpiresAt):
		return "bad credentials: token expired"
	case len(mt.Repositories) > 0 && !slices.Contains(mt.Repositories, strings.Split(repo, "/")[1]):
		return fmt.Sprintf("token not valid for repository %s", repo)
	case levels[mt.Permissions[perm]] < levels[need]:
		return fmt.Sprintf("token lacks %s:%s on %s (has %v)", perm, need, repo, mt.Permissions)
	}
	return ""
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	for _, p := range []string{"Bearer ", "bearer ", "token "} {
		if strings.HasPrefix(h, p) {
			return strings.TrimPrefix(h, p)
		}
	}
	return ""
}

// appAuth verifies an App JWT.
func (s *Server) appAuth(w http.ResponseWriter, r *http.Request) bool {
	if s.key == nil {
		s.violate(w, http.StatusUnauthorized, "%s %s: this server has no app", r.Method, r.URL.Path)
		return false
	}
	tok, err := jwt.Parse(bearer(r), func(t *jwt.Token) (any, error) { return &s.key.PublicKey, nil },
		jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuedAt(), jwt.WithExpirationRequired())
	if err != nil {
		s.violate(w, http.StatusUnauthorized, "%s %s: bad app jwt: %v", r.Method, r.URL.Path, err)
		return false
	}
	iss, _ := tok.Claims.GetIssuer()
	exp, _ := tok.Claims.GetExpirationTime()
	if iss != strconv.FormatInt(s.AppID, 10) || exp.Sub(time.Now()) > 10*time.Minute {
		s.violate(w, http.StatusUnauthorized, "%s %s: app jwt issuer %q or expiry %s wrong", r.Method, r.URL.Path, iss, exp)
		return false
	}
	return true
}

// need checks the request's token for perm:level on repo, answering when not.
func (s *Server) need(w http.ResponseWriter, r *http.Request, repo, perm, level string) bool {
	if why := s.allowed(bearer(r), repo, perm, level); why != "" {
		status := http.StatusForbidden
		if strings.HasPrefix(why, "bad credentials") {
			status = http.StatusUnauthorized
		}
		s.violate(w, status, "%s %s: %s", r.Method, r.URL.Path, why)
		return false
	}
	return true
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request, p []string) {
	m := r.Method
	switch {
	case len(p) == 4 && p[0] == "app" && p[1] == "installations" && p[3] == "access_tokens" && m == "POST":
		if s.appAuth(w, r) {
			s.mintToken(w, r)
		}
		return
	case len(p) < 3 || p[0] != "repos":
		notFound(w)
		return
	}
	repo := p[1] + "/" + p[2]
	if _, err := os.Stat(s.BareDir(p[1], p[2])); err != nil {
		notFound(w)
		return
	}
	rest := p[3:]
	route := m + " " + strings.Join(rest, "/")
	switch {
	case route == "GET installation":
		if s.appAuth(w, r) {
			s.mu.Lock()
			id, ok := s.installs[repo]
			if !ok {
				id = int64(len(s.installs) + 1)
				s.installs[repo] = id
			}
			s.mu.Unlock()
			writeJSON(w, 200, &gh.Installation{ID: gh.Int64(id), AppID: gh.Int64(s.AppID)})
		}
	case route == "GET ":
		if s.need(w, r, repo, "metadata", "") {
			writeJSON(w, 200, s.repoJSON(repo))
		}
	case route == "GET pulls":
		if s.need(w, r, repo, "pull_requests", "read") {
			s.listPulls(w, r, repo)
		}
	case route == "POST pulls":
		if s.need(w, r, repo, "pull_requests", "write") {
			s.createPull(w, r, repo)
		}
	case len(rest) == 2 && rest[0] == "pulls" && (m == "GET" || m == "PATCH"):
		level := "read"
		if m == "PATCH" {
			level = "write"
		}
		if s.need(w, r, repo, "pull_requests", level) {
			s.onePull(w, r, repo, rest[1])
		}
	case len(rest) >= 2 && rest[0] == "contents" && m == "GET":
		if s.need(w, r, repo, "contents", "read") {
			s.contents(w, r, p[1], p[2], strings.Join(rest[1:], "/"))
		}
	case len(rest) == 3 && rest[0] == "issues" && rest[2] == "comments":
		n, _ := strconv.Atoi(rest[1])
		level := "read"
		if m == "POST" {
			level = "write"
		}
		if s.needIssues(w, r, repo, level) {
			s.issueComments(w, r, repo, n)
		}
	case len(rest) == 3 && rest[0] == "issues" && rest[1] == "comments" && m == "PATCH":
		id, _ := strconv.ParseInt(rest[2], 10, 64)
		if s.needIssues(w, r, repo, "write") {
			s.editComment(w, r, repo, id)
		}
	case len(rest) == 4 && rest[1] == "comments" && rest[3] == "reactions" && m == "POST":
		// GitHub answers a reaction the user already gave with 200 and
		// the existing reaction instead of adding another.
		perm := "issues"
		if rest[0] == "pulls" {
			perm = "pull_requests"
		}
		if (perm == "issues" && s.needIssues(w, r, repo, "write")) || (perm == "pull_requests" && s.need(w, r, repo, perm, "write")) {
			var body struct{ Content string }
			json.NewDecoder(r.Body).Decode(&body)
			key := repo + ":" + rest[2] + ":" + body.Content
			s.mu.Lock()
			existed := slices.Contains(s.reactions, key)
			if !existed {
				s.reactions = append(s.reactions, key)
			}
			s.mu.Unlock()
			status := 201
			if existed {
				status = 200
			}
			writeJSON(w, status, &gh.Reaction{ID: gh.Int64(1), Content: gh.String(body.Content)})
		}
	case len(rest) >= 3 && rest[0] == "commits" && rest[len(rest)-1] == "check-runs" && m == "GET":
		// A ref may be a branch with slashes (feature/x).
		if s.need(w, r, repo, "checks", "read") {
			s.mu.Lock()
			runs := s.checkRuns[s.resolve(p[1], p[2], strings.Join(rest[1:len(rest)-1], "/"))]
			s.mu.Unlock()
			writeJSON(w, 200, &gh.ListCheckRunsResults{Total: gh.Int(len(runs)), CheckRuns: runs})
		}
	case len(rest) >= 3 && rest[0] == "commits" && rest[len(rest)-1] == "statuses" && m == "GET":
		if s.need(w, r, repo, "statuses", "read") {
			s.mu.Lock()
			sts := s.statuses[s.resolve(p[1], p[2], strings.Join(rest[1:len(rest)-1], "/"))]
			s.mu.Unlock()
			if sts == nil {
				sts = []*gh.RepoStatus{}
			}
			writeJSON(w, 200, sts)
		}
	case len(rest) == 4 && rest[0] == "actions" && rest[1] == "jobs" && rest[3] == "logs" && m == "GET":
		if s.need(w, r, repo, "actions", "read") {
			id, _ := strconv.ParseInt(rest[2], 10, 64)
			s.mu.Lock()
			_, ok := s.jobLogs[id]
			s.mu.Unlock()
			if !ok {
				notFound(w)
				return
			}
			w.Header().Set("Location", s.URL+"/_logs/"+rest[2])
			w.WriteHeader(http.StatusFound)
		}
	case len(rest) == 3 && rest[0] == "collaborators" && rest[2] == "permission" && m == "GET":
		// GitHub answers this only to an authenticated caller.
		// A login given a permission with SetPermission has it; anyone
		// else reads (a public repository).
		if s.need(w, r, repo, "metadata", "read") {
			s.mu.Lock()
			perm, ok := s.perms[strings.ToLower(repo+"/"+rest[1])]
			s.mu.Unlock()
			if !ok {
				perm = "read"
				if owner, _, _ := strings.Cut(repo, "/"); strings.EqualFold(owner, rest[1]) {
					perm = "admin" // the owner of a user's repository
				}
			}
			writeJSON(w, 200, &gh.RepositoryPermissionLevel{Permission: gh.String(perm), User: &gh.User{Login: gh.String(rest[1])}})
		}
	default:
		notFound(w)
	}
}

// needIssues accepts issues or pull_requests permission (GitHub accepts
// either for comments on pull requests; issues is needed on issues).
func (s *Server) needIssues(w http.ResponseWriter, r *http.Request, repo, level string) bool {
	if s.allowed(bearer(r), repo, "pull_requests", level) == "" && s.allowed(bearer(r), repo, "issues", level) != "" {
		// A pull-request-only token is fine on pull requests; for simplicity
		// the fake treats every issue number as possibly a pull request.
		return true
	}
	return s.need(w, r, repo, "issues", level)
}

// resolve turns a ref into a SHA (SHAs pass through).
func (s *Server) resolve(owner, name, ref string) string {
	if len(ref) == 40 {
		return ref
	}
	if sha := s.RevParse(owner, name, ref); sha != "" {
		return sha
	}
	return ref
}

func (s *Server) mintToken(w http.ResponseWriter, r *http.Request) {
	var opts gh.InstallationTokenOptions
	if err := json.NewDecoder(r.Body).Decode(&opts); err != nil {
		writeJSON(w, 400, map[string]string{"message": "bad json"})
		return
	}
	perms := map[string]string{}
	if opts.Permissions != nil {
		b, _ := json.Marshal(opts.Permissions)
		json.Unmarshal(b, &perms)
	}
	if len(perms) == 0 {
		// GitHub would grant everything the installation has: refuse, so
		// tests catch unnarrowed tokens.
		s.violate(w, 422, "token requested without narrowed permissions")
		return
	}
	buf := make([]byte, 20)
	rand.Read(buf)
	mt := MintedToken{Token: "ghs_" + base64.RawURLEncoding.EncodeToString(buf), Repositories: opts.Repositories,
		Permissions: perms, ExpiresAt: time.Now().Add(s.TokenTTL).Truncate(time.Second)}
	s.mu.Lock()
	s.tokens[mt.Token] = &mt
	s.minted = append(s.minted, mt)
	s.mu.Unlock()
	var repos []*gh.Repository
	for _, n := range opts.Repositories {
		repos = append(repos, &gh.Repository{Name: gh.String(n)})
	}
	writeJSON(w, 201, &gh.InstallationToken{Token: gh.String(mt.Token), ExpiresAt: &gh.Timestamp{Time: mt.ExpiresAt},
		Permissions: opts.Permissions, Repositories: repos})
}

// withSHA returns a copy of pr with head/base SHAs and URLs filled in.
func (s *Server) withSHA(pr *gh.PullRequest) *gh.PullRequest {
	c := *pr
	head, base := *pr.Head, *pr.Base
	ho, hn, _ := strings.Cut(head.GetRepo().GetFullName(), "/")
	bo, bn, _ := strings.Cut(base.GetRepo().GetFullName(), "/")
	if sha := s.RevParse(ho, hn, "refs/heads/"+head.GetRef()); sha != "" {
		head.SHA = gh.String(sha)
	}
	if sha := s.RevParse(bo, bn, "refs/heads/"+base.GetRef()); sha != "" {
		base.SHA = gh.String(sha)
	}
	c.Head, c.Base = &head, &base
	c.HTMLURL = gh.String(fmt.Sprintf("%s/%s/%s/pull/%d", s.URL, bo, bn, pr.GetNumber()))
	c.URL = gh.String(fmt.Sprintf("%srepos/%s/%s/pulls/%d", s.APIURL, bo, bn, pr.GetNumber()))
	return &c
}

func (s *Server) listPulls(w http.ResponseWriter, r *http.Request, repo string) {
	q := r.URL.Query()
	state := q.Get("state")
	if state == "" {
		state = "open"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []*gh.PullRequest{}
	for _, pr := range s.pulls[repo] {
		if state != "all" && pr.GetState() != state {
			continue
		}
		if h := q.Get("head"); h != "" && h != pr.GetHead().GetLabel() {
			continue
		}
		if b := q.Get("base"); b != "" && b != pr.GetBase().GetRef() {
			continue
		}
		out = append(out, s.withSHA(pr))
	}
	writeJSON(w, 200, out)
}

func (s *Server) createPull(w http.ResponseWriter, r *http.Request, repo string) {
	var np gh.NewPullRequest
	if err := json.NewDecoder(r.Body).Decode(&np); err != nil || np.GetHead() == "" || np.GetBase() == "" || np.GetTitle() == "" {
		writeJSON(w, 422, map[string]string{"message": "Validation Failed"})
		return
	}
	headRepo, headRef, ok := strings.Cut(np.GetHead(), ":")
	if !ok {
		headRepo, headRef = strings.Split(repo, "/")[0], np.GetHead()
	}
	// The head branch lives in headRepo's owner's repository of the same
	// name (the same fork network).
	hname := strings.Split(repo, "/")[1]
	if s.RevParse(headRepo, hname, "refs/heads/"+headRef) == "" {
		writeJSON(w, 422, map[string]any{"message": "Validation Failed", "errors": []map[string]string{{"resource": "PullRequest", "field": "head", "code": "invalid"}}})
		return
	}
	s.mu.Lock()
	for _, pr := range s.pulls[repo] {
		if pr.GetState() == "open" && pr.GetHead().GetLabel() == headRepo+":"+headRef && pr.GetBase().GetRef() == np.GetBase() {
			s.mu.Unlock()
			writeJSON(w, 422, map[string]any{"message": "Validation Failed", "errors": []map[string]string{{"resource": "PullRequest", "code": "custom", "message": "A pull request already exists for " + np.GetHead() + "."}}})
			return
		}
	}
	n := 1
	for _, pr := range s.pulls[repo] {
		n = max(n, pr.GetNumber()+1)
	}
	pr := &gh.PullRequest{Number: gh.Int(n), State: gh.String("open"), Title: np.Title, Body: gh.String(np.GetBody()),
		Draft: gh.Bool(np.GetDraft()), User: &gh.User{Login: gh.String(s.opts.BotLogin)},
		Head: &gh.PullRequestBranch{Ref: gh.String(headRef), Label: gh.String(headRepo + ":" + headRef), Repo: s.repoJSON(headRepo + "/" + hname)},
		Base: &gh.PullRequestBranch{Ref: np.Base, Repo: s.repoJSON(repo)}}
	s.pulls[repo] = append(s.pulls[repo], pr)
	out := s.withSHA(pr)
	s.mu.Unlock()
	writeJSON(w, 201, out)
}

func (s *Server) onePull(w http.ResponseWriter, r *http.Request, repo, num string) {
	n, _ := strconv.Atoi(num)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, pr := range s.pulls[repo] {
		if pr.GetNumber() != n {
			continue
		}
		if r.Method == "PATCH" {
			var edit gh.PullRequest
			json.NewDecoder(r.Body).Decode(&edit)
			if edit.Title != nil {
				pr.Title = edit.Title
			}
			if edit.Body != nil {
				pr.Body = edit.Body
			}
			if edit.State != nil {
				pr.State = edit.State
			}
		}
		writeJSON(w, 200, s.withSHA(pr))
		return
	}
	notFound(w)
}

// ClosePR closes pull request number without merging it.
func (s *Server) ClosePR(owner, name string, number int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, pr := range s.pulls[owner+"/"+name] {
		if pr.GetNumber() == number {
			pr.State = gh.String("closed")
		}
	}
}

func (s *Server) contents(w http.ResponseWriter, r *http.Request, owner, name, path string) {
	ref := r.URL.Query().Get("ref")
	if ref == "" {
		ref = "HEAD"
	}
	data, err := s.gitTry(s.BareDir(owner, name), "cat-file", "blob", ref+":"+path)
	if err != nil {
		notFound(w)
		return
	}
	writeJSON(w, 200, &gh.RepositoryContent{Type: gh.String("file"), Encoding: gh.String("base64"), Name: gh.String(filepath.Base(path)),
		Path: gh.String(path), Size: gh.Int(len(data)), Content: gh.String(base64.StdEncoding.EncodeToString([]byte(data)))})
}

func (s *Server) issueComments(w http.ResponseWriter, r *http.Request, repo string, n int) {
	key := fmt.Sprintf("%s#%d", repo, n)
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Method == "POST" {
		var c gh.IssueComment
		if err := json.NewDecoder(r.Body).Decode(&c); err != nil || c.GetBody() == "" {
			writeJSON(w, 422, map[string]string{"message": "Validation Failed"})
			return
		}
		s.nextID++
		now := gh.Timestamp{Time: time.Now()}
		nc := &gh.IssueComment{ID: gh.Int64(s.nextID), Body: c.Body, User: &gh.User{Login: gh.String(s.opts.BotLogin), Type: gh.String("Bot")},
			HTMLURL:   gh.String(fmt.Sprintf("%s/%s/issues/%d#issuecomment-%d", s.URL, repo, n, s.nextID)),
			CreatedAt: &now, UpdatedAt: &now}
		s.comments[key] = append(s.comments[key], nc)
		writeJSON(w, 201, nc)
		return
	}
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	per, _ := strconv.Atoi(r.URL.Query().Get("per_page"))
	if per <= 0 {
		per = 30
	}
	if page <= 0 {
		page = 1
	}
	all := s.comments[key]
	out := []*gh.IssueComment{}
	if lo := (page - 1) * per; lo < len(all) {
		out = all[lo:min(len(all), lo+per)]
	}
	if page*per < len(all) {
		u := *r.URL
		q := u.Query()
		q.Set("page", strconv.Itoa(page+1))
		u.RawQuery = q.Encode()
		w.Header().Set("Link", fmt.Sprintf(`<%s%s>; rel="next"`, s.URL, (&url.URL{Path: u.Path, RawQuery: u.RawQuery}).String()))
	}
	writeJSON(w, 200, out)
}

func (s *Server) editComment(w http.ResponseWriter, r *http.Request, repo string, id int64) {
	var c gh.IssueComment
	json.NewDecoder(r.Body).Decode(&c)
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, list := range s.comments {
		if !strings.HasPrefix(k, repo+"#") {
			continue
		}
		for _, cm := range list {
			if cm.GetID() == id {
				cm.Body = c.Body
				now := gh.Timestamp{Time: time.Now()}
				cm.UpdatedAt = &now
				writeJSON(w, 200, cm)
				return
			}
		}
	}
	notFound(w)
}

// AddComment records a comment by someone else (e.g. the trigger).
func (s *Server) AddComment(owner, name string, number int, login, body string) *gh.IssueComment {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	c := &gh.IssueComment{ID: gh.Int64(s.nextID), Body: gh.String(body), User: &gh.User{Login: gh.String(login)}}
	key := fmt.Sprintf("%s/%s#%d", owner, name, number)
	s.comments[key] = append(s.comments[key], c)
	return c
}
