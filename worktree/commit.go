package worktree

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// Signature is a git identity.
type Signature struct {
	Name  string `json:"name"`
	Email string `json:"email"`
}

func (s Signature) validate(field string) error {
	if strings.TrimSpace(s.Name) == "" || strings.TrimSpace(s.Email) == "" {
		return fmt.Errorf("worktree: commit: %s needs a name and an email", field)
	}
	if strings.ContainsAny(s.Name+s.Email, "<>\n\x00") {
		return fmt.Errorf("worktree: commit: %s contains <, >, a newline or NUL", field)
	}
	return nil
}

// String formats the signature as "Name <email>".
func (s Signature) String() string { return s.Name + " <" + s.Email + ">" }

// Trailer is one "Key: Value" line at the end of a commit message.
type Trailer struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// CommitRequest says how to commit what the agent left.
type CommitRequest struct {
	// Author is the task identity; it is also the committer unless
	// Committer is set. Required.
	Author Signature
	// Committer overrides the committer; zero means Author.
	Committer Signature
	// Message is the commit message; "" means "nightshift: task <id>".
	Message string
	// Trailers are appended to the message. A Nightshift-Task trailer with
	// the task ID is always added.
	Trailers []Trailer
	// CoAuthors become Co-authored-by trailers (the requesting human).
	CoAuthors []Signature
	// AllowProtected lets the task change protected paths.
	AllowProtected bool
	// Protected overrides Config.Protected for this commit (a repository's
	// own list); nil means Config.Protected.
	Protected []string
	// KeepAgentCommits leaves the agent's own commits as they are. By
	// default, commits the agent made that were not pushed yet and lack
	// the Nightshift-Task trailer are rewritten to carry it (same trees,
	// authors and dates; new SHAs).
	KeepAgentCommits bool
	// When is the commit time; zero means the Manager's clock.
	When time.Time
}

// Commit is the outcome of Manager.Commit.
type Commit struct {
	// SHA is the task branch's head after the call.
	SHA string `json:"sha"`
	// Created is true when this call wrote a commit (the agent left
	// uncommitted changes).
	Created bool `json:"created"`
	// Changed is false when the task branch equals its base: nothing to
	// commit and the agent made no commits.
	Changed bool `json:"changed"`
	// Files are the paths that differ between the base and SHA, sorted.
	Files []string `json:"files"`
	// Rewritten counts agent commits rewritten to carry the task trailer.
	Rewritten int `json:"rewritten,omitempty"`
}

