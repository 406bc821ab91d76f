package worktree

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
)

// PushRequest says where to push a task branch.
type PushRequest struct {
	// Remote is a URL or local path; "" means the worktree's Repo.
	Remote string
	// Branch is the remote branch; "" means the worktree's Branch.
	Branch string
	// Auth authenticates to the remote.
	Auth Auth
	// Force allows a non-fast-forward update.
	Force bool
	// Progress receives the remote's progress messages; nil discards them.
	Progress io.Writer
}

// PushResult is the outcome of a successful Push.
type PushResult struct {
	Remote   string `json:"remote"`     // without credentials
	Ref      string `json:"ref"`        // e.g. refs/heads/nightshift/t1
	Old      string `json:"old"`        // remote value before; "" when created
	New      string `json:"new"`        // the pushed commit
	UpToDate bool   `json:"up_to_date"` // the remote already had New
	Objects  int    `json:"objects"`    // objects sent
}

// Push sends the task branch head to the remote. Only objects reachable
// from the new commits and not from the base (or from the remote branch's
// current value) are sent; nothing walks the remote's whole history. A
// refusal is a *PushError.
func (m *Manager) Push(ctx context.Context, wt *Worktree, req PushRequest) (PushResult, error) {
	wt, err := m.loadMeta(wt)
	if err != nil {
		return PushResult{}, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, m.cfg.PushTimeout)
		defer cancel()
	}
	remote := req.Remote
	if remote == "" {
		remote = wt.Repo
	}
	branch := req.Branch
	if branch == "" {
		branch = wt.Branch
	}
	if err := validBranch(branch); err != nil {
		return PushResult{}, err
	}
	refName := plumbing.NewBranchReferenceName(branch)
	res := PushResult{Remote: redactURL(remote), Ref: refName.String()}
	pushErr := func(reason, msg string, err error) error {
		return &PushError{Reason: reason, Remote: res.Remote, Ref: res.Ref, Message: msg, Err: err}
	}

	l := m.taskLock(wt.TaskID)
	l.Lock()
	defer l.Unlock()
	unlock := m.useMirror(&mirror{dir: wt.mirrorDir})
	defer unlock()
	st, err := openTaskStore(wt)
	if err != nil {
		return PushResult{}, err
	}
	defer st.Close()
	r, err := st.Reference(plumbing.NewBranchReferenceName(wt.Branch))
	if err != nil {
		return PushResult{}, fmt.Errorf("worktree: read task branch: %w", err)
	}
	head := r.Hash()
	res.New = head.String()

	dial, _, err := normalizeRepo(remote)
	if err != nil {
		return PushResult{}, err
	}
	ep, err := transport.NewEndpoint(dial)
	if err != nil {
		return PushResult{}, fmt.Errorf("worktree: push endpoint: %w", err)
	}
	tr, am, err := m.transport(ep, req.Auth)
	if err != nil {
		return PushResult{}, err
	}
	start := time.Now()
	sess, err := tr.NewReceivePackSession(ep, am)
	if err != nil {
		return PushResult{}, classifyTransport(err, pushErr)
	}
	defer sess.Close()
	ar, err := sess.AdvertisedReferencesContext(ctx)
	if err != nil && !errors.Is(err, transport.ErrEmptyRemoteRepository) {
		return PushResult{}, classifyTransport(err, pushErr)
	}
	var old plumbing.Hash
	if ar != nil {
		if h, ok := ar.References[refName.String()]; ok {
			old = h
		}
	}
	if old == head {
		res.Old, res.UpToDate = old.String(), true
		return res, nil
	}
	if !old.IsZero() {
		res.Old = old.String()
		if !req.Force {
			if st.HasEncodedObject(old) != nil {
				return PushResult{}, pushErr(PushNonFastForward, "the remote branch has commits the task does not have", nil)
			}
			ok, err := isAncestor(st, old, head)
			if err != nil {
				return PushResult{}, fmt.Errorf("worktree: fast-forward check: %w", err)
			}
			if !ok {
				return PushResult{}, pushErr(PushNonFastForward, "the remote branch has commits the task does not have", nil)
			}
		}
	}

	// What the remote has: the branch's old value, and every advertised
	// ref we also have (their history is on the remote). The base is on
	// the remote when pushing back to the repository the task came from;
	// for another remote (a fork) the advertised refs stand in for it.
	haves := []plumbing.Hash{}
	if !old.IsZero() {
		haves = append(haves, old)
	}
	_, remoteKey, _ := normalizeRepo(remote)
	_, originKey, _ := normalizeRepo(wt.Repo)
	remoteIsOrigin := remoteKey == originKey
	if remoteIsOrigin {
		haves = append(haves, plumbing.NewHash(wt.BaseCommit))
	}
	if ar != nil {
		n := 0
		for name, h := range ar.References {
			if n >= 256 || !strings.HasPrefix(name, "refs/heads/") && !strings.HasPrefix(name, "refs/tags/") {
				continue
			}
			if h != old && st.HasEncodedObject(h) == nil {
				haves = append(haves, h)
				n++
			}
		}
	}
	hashes, err := objectsToSend(st, head, haves)
	if err != nil {
		return PushResult{}, fmt.Errorf("worktree: list objects to push: %w", err)
	}
	res.Objects = len(hashes)

	caps := capability.NewList()
	if ar != nil {
		caps = ar.Capabilities
	}
	upd := packp.NewReferenceUpdateRequestFromCapabilities(caps)
	upd.Commands = []*packp.Command{{Name: refName, Old: old, New: head}}
	if req.Progress != nil {
		upd.Progress = req.Progress
		if caps.Supports(capability.Sideband64k) {
			_ = upd.Capabilities.Set(capability.Sideband64k)
		} else if caps.Supports(capability.Sideband) {
			_ = upd.Capabilities.Set(capability.Sideband)
		}
	}
	pr, pw := io.Pipe()
	upd.Packfile = pr
	done := make(chan error, 1)
	go func() {
		enc := packfile.NewEncoder(pw, st, !caps.Supports(capability.OFSDelta))
		_, err := enc.Encode(hashes, 0)
		_ = pw.CloseWithError(err)
		done <- err
	}()
	rs, err := sess.ReceivePack(ctx, upd)
	_ = pr.Close()
	encErr := <-done
	if err != nil {
		// go-git returns the remote's report status as an error too.
		msg := err.Error()
		if strings.Contains(msg, "command error on") || strings.Contains(msg, "unpack error") {
			reason := PushRejected
			if strings.Contains(msg, "non-fast-forward") || strings.Contains(msg, "fetch first") {
				reason = PushNonFastForward
			}
			if rs != nil {
				msg = statusMessage(rs)
			} else if i := strings.LastIndex(msg, ": "); i >= 0 {
				msg = msg[i+2:]
			}
			return PushResult{}, pushErr(reason, msg, err)
		}
		return PushResult{}, classifyTransport(err, pushErr)
	}
	if encErr != nil {
		return PushResult{}, fmt.Errorf("worktree: encode pack: %w", encErr)
	}
	if rs != nil {
		if err := rs.Error(); err != nil {
			msg := statusMessage(rs)
			reason := PushRejected
			if strings.Contains(msg, "non-fast-forward") || strings.Contains(msg, "fetch first") {
				reason = PushNonFastForward
			}
			return PushResult{}, pushErr(reason, msg, err)
		}
	}
	if remoteIsOrigin {
		if meta, err := readMeta(m.taskRoot(wt.TaskID)); err == nil {
			meta.PushedCommit = head.String()
			meta.UsedAt = m.cfg.Now()
			_ = writeMeta(m.taskRoot(wt.TaskID), meta)
		}
	} else {
		m.touch(wt.TaskID)
	}
	m.log.LogAttrs(ctx, slog.LevelInfo, "worktree pushed", slog.String("task_id", wt.TaskID),
		slog.String("remote", res.Remote), slog.String("ref", res.Ref), slog.String("sha", res.New),
		slog.Int("objects", res.Objects), slog.Duration("took", time.Since(start)))
	return res, nil
}

