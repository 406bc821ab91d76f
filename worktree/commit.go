package worktree

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/index"
	"github.com/go-git/go-git/v5/plumbing/object"
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
}

// Commit records the state of the task's work tree as one commit made by
// Nightshift: its tree is the work tree's files (as `git add -A` would
// stage them), its parent the last commit a push of this task delivered, or
// the task's base. The agent's own commits, branches and messages are
// squashed away and never leave: nothing the agent wrote into .git other
// than the index's stat cache is used. The commit carries req.Author, the
// message and trailers; the task branch and HEAD point at it afterwards,
// and Push sends it. Calling Commit again with nothing changed returns the
// same commit. A change to a protected path fails with *ProtectedPathError
// and changes no ref. It is also how checkpoint commits are made during
// long runs.
func (m *Manager) Commit(ctx context.Context, wt *Worktree, req CommitRequest) (_ Commit, err error) {
	defer recoverUnsafe(&err)
	if err := req.Author.validate("Author"); err != nil {
		return Commit{}, err
	}
	if req.Committer == (Signature{}) {
		req.Committer = req.Author
	} else if err := req.Committer.validate("Committer"); err != nil {
		return Commit{}, err
	}
	wt, err = m.loadMeta(wt)
	if err != nil {
		return Commit{}, err
	}
	l := m.taskLock(wt.TaskID)
	l.Lock()
	defer l.Unlock()
	meta, err := readMeta(m.taskRoot(wt.TaskID))
	if err != nil {
		return Commit{}, err
	}
	unlock := m.useMirror(&mirror{dir: wt.mirrorDir})
	defer unlock()
	st, err := openTaskStore(wt)
	if err != nil {
		return Commit{}, err
	}
	defer st.Close()

	base := plumbing.NewHash(wt.BaseCommit)
	baseCommit, err := object.GetCommit(st, base)
	if err != nil {
		return Commit{}, fmt.Errorf("worktree: read base commit: %w", err)
	}
	parent := base
	if meta.PushedCommit != "" {
		parent = plumbing.NewHash(meta.PushedCommit)
	}
	parentCommit, err := object.GetCommit(st, parent)
	if err != nil {
		return Commit{}, fmt.Errorf("worktree: read parent commit: %w", err)
	}
	snap, err := stage(ctx, st, st.work, st.git, stageOpts{maxFile: m.cfg.MaxFileSize,
		maxCommit: m.cfg.MaxCommitBytes, old: st.mirror, put: st.putBlob})
	if err != nil {
		return Commit{}, fmt.Errorf("worktree: stage: %w", err)
	}
	protected := m.cfg.Protected
	if req.Protected != nil {
		protected = req.Protected
	}
	var files, links, missing []string
	var newBytes int64
	var tooLarge string
	counted := map[plumbing.Hash]bool{}
	if err := diffTrees(st, baseCommit.TreeHash, snap.tree, "", func(c change) error {
		files = append(files, c.path)
		if c.to.mode == filemode.Symlink || c.from.mode == filemode.Symlink {
			links = append(links, c.path)
		}
		h := c.to.hash
		if h.IsZero() || c.to.mode == filemode.Submodule || counted[h] {
			return ctx.Err()
		}
		counted[h] = true
		// The index's stat cache named this blob: it must be an object of
		// this clone or its mirror (never one reached through alternates).
		if st.HasEncodedObject(h) != nil {
			missing = append(missing, c.path)
			return ctx.Err()
		}
		// What the change adds, stat-cached blobs the agent wrote itself
		// included: every blob the mirror lacks.
		if tooLarge == "" && st.mirror.HasEncodedObject(h) != nil {
			n, err := st.EncodedObjectSize(h)
			if err != nil {
				return fmt.Errorf("size of %s: %w", shortPath(c.path), err)
			}
			if newBytes += n; newBytes > m.cfg.MaxCommitBytes {
				tooLarge = c.path
			}
		}
		return ctx.Err()
	}, nil); err != nil {
		return Commit{}, fmt.Errorf("worktree: list changes: %w", err)
	}
	if len(missing) > 0 {
		if len(missing) > 10 {
			missing = append(missing[:10], fmt.Sprintf("and %d more", len(missing)-10))
		}
		for i := range missing {
			missing[i] = shortPath(missing[i])
		}
		return Commit{}, fmt.Errorf("%w: the index names objects the clone does not have for %s", ErrUnsafeRepository, strings.Join(missing, ", "))
	}
	if tooLarge != "" {
		return Commit{}, &LimitError{Reason: LimitCommitBytes, Path: shortPath(tooLarge), Limit: m.cfg.MaxCommitBytes}
	}
	sort.Strings(files)
	if !req.AllowProtected && len(protected) > 0 {
		isLink := map[string]bool{}
		for _, l := range links {
			isLink[l] = true
		}
		var hits []string
		for _, f := range files {
			for _, p := range protected {
				if matchGlob(p, f) || isLink[f] && aboveLiteralPrefix(p, f) {
					hits = append(hits, f)
					break
				}
			}
		}
		if len(hits) > 0 {
			return Commit{}, &ProtectedPathError{Paths: hits}
		}
	}

	res := Commit{Files: files}
	head := parent
	if snap.tree != parentCommit.TreeHash {
		// The same tree on the same parent as last time: keep that commit.
		if prev := meta.Committed; prev != "" {
			if c, err := object.GetCommit(st, plumbing.NewHash(prev)); err == nil && c.TreeHash == snap.tree &&
				len(c.ParentHashes) == 1 && c.ParentHashes[0] == parent {
				head = c.Hash
			}
		}
	}
	if snap.tree != parentCommit.TreeHash && head == parent {
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
		trailers = append(trailers, Trailer{"Nightshift-Task", wt.TaskID})
		c := &object.Commit{
			Author:       object.Signature{Name: req.Author.Name, Email: req.Author.Email, When: when},
			Committer:    object.Signature{Name: req.Committer.Name, Email: req.Committer.Email, When: when},
			Message:      withTrailers(msg, trailers),
			TreeHash:     snap.tree,
			ParentHashes: []plumbing.Hash{parent},
		}
		o := st.NewEncodedObject()
		if err := c.Encode(o); err != nil {
			return Commit{}, fmt.Errorf("worktree: encode commit: %w", err)
		}
		h, err := st.SetEncodedObject(o)
		if err != nil {
			return Commit{}, fmt.Errorf("worktree: store commit: %w", err)
		}
		res.Created = true
		head = h
	}
	res.SHA = head.String()
	res.Changed = head != base
	if err := m.updateMeta(wt.TaskID, func(meta *taskMeta) { meta.Committed = head.String() }); err != nil {
		return Commit{}, fmt.Errorf("worktree: record commit: %w", err)
	}
	// The clone follows: the index (a stat cache matching the new head),
	// the task branch, then HEAD, each with git's lock files so a
	// checkpoint during a run does not tear the agent's own git.
	var ib bytes.Buffer
	if err := index.NewEncoder(&ib).Encode(&index.Index{Version: 2, Entries: snap.entries}); err != nil {
		return Commit{}, fmt.Errorf("worktree: encode index: %w", err)
	}
	if err := writeLocked(ctx, st.git.root, "index", ib.Bytes()); err != nil {
		return Commit{}, fmt.Errorf("worktree: write index: %w", err)
	}
	branch := plumbing.NewBranchReferenceName(wt.Branch)
	if err := writeLocked(ctx, st.git.root, branch.String(), []byte(head.String()+"\n")); err != nil {
		return Commit{}, fmt.Errorf("worktree: update %s: %w", branch, err)
	}
	if err := writeLocked(ctx, st.git.root, "HEAD", []byte("ref: "+branch.String()+"\n")); err != nil {
		return Commit{}, fmt.Errorf("worktree: update HEAD: %w", err)
	}
	m.log.LogAttrs(ctx, slog.LevelInfo, "worktree committed", slog.String("task_id", wt.TaskID),
		slog.String("sha", res.SHA), slog.Bool("created", res.Created), slog.Int("files", len(res.Files)))
	return res, nil
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