// Commit commits the changes the agent left uncommitted (if any) on the
// task branch, authored by req.Author with trailers, and checks every
// commit between the base and the new head for protected paths. On a
// protected-path violation it returns *ProtectedPathError and changes no
// ref. It is also how checkpoint commits are made during long runs.
func (m *Manager) Commit(ctx context.Context, wt *Worktree, req CommitRequest) (Commit, error) {
	if err := req.Author.validate("Author"); err != nil {
		return Commit{}, err
	}
	if req.Committer == (Signature{}) {
		req.Committer = req.Author
	} else if err := req.Committer.validate("Committer"); err != nil {
		return Commit{}, err
	}
	wt, err := m.loadMeta(wt)
	if err != nil {
		return Commit{}, err
	}
	l := m.taskLock(wt.TaskID)
	l.Lock()
	defer l.Unlock()
	unlock := m.useMirror(&mirror{dir: wt.mirrorDir})
	defer unlock()
	st, err := openTaskStore(wt)
	if err != nil {
		return Commit{}, err
	}
	defer st.Close()

	hb, _ := os.ReadFile(filepath.Join(wt.gitDir(), "HEAD"))
	onBranch := strings.TrimSpace(string(hb)) == "ref: refs/heads/"+wt.Branch
	head, err := taskHead(st, wt)
	if err != nil {
		return Commit{}, err
	}
	headCommit, err := object.GetCommit(st, head)
	if err != nil {
		return Commit{}, fmt.Errorf("worktree: read HEAD commit: %w", err)
	}
	snap, err := stage(ctx, st, wt.Dir, m.cfg.MaxFileSize)
	if err != nil {
		return Commit{}, fmt.Errorf("worktree: stage: %w", err)
	}
	base := plumbing.NewHash(wt.BaseCommit)
	baseCommit, err := object.GetCommit(st, base)
	if err != nil {
		return Commit{}, fmt.Errorf("worktree: read base commit: %w", err)
	}
	protected := m.cfg.Protected
	if req.Protected != nil {
		protected = req.Protected
	}
	if !req.AllowProtected && len(protected) > 0 {
		if err := m.checkProtected(st, protected, base, baseCommit.TreeHash, head, snap.tree); err != nil {
			return Commit{}, err
		}
	}
	res := Commit{SHA: head.String()}
	taskTrailer := Trailer{"Nightshift-Task", wt.TaskID}
	if !req.KeepAgentCommits && head != base {
		haves := []plumbing.Hash{base}
		if meta, err := readMeta(m.taskRoot(wt.TaskID)); err == nil && meta.PushedCommit != "" {
			haves = append(haves, plumbing.NewHash(meta.PushedCommit))
		}
		nh, n, err := stampCommits(st, head, haves, taskTrailer)
		if err != nil {
			return Commit{}, fmt.Errorf("worktree: add trailers to agent commits: %w", err)
		}
		head, res.SHA, res.Rewritten = nh, nh.String(), n
	}
	if snap.tree != headCommit.TreeHash {
		when := req.When
		if when.IsZero() {
			when = m.cfg.Now()
		}
		msg := req.Message
		if strings.TrimSpace(msg) == "" {
			msg = "nightshift: task " + wt.TaskID
		}
		trailers := append([]Trailer(nil), req.Trailers...)
		for _, co := range req.CoAuthors {
			if co.validate("CoAuthors") == nil {
				trailers = append(trailers, Trailer{"Co-authored-by", co.String()})
			}
		}
		trailers = append(trailers, taskTrailer)
		c := &object.Commit{
			Author:       object.Signature{Name: req.Author.Name, Email: req.Author.Email, When: when},
			Committer:    object.Signature{Name: req.Committer.Name, Email: req.Committer.Email, When: when},
			Message:      withTrailers(msg, trailers),
			TreeHash:     snap.tree,
			ParentHashes: []plumbing.Hash{head},
		}
		o := st.NewEncodedObject()
		if err := c.Encode(o); err != nil {
			return Commit{}, fmt.Errorf("worktree: encode commit: %w", err)
		}
		h, err := st.SetEncodedObject(o)
		if err != nil {
			return Commit{}, fmt.Errorf("worktree: store commit: %w", err)
		}
		res.SHA, res.Created = h.String(), true
		head = h
	}
	// The index first (it only caches stat data and now matches the new
	// head), then the branch, then HEAD, each with git's lock files so a
	// checkpoint during a run does not clobber the agent's own git.
	if err := writeIndex(filepath.Join(wt.gitDir(), "index"), snap.entries); err != nil {
		return Commit{}, fmt.Errorf("worktree: write index: %w", err)
	}
	branch := plumbing.NewBranchReferenceName(wt.Branch)
	oldBranch, err := readRef(wt.gitDir(), branch)
	if err != nil {
		return Commit{}, fmt.Errorf("worktree: read %s: %w", branch, err)
	}
	if oldBranch != head {
		// The task branch moves to the new head. When HEAD was on it, it
		// must not have moved meanwhile (the agent committing during a
		// checkpoint); when the agent had switched branches or detached,
		// the task branch is set to what HEAD pointed at.
		expect := oldBranch
		if onBranch {
			expect = headCommit.Hash
		}
		if err := updateRef(wt.gitDir(), branch, head, expect); err != nil {
			return Commit{}, err
		}
	}
	if err := setHeadSymbolic(wt.gitDir(), branch); err != nil {
		return Commit{}, fmt.Errorf("worktree: update HEAD: %w", err)
	}
	res.Files, err = changedPaths(st, baseCommit.TreeHash, snap.tree)
	if err != nil {
		return Commit{}, fmt.Errorf("worktree: list changes: %w", err)
	}
	res.Changed = head != base
	m.touch(wt.TaskID)
	m.log.LogAttrs(ctx, slog.LevelInfo, "worktree committed", slog.String("task_id", wt.TaskID),
		slog.String("sha", res.SHA), slog.Bool("created", res.Created), slog.Int("files", len(res.Files)))
	return res, nil
}

