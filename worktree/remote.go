package worktree

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
)

// BranchHead returns the commit branch points at on remote (a URL or local
// path, as Ref.Repo), or "" when the remote has no such branch. It reads
// the remote's ref advertisement (git ls-remote): nothing is fetched, and a
// local remote is read in this process without native git.
func (m *Manager) BranchHead(ctx context.Context, remote, branch string, auth Auth) (_ string, err error) {
	defer recoverUnsafe(&err)
	if err := validBranch(branch); err != nil {
		return "", err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, m.cfg.PushTimeout)
		defer cancel()
	}
	dial, _, err := normalizeRepo(remote)
	if err != nil {
		return "", err
	}
	ep, err := transport.NewEndpoint(dial)
	if err != nil {
		return "", fmt.Errorf("worktree: remote endpoint: %w", err)
	}
	name := plumbing.NewBranchReferenceName(branch).String()
	if ep.Protocol == "file" {
		local, err := m.openLocal(ep.Path)
		if err != nil {
			return "", err
		}
		defer local.Close()
		refs, err := local.refs()
		if err != nil {
			return "", fmt.Errorf("worktree: read the refs of %s: %w", redactURL(remote), err)
		}
		if h, ok := refs[name]; ok {
			return h.String(), nil
		}
		return "", nil
	}
	tr, am, err := m.transport(ep, auth)
	if err != nil {
		return "", err
	}
	sess, err := tr.NewUploadPackSession(ep, am)
	if err != nil {
		return "", fmt.Errorf("worktree: ls-remote %s: %w", redactURL(remote), err)
	}
	defer sess.Close()
	ar, err := sess.AdvertisedReferencesContext(ctx)
	if errors.Is(err, transport.ErrEmptyRemoteRepository) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("worktree: ls-remote %s: %w", redactURL(remote), err)
	}
	if h, ok := ar.References[name]; ok {
		return h.String(), nil
	}
	return "", nil
}