func statusMessage(rs *packp.ReportStatus) string {
	if rs.UnpackStatus != "ok" {
		return "unpack: " + rs.UnpackStatus
	}
	for _, c := range rs.CommandStatuses {
		if c.Status != "ok" {
			return c.Status
		}
	}
	return ""
}

func classifyTransport(err error, pushErr func(reason, msg string, err error) error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, transport.ErrAuthenticationRequired):
		return pushErr(PushAuth, msg, err)
	case errors.Is(err, transport.ErrAuthorizationFailed):
		return pushErr(PushForbidden, msg, err)
	case errors.Is(err, transport.ErrRepositoryNotFound):
		return pushErr(PushNotFound, msg, err)
	case strings.Contains(msg, "host key"):
		return pushErr(PushHostKey, msg, err)
	case strings.Contains(msg, "unable to authenticate") || strings.Contains(msg, "handshake failed"):
		return pushErr(PushAuth, msg, err)
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return pushErr(PushTransport, msg, err)
}

// objectsToSend lists the commits, trees and blobs reachable from tip and
// not from haves. Trees are compared to each commit's parents path by
// path, so unchanged subtrees are never opened.
func objectsToSend(st storer.EncodedObjectStorer, tip plumbing.Hash, haves []plumbing.Hash) ([]plumbing.Hash, error) {
	commits, err := newCommits(st, tip, haves)
	if err != nil {
		return nil, err
	}
	set := map[plumbing.Hash]bool{}
	var out []plumbing.Hash
	add := func(h plumbing.Hash) {
		if !set[h] {
			set[h] = true
			out = append(out, h)
		}
	}
	for _, c := range commits {
		add(c.Hash)
		visit := func(ch change) error {
			if !ch.to.hash.IsZero() && ch.to.mode != filemode.Submodule {
				add(ch.to.hash)
			}
			return nil
		}
		if len(c.ParentHashes) == 0 {
			if err := diffTrees(st, plumbing.ZeroHash, c.TreeHash, "", visit, add); err != nil {
				return nil, err
			}
			continue
		}
		for _, ph := range c.ParentHashes {
			p, err := object.GetCommit(st, ph)
			if err != nil {
				return nil, fmt.Errorf("read commit %s: %w", ph, err)
			}
			if err := diffTrees(st, p.TreeHash, c.TreeHash, "", visit, add); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}
