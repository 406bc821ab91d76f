package worktree

import (
	"container/heap"
	"errors"
	"fmt"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// newCommits returns the commits reachable from tip and not from any of
// haves (haves missing from the store are ignored), newest first. Like
// `git rev-list tip --not haves`, it walks by commit date and stops once
// only uninteresting commits are left, so it reads the new commits and
// about as many old ones, not the whole history.
func newCommits(st storer.EncodedObjectStorer, tip plumbing.Hash, haves []plumbing.Hash) ([]*object.Commit, error) {
	type state struct {
		c             *object.Commit
		uninteresting bool
		queued        bool // counted in interesting
	}
	seen := map[plumbing.Hash]*state{}
	q := &commitQueue{}
	interesting := 0 // interesting commits in the queue
	get := func(h plumbing.Hash) (*state, error) {
		if s, ok := seen[h]; ok {
			return s, nil
		}
		c, err := object.GetCommit(st, h)
		if err != nil {
			return nil, err
		}
		s := &state{c: c}
		seen[h] = s
		return s, nil
	}
	flip := func(s *state) {
		s.uninteresting = true
		if s.queued {
			s.queued = false
			interesting--
		}
	}
	// markUninteresting propagates to the already-seen ancestors of s.
	markUninteresting := func(s *state) {
		stack := []*state{s}
		for len(stack) > 0 {
			x := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			for _, p := range x.c.ParentHashes {
				if ps, ok := seen[p]; ok && !ps.uninteresting {
					flip(ps)
					stack = append(stack, ps)
				}
			}
		}
	}
	push := func(s *state) {
		heap.Push(q, s.c)
		if !s.uninteresting {
			s.queued = true
			interesting++
		}
	}
	for _, h := range haves {
		if h.IsZero() {
			continue
		}
		s, err := get(h)
		if errors.Is(err, plumbing.ErrObjectNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read commit %s: %w", h, err)
		}
		if !s.uninteresting {
			s.uninteresting = true
			push(s)
		}
	}
	t, err := get(tip)
	if err != nil {
		return nil, fmt.Errorf("read commit %s: %w", tip, err)
	}
	if t.uninteresting {
		return nil, nil
	}
	push(t)
	var out []*object.Commit
	// Keep going a few commits past the point where everything left is
	// uninteresting, to absorb clock skew (git uses the same slop).
	slop := 5
	for q.Len() > 0 {
		c := heap.Pop(q).(*object.Commit)
		s := seen[c.Hash]
		if s.queued {
			s.queued = false
			interesting--
		}
		if s.uninteresting {
			markUninteresting(s)
		} else {
			out = append(out, c)
		}
		for _, p := range c.ParentHashes {
			ps, ok := seen[p]
			if ok {
				if s.uninteresting && !ps.uninteresting {
					flip(ps)
					markUninteresting(ps)
				}
				continue
			}
			ps, err = get(p)
			if errors.Is(err, plumbing.ErrObjectNotFound) && s.uninteresting {
				continue // history the store does not have (shallow), and we do not need
			}
			if err != nil {
				return nil, fmt.Errorf("read commit %s: %w", p, err)
			}
			ps.uninteresting = s.uninteresting
			push(ps)
		}
		if interesting <= 0 {
			if slop == 0 {
				break
			}
			slop--
		}
	}
	// Commits found interesting before a later walk reached them from a have.
	res := out[:0]
	for _, c := range out {
		if !seen[c.Hash].uninteresting {
			res = append(res, c)
		}
	}
	return res, nil
}

// isAncestor reports whether a is reachable from b.
func isAncestor(st storer.EncodedObjectStorer, a, b plumbing.Hash) (bool, error) {
	if a == b {
		return true, nil
	}
	// a is an ancestor of b iff nothing is reachable from a but not from b.
	rest, err := newCommits(st, a, []plumbing.Hash{b})
	if err != nil {
		return false, err
	}
	return len(rest) == 0, nil
}

// commitQueue is a max-heap of commits by committer date.
type commitQueue []*object.Commit

func (q commitQueue) Len() int { return len(q) }
func (q commitQueue) Less(i, j int) bool {
	return q[i].Committer.When.After(q[j].Committer.When)
}
func (q commitQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *commitQueue) Push(x any)   { *q = append(*q, x.(*object.Commit)) }
func (q *commitQueue) Pop() any {
	old := *q
	c := old[len(old)-1]
	*q = old[:len(old)-1]
	return c
}