// taskHead resolves HEAD of the task clone (the task branch, another
// branch the agent switched to, or a detached commit).
func taskHead(st storer.ReferenceStorer, wt *Worktree) (plumbing.Hash, error) {
	r, err := storer.ResolveReference(st, plumbing.HEAD)
	if err != nil {
		r, err = st.Reference(plumbing.NewBranchReferenceName(wt.Branch))
	}
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("worktree: resolve HEAD: %w", err)
	}
	return r.Hash(), nil
}

// checkProtected fails when any commit between base and head, or the
// uncommitted snapshot, touches a protected path.
func (m *Manager) checkProtected(st storer.EncodedObjectStorer, protected []string, base, baseTree, head, snapTree plumbing.Hash) error {
	hits := map[string]bool{}
	check := func(c change) error {
		for _, p := range protected {
			if matchGlob(p, c.path) {
				hits[c.path] = true
			}
		}
		return nil
	}
	if err := diffTrees(st, baseTree, snapTree, "", check, nil); err != nil {
		return fmt.Errorf("worktree: check protected paths: %w", err)
	}
	if head != base {
		commits, err := newCommits(st, head, []plumbing.Hash{base})
		if err != nil {
			return fmt.Errorf("worktree: list task commits: %w", err)
		}
		for _, c := range commits {
			for _, ph := range c.ParentHashes {
				p, err := object.GetCommit(st, ph)
				if err != nil {
					return fmt.Errorf("worktree: read commit %s: %w", ph, err)
				}
				if err := diffTrees(st, p.TreeHash, c.TreeHash, "", check, nil); err != nil {
					return fmt.Errorf("worktree: check protected paths: %w", err)
				}
			}
			if len(c.ParentHashes) == 0 {
				if err := diffTrees(st, plumbing.ZeroHash, c.TreeHash, "", check, nil); err != nil {
					return fmt.Errorf("worktree: check protected paths: %w", err)
				}
			}
		}
	}
	if len(hits) == 0 {
		return nil
	}
	paths := make([]string, 0, len(hits))
	for p := range hits {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	return &ProtectedPathError{Paths: paths}
}

var trailerLine = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]*: `)

// withTrailers appends trailers to msg, joining an existing trailer block
// and skipping exact duplicates.
func withTrailers(msg string, trailers []Trailer) string {
	msg = strings.TrimRight(msg, " \n")
	paras := strings.Split(msg, "\n\n")
	last := paras[len(paras)-1]
	existing := map[string]bool{}
	inBlock := len(paras) > 1
	for _, l := range strings.Split(last, "\n") {
		if !trailerLine.MatchString(l) {
			inBlock = false
		}
		existing[l] = true
	}
	var add []string
	for _, t := range trailers {
		k := strings.TrimSpace(t.Key)
		v := strings.TrimSpace(strings.ReplaceAll(t.Value, "\n", " "))
		if k == "" || v == "" {
			continue
		}
		line := k + ": " + v
		if existing[line] {
			continue
		}
		existing[line] = true
		add = append(add, line)
	}
	if len(add) == 0 {
		return msg + "\n"
	}
	sep := "\n\n"
	if inBlock {
		sep = "\n"
	}
	return msg + sep + strings.Join(add, "\n") + "\n"
}
