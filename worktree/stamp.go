package worktree

import (
	"fmt"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// stampCommits rewrites the agent's own commits (reachable from head, not
// from haves) whose message lacks the trailer, appending it; descendants
// of a rewritten commit get new parents. Authors, committers, dates and
// trees are kept; signatures are dropped (they no longer match). It
// returns the new head and how many commits were rewritten.
func stampCommits(st storer.EncodedObjectStorer, head plumbing.Hash, haves []plumbing.Hash, t Trailer) (plumbing.Hash, int, error) {
	commits, err := newCommits(st, head, haves)
	if err != nil {
		return plumbing.ZeroHash, 0, err
	}
	if len(commits) == 0 {
		return head, 0, nil
	}
	set := make(map[plumbing.Hash]*object.Commit, len(commits))
	for _, c := range commits {
		set[c.Hash] = c
	}
	line := t.Key + ": " + t.Value
	mapped := map[plumbing.Hash]plumbing.Hash{}
	rewritten := 0
	var visit func(h plumbing.Hash) (plumbing.Hash, error)
	visit = func(h plumbing.Hash) (plumbing.Hash, error) {
		if v, ok := mapped[h]; ok {
			return v, nil
		}
		c, ok := set[h]
		if !ok {
			return h, nil // history the remote already has
		}
		parents := make([]plumbing.Hash, len(c.ParentHashes))
		changed := false
		for i, p := range c.ParentHashes {
			np, err := visit(p)
			if err != nil {
				return plumbing.ZeroHash, err
			}
			parents[i] = np
			changed = changed || np != p
		}
		msg := c.Message
		if !hasLine(msg, line) {
			msg = withTrailers(msg, []Trailer{t})
			changed = true
		}
		if !changed {
			mapped[h] = h
			return h, nil
		}
		nc := &object.Commit{
			Author:       c.Author,
			Committer:    c.Committer,
			MergeTag:     c.MergeTag,
			Message:      msg,
			TreeHash:     c.TreeHash,
			ParentHashes: parents,
			Encoding:     c.Encoding,
			ExtraHeaders: c.ExtraHeaders,
		}
		o := st.NewEncodedObject()
		if err := nc.Encode(o); err != nil {
			return plumbing.ZeroHash, fmt.Errorf("encode commit: %w", err)
		}
		nh, err := st.SetEncodedObject(o)
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("store commit: %w", err)
		}
		mapped[h] = nh
		rewritten++
		return nh, nil
	}
	nh, err := visit(head)
	return nh, rewritten, err
}

func hasLine(msg, line string) bool {
	for _, l := range strings.Split(msg, "\n") {
		if strings.TrimSpace(l) == line {
			return true
		}
	}
	return false
}
