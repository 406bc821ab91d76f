package worktree

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/utils/ioutil"
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
	// Expect, when not nil, lists the values the remote branch may have
	// for the push to go ahead ("" for a missing branch): anything else
	// means someone else moved it, and the push is refused (PushLeaseLost)
	// before anything is sent. The update itself is a compare-and-swap on
	// the value seen, so a branch moved meanwhile refuses it too.
	Expect []string
	// Progress receives the remote's progress messages; nil discards them.
	Progress io.Writer
	// Scan, when set, sees everything the push would send that the remote
	// may not have: the whole content of every new blob (binary and large
	// ones included; over 4 MiB in overlapping windows, see ScanFunc),
	// every new commit (message, author and committer), the entry names of
	// every new tree, and the paths of the new files. An error from it
	// aborts the push before anything is sent, as a *SecretFoundError.
	Scan ScanFunc
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

// Push sends the task's last commit (the one Commit made; the base when
// Commit never changed anything) to the remote branch. What the clone's
// refs say is ignored: the agent may have moved them since. Only objects
// reachable from that commit and not from the base (or from the remote
// branch's current value) are sent; each is read once into a pack file
// outside the clone, checked against its hash and passed to req.Scan,
// before anything is sent. Local remotes
// are written in this process, without native git and its hooks. A
// refusal is a *PushError.
func (m *Manager) Push(ctx context.Context, wt *Worktree, req PushRequest) (_ PushResult, err error) {
	defer recoverUnsafe(&err)
	wt, err = m.loadMeta(wt)
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
	meta, err := readMeta(m.taskRoot(wt.TaskID))
	if err != nil {
		return PushResult{}, err
	}
	unlock := m.useMirror(&mirror{dir: wt.mirrorDir})
	defer unlock()
	st, err := openTaskStore(wt)
	if err != nil {
		return PushResult{}, err
	}
	defer st.Close()
	head := plumbing.NewHash(wt.BaseCommit)
	if meta.Committed != "" {
		head = plumbing.NewHash(meta.Committed)
	}
	res.New = head.String()

	dial, remoteKey, err := normalizeRepo(remote)
	if err != nil {
		return PushResult{}, err
	}
	ep, err := transport.NewEndpoint(dial)
	if err != nil {
		return PushResult{}, fmt.Errorf("worktree: push endpoint: %w", err)
	}
	start := time.Now()

	// The remote's refs: from the repository itself when it is local,
	// from receive-pack's advertisement otherwise.
	var (
		advertised map[string]plumbing.Hash
		local      *localRepo
		sess       transport.ReceivePackSession
		caps       = capability.NewList()
	)
	if ep.Protocol == "file" {
		local, err = m.openLocal(ep.Path)
		if err != nil {
			if errors.Is(err, ErrForbiddenRepo) {
				return PushResult{}, err
			}
			return PushResult{}, classifyTransport(err, pushErr)
		}
		defer local.Close()
		if advertised, err = local.refs(); err != nil {
			return PushResult{}, pushErr(PushTransport, "read the remote's refs", err)
		}
	} else {
		tr, am, err := m.transport(ep, req.Auth)
		if err != nil {
			return PushResult{}, err
		}
		sess, err = tr.NewReceivePackSession(ep, am)
		if err != nil {
			return PushResult{}, classifyTransport(err, pushErr)
		}
		defer sess.Close()
		ar, err := sess.AdvertisedReferencesContext(ctx)
		if err != nil && !errors.Is(err, transport.ErrEmptyRemoteRepository) {
			return PushResult{}, classifyTransport(err, pushErr)
		}
		advertised = map[string]plumbing.Hash{}
		if ar != nil {
			caps = ar.Capabilities
			for name, h := range ar.References {
				advertised[name] = h
			}
		}
	}
	old := advertised[refName.String()]
	if req.Expect != nil && !expected(req.Expect, old) {
		return PushResult{}, pushErr(PushLeaseLost, "the remote branch is at "+shortHash(old)+", which no run of this task pushed", nil)
	}
	if old == head {
		res.Old, res.UpToDate = old.String(), true
		m.recordPush(wt.TaskID, head)
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
	_, originKey, _ := normalizeRepo(wt.Repo)
	if remoteKey == originKey {
		haves = append(haves, plumbing.NewHash(wt.BaseCommit))
	}
	n := 0
	for name, h := range advertised {
		if n >= 256 || !strings.HasPrefix(name, "refs/heads/") && !strings.HasPrefix(name, "refs/tags/") {
			continue
		}
		if h != old && st.HasEncodedObject(h) == nil {
			haves = append(haves, h)
			n++
		}
	}
	items, err := objectsToSend(ctx, st, head, haves)
	if err != nil {
		return PushResult{}, fmt.Errorf("worktree: list objects to push: %w", err)
	}
	if local != nil {
		// A local remote says exactly what it has.
		kept := items[:0]
		for _, it := range items {
			if local.store.HasEncodedObject(it.hash) != nil {
				kept = append(kept, it)
			}
		}
		items = kept
	}
	// The pack is written (and every object in it checked and scanned)
	// into a file of the task's own directory, out of the agent's reach,
	// before any of it is sent: nothing is held in memory whole, and the
	// agent cannot change an object between its scan and its sending.
	pack, err := os.CreateTemp(m.taskRoot(wt.TaskID), "push-*.pack")
	if err != nil {
		return PushResult{}, fmt.Errorf("worktree: push pack: %w", err)
	}
	defer func() {
		pack.Close()
		_ = os.Remove(pack.Name())
	}()
	if err := writePack(ctx, st, items, req.Scan, pack); err != nil {
		var sf *SecretFoundError
		if errors.As(err, &sf) {
			return PushResult{}, err
		}
		return PushResult{}, fmt.Errorf("worktree: read objects to push: %w", err)
	}
	res.Objects = len(items)
	sendPack := func(w io.Writer) error {
		if _, err := pack.Seek(0, io.SeekStart); err != nil {
			return err
		}
		_, err := io.Copy(w, pack)
		return err
	}

	if local != nil {
		if _, err := pack.Seek(0, io.SeekStart); err != nil {
			return PushResult{}, fmt.Errorf("worktree: push pack: %w", err)
		}
		reason, msg, err := local.receive(ctx, refName, old, head, ioutil.NewContextReader(ctx, pack), len(items) > 0)
		if err != nil {
			if ctx.Err() != nil {
				return PushResult{}, err
			}
			return PushResult{}, pushErr(PushTransport, "", err)
		}
		if reason != "" {
			return PushResult{}, pushErr(reason, msg, nil)
		}
	} else if err := m.sendPack(ctx, sess, caps, refName, old, head, sendPack, req.Progress, pushErr); err != nil {
		return PushResult{}, err
	}
	m.recordPush(wt.TaskID, head)
	m.log.LogAttrs(ctx, slog.LevelInfo, "worktree pushed", slog.String("task_id", wt.TaskID),
		slog.String("remote", res.Remote), slog.String("ref", res.Ref), slog.String("sha", res.New),
		slog.Int("objects", res.Objects), slog.Duration("took", time.Since(start)))
	return res, nil
}

func expected(list []string, old plumbing.Hash) bool {
	for _, e := range list {
		if e == "" && old.IsZero() || e != "" && e == old.String() {
			return true
		}
	}
	return false
}

func shortHash(h plumbing.Hash) string {
	if h.IsZero() {
		return "nothing"
	}
	return h.String()[:12]
}

// recordPush remembers the commit a push delivered: the next commit of the
// task builds on it instead of squashing it away.
func (m *Manager) recordPush(taskID string, head plumbing.Hash) {
	_ = m.updateMeta(taskID, func(meta *taskMeta) { meta.PushedCommit = head.String() })
}

// sendPack runs receive-pack on a network remote.
func (m *Manager) sendPack(ctx context.Context, sess transport.ReceivePackSession, caps *capability.List, refName plumbing.ReferenceName,
	old, head plumbing.Hash, pack func(io.Writer) error, progress io.Writer,
	pushErr func(reason, msg string, err error) error) error {
	upd := packp.NewReferenceUpdateRequestFromCapabilities(caps)
	upd.Commands = []*packp.Command{{Name: refName, Old: old, New: head}}
	if progress != nil {
		upd.Progress = progress
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
		err := pack(pw)
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
			reason := rejection(msg)
			if rs != nil {
				msg = statusMessage(rs)
			} else if i := strings.LastIndex(msg, ": "); i >= 0 {
				msg = msg[i+2:]
			}
			return pushErr(reason, msg, err)
		}
		return classifyTransport(err, pushErr)
	}
	if encErr != nil {
		return fmt.Errorf("worktree: encode pack: %w", encErr)
	}
	if rs != nil {
		if err := rs.Error(); err != nil {
			msg := statusMessage(rs)
			return pushErr(rejection(msg), msg, err)
		}
	}
	return nil
}

// rejection is the reason for a remote's refusal saying msg.
func rejection(msg string) string {
	if strings.Contains(msg, "non-fast-forward") || strings.Contains(msg, "fetch first") {
		return PushNonFastForward
	}
	return PushRejected
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
// not from haves, with the paths they were found at. Trees are compared to
// each commit's parents path by path, so unchanged subtrees are never
// opened.
func objectsToSend(ctx context.Context, st storer.EncodedObjectStorer, tip plumbing.Hash, haves []plumbing.Hash) ([]pushItem, error) {
	commits, err := newCommits(st, tip, haves)
	if err != nil {
		return nil, err
	}
	set := map[plumbing.Hash]bool{}
	var out []pushItem
	add := func(h plumbing.Hash, p string) {
		if !set[h] {
			set[h] = true
			out = append(out, pushItem{hash: h, path: p})
		}
	}
	for _, c := range commits {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		add(c.Hash, "")
		visit := func(ch change) error {
			if !ch.to.hash.IsZero() && ch.to.mode != filemode.Submodule {
				add(ch.to.hash, ch.path)
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
