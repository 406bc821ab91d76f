package worktree

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	fdiff "github.com/go-git/go-git/v5/plumbing/format/diff"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	udiff "github.com/go-git/go-git/v5/utils/diff"
	"github.com/sergi/go-diff/diffmatchpatch"
)

// Diff is a task's change against its base.
type Diff struct {
	// Patch is a unified diff (git format, a/ and b/ prefixes).
	Patch string `json:"patch"`
	// Files has one entry per changed path, sorted by path.
	Files []FileStat `json:"files"`
	// Added and Deleted are line totals over Files.
	Added   int `json:"added"`
	Deleted int `json:"deleted"`
}

// FileStat is the line count of one changed file.
type FileStat struct {
	Path    string `json:"path"`
	Added   int    `json:"added"`
	Deleted int    `json:"deleted"`
	Binary  bool   `json:"binary,omitempty"`
	// Status is "added", "deleted" or "modified".
	Status string `json:"status"`
}

// maxDiffBytes caps the blob size that gets a line diff; larger files are
// reported like binary ones.
const maxDiffBytes = 4 << 20

// Diff returns the task's changes against its base commit: the task
// branch plus anything the agent left uncommitted, as a unified patch
// with per-file line stats. It writes nothing into the task clone.
func (m *Manager) Diff(ctx context.Context, wt *Worktree) (_ Diff, err error) {
	defer recoverUnsafe(&err)
	wt, err = m.loadMeta(wt)
	if err != nil {
		return Diff{}, err
	}
	l := m.taskLock(wt.TaskID)
	l.Lock()
	defer l.Unlock()
	unlock := m.useMirror(&mirror{dir: wt.mirrorDir})
	defer unlock()
	st, err := openTaskStore(wt)
	if err != nil {
		return Diff{}, err
	}
	defer st.Close()
	ov := newOverlay(st)
	snap, err := stage(ctx, ov, st.work, st.git, stageOpts{maxFile: m.cfg.MaxFileSize,
		maxCommit: m.cfg.MaxCommitBytes, old: st.mirror, put: ov.putBlob})
	if err != nil {
		return Diff{}, fmt.Errorf("worktree: diff: %w", err)
	}
	base, err := object.GetCommit(st, plumbing.NewHash(wt.BaseCommit))
	if err != nil {
		return Diff{}, fmt.Errorf("worktree: read base commit: %w", err)
	}
	return treeDiff(ctx, ov, base.TreeHash, snap.tree)
}

// treeDiff renders the difference between two trees.
func treeDiff(ctx context.Context, st storer.EncodedObjectStorer, a, b plumbing.Hash) (Diff, error) {
	var changes []change
	if err := diffTrees(st, a, b, "", func(c change) error {
		changes = append(changes, c)
		return ctx.Err()
	}, nil); err != nil {
		return Diff{}, fmt.Errorf("worktree: diff trees: %w", err)
	}
	sort.SliceStable(changes, func(i, j int) bool { return changes[i].path < changes[j].path })
	var d Diff
	var fps []fdiff.FilePatch
	for _, c := range changes {
		fp, stat, err := filePatchFor(st, c)
		if err != nil {
			return Diff{}, err
		}
		fps = append(fps, fp)
		d.Files = append(d.Files, stat)
		d.Added += stat.Added
		d.Deleted += stat.Deleted
	}
	var buf bytes.Buffer
	if err := fdiff.NewUnifiedEncoder(&buf, fdiff.DefaultContextLines).Encode(patch(fps)); err != nil {
		return Diff{}, fmt.Errorf("worktree: encode patch: %w", err)
	}
	d.Patch = buf.String()
	return d, nil
}

func readBlob(st storer.EncodedObjectStorer, f treeFile) ([]byte, bool, error) {
	if f.hash.IsZero() || f.mode == filemode.Submodule {
		return nil, false, nil
	}
	o, err := st.EncodedObject(plumbing.BlobObject, f.hash)
	if err != nil {
		return nil, false, fmt.Errorf("worktree: read %s: %w", f.path, err)
	}
	if _, omitted := o.(*omittedBlob); omitted || o.Size() > maxDiffBytes {
		return nil, true, nil
	}
	r, err := o.Reader()
	if err != nil {
		return nil, false, err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, false, err
	}
	n := min(len(b), 8000)
	return b, bytes.IndexByte(b[:n], 0) >= 0, nil
}

func filePatchFor(st storer.EncodedObjectStorer, c change) (fdiff.FilePatch, FileStat, error) {
	stat := FileStat{Path: c.path, Status: "modified"}
	switch {
	case c.from.hash.IsZero():
		stat.Status = "added"
	case c.to.hash.IsZero():
		stat.Status = "deleted"
	}
	fp := &filePatch{}
	if !c.from.hash.IsZero() {
		fp.from = &diffFile{c.from}
	}
	if !c.to.hash.IsZero() {
		fp.to = &diffFile{c.to}
	}
	a, binA, err := readBlob(st, c.from)
	if err != nil {
		return nil, stat, err
	}
	b, binB, err := readBlob(st, c.to)
	if err != nil {
		return nil, stat, err
	}
	if binA || binB {
		fp.binary, stat.Binary = true, true
		return fp, stat, nil
	}
	if c.from.mode == filemode.Submodule || c.to.mode == filemode.Submodule {
		return fp, stat, nil
	}
	for _, dd := range udiff.Do(string(a), string(b)) {
		var op fdiff.Operation
		switch dd.Type {
		case diffmatchpatch.DiffEqual:
			op = fdiff.Equal
		case diffmatchpatch.DiffInsert:
			op = fdiff.Add
			stat.Added += countLines(dd.Text)
		case diffmatchpatch.DiffDelete:
			op = fdiff.Delete
			stat.Deleted += countLines(dd.Text)
		}
		fp.chunks = append(fp.chunks, &chunk{dd.Text, op})
	}
	return fp, stat, nil
}

func countLines(s string) int {
	n := strings.Count(s, "\n")
	if len(s) > 0 && !strings.HasSuffix(s, "\n") {
		n++
	}
	return n
}

type patch []fdiff.FilePatch

func (p patch) FilePatches() []fdiff.FilePatch { return p }
func (p patch) Message() string                { return "" }

type filePatch struct {
	from, to fdiff.File
	binary   bool
	chunks   []fdiff.Chunk
}

func (f *filePatch) IsBinary() bool                  { return f.binary }
func (f *filePatch) Files() (fdiff.File, fdiff.File) { return f.from, f.to }
func (f *filePatch) Chunks() []fdiff.Chunk           { return f.chunks }

type diffFile struct{ f treeFile }

func (f *diffFile) Hash() plumbing.Hash     { return f.f.hash }
func (f *diffFile) Mode() filemode.FileMode { return f.f.mode }
func (f *diffFile) Path() string            { return f.f.path }

type chunk struct {
	content string
	op      fdiff.Operation
}

func (c *chunk) Content() string       { return c.content }
func (c *chunk) Type() fdiff.Operation { return c.op }
