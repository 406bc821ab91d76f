package worktree

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/index"
)

// within fails the test when fn has not returned by the deadline: the
// operations under test must never block on what the agent planted.
func within(t *testing.T, what string, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatalf("%s is still blocked after 20s", what)
		return nil
	}
}

// allObjects is every object of a repository, printed.
func allObjects(t *testing.T, repo string) string {
	t.Helper()
	cmd := exec.Command("git", "cat-file", "--batch-all-objects", "--batch")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+repo)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cat-file in %s: %v", repo, err)
	}
	return string(out)
}

// pushKeepsOut pushes the task and fails the test, saying what leaked,
// when any object of origin then holds canary.
func pushKeepsOut(t *testing.T, m *Manager, wt *Worktree, origin, canary, what string) {
	t.Helper()
	if _, err := m.Push(context.Background(), wt, PushRequest{}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(allObjects(t, origin), canary) {
		t.Fatalf("%s reached the remote", what)
	}
}

func branchExists(t *testing.T, repo, ref string) bool {
	t.Helper()
	cmd := exec.Command("git", "rev-parse", "-q", "--verify", ref)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+repo)
	return cmd.Run() == nil
}

// TestLocalRemoteRunsNoHooksOrConfig: a local repository an agent could
// have made carries hooks and config that native git would run; fetching
// from it and pushing to it (created, fast-forward, compare-and-swap,
// forced) runs none of them. Fails on native git-receive-pack.
func TestLocalRemoteRunsNoHooksOrConfig(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
	markers := t.TempDir()
	script := func(name string) []byte {
		return []byte("#!/bin/sh\ntouch " + filepath.Join(markers, name) + "\ncat >/dev/null\nexit 0\n")
	}
	hooksPath := filepath.Join(t.TempDir(), "hooks")
	if err := os.MkdirAll(hooksPath, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"pre-receive", "update", "post-receive", "post-update", "reference-transaction", "push-to-checkout"} {
		for _, dir := range []string{filepath.Join(origin, "hooks"), hooksPath} {
			if err := os.WriteFile(filepath.Join(dir, h), script(filepath.Base(dir)+"-"+h), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	pack := filepath.Join(t.TempDir(), "pack-objects-hook")
	if err := os.WriteFile(pack, []byte("#!/bin/sh\ntouch "+filepath.Join(markers, "pack-objects")+"\nexec \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	fsmon := filepath.Join(t.TempDir(), "fsmonitor")
	if err := os.WriteFile(fsmon, script("fsmonitor"), 0o755); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"core.fsmonitor": fsmon, "core.hooksPath": hooksPath, "uploadpack.packObjectsHook": pack} {
		git(t, origin, "config", k, v)
	}
	// Setup commands below run native git with hooks off.
	quiet := func(args ...string) string {
		return git(t, origin, append([]string{"-c", "core.hooksPath=/dev/null"}, args...)...)
	}

	m := newManager(t)
	ctx := context.Background()
	for i, repo := range []string{origin, "file://" + origin} {
		id := fmt.Sprintf("t%d", i)
		wt, err := m.Provision(ctx, Ref{TaskID: id, Repo: repo}, nil)
		if err != nil {
			t.Fatalf("provision from %s: %v", repo, err)
		}
		writeFiles(t, wt.Dir, map[string]string{"b.txt": "b\n"})
		c, err := m.Commit(ctx, wt, CommitRequest{Author: agent})
		if err != nil {
			t.Fatal(err)
		}
		ref := "refs/heads/nightshift/" + id
		if res, err := m.Push(ctx, wt, PushRequest{}); err != nil || res.Old != "" || git(t, origin, "rev-parse", ref) != c.SHA {
			t.Fatalf("create push = %+v, %v", res, err)
		}
		// Fast-forward.
		writeFiles(t, wt.Dir, map[string]string{"c.txt": "c\n"})
		c2, err := m.Commit(ctx, wt, CommitRequest{Author: agent})
		if err != nil {
			t.Fatal(err)
		}
		if res, err := m.Push(ctx, wt, PushRequest{}); err != nil || res.Old != c.SHA || git(t, origin, "rev-parse", ref) != c2.SHA {
			t.Fatalf("fast-forward push = %+v, %v", res, err)
		}
		// Someone else moves the branch: a push without Force is refused
		// as non-fast-forward and changes nothing; with Force it wins.
		other := quiet("commit-tree", "-m", "elsewhere", git(t, origin, "rev-parse", "main^{tree}"))
		quiet("update-ref", ref, other)
		writeFiles(t, wt.Dir, map[string]string{"d.txt": "d\n"})
		c3, err := m.Commit(ctx, wt, CommitRequest{Author: agent})
		if err != nil {
			t.Fatal(err)
		}
		_, err = m.Push(ctx, wt, PushRequest{})
		var pe *PushError
		if !errors.As(err, &pe) || pe.Reason != PushNonFastForward || git(t, origin, "rev-parse", ref) != other {
			t.Fatalf("non-fast-forward push: %v", err)
		}
		if _, err := m.Push(ctx, wt, PushRequest{Force: true}); err != nil || git(t, origin, "rev-parse", ref) != c3.SHA {
			t.Fatalf("forced push: %v", err)
		}
		git(t, origin, "fsck", "--no-progress")
	}
	// A non-bare repository refuses an update of its checked-out branch.
	src := filepath.Join(filepath.Dir(origin), "src")
	wt := provision(t, m, Ref{TaskID: "nb", Repo: src})
	writeFiles(t, wt.Dir, map[string]string{"e.txt": "e\n"})
	if _, err := m.Commit(ctx, wt, CommitRequest{Author: agent}); err != nil {
		t.Fatal(err)
	}
	_, err := m.Push(ctx, wt, PushRequest{Branch: "main"})
	var pe *PushError
	if !errors.As(err, &pe) || pe.Reason != PushRejected {
		t.Fatalf("push to the checked-out branch: %v", err)
	}
	ents, err := os.ReadDir(markers)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("the remote's %s ran", e.Name())
	}
}

// TestForbiddenRepoRefused: no repository under a forbidden directory
// (nor the manager's own mirrors and task clones) is fetched from or
// pushed to, however its path is spelled.
func TestForbiddenRepoRefused(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	inside := filepath.Join(data, "repos", "x.git")
	if err := os.MkdirAll(filepath.Dir(inside), 0o755); err != nil {
		t.Fatal(err)
	}
	git(t, data, "clone", "-q", "--bare", newOrigin(t, map[string]string{"a.txt": "a\n"}), inside)
	link := filepath.Join(t.TempDir(), "innocent.git")
	if err := os.Symlink(inside, link); err != nil {
		t.Fatal(err)
	}
	m := newManager(t, func(c *Config) { c.ForbiddenDirs = []string{data} })
	ctx := context.Background()
	for _, repo := range []string{inside, "file://" + inside, link, "file://" + link} {
		if _, err := m.Provision(ctx, Ref{TaskID: "t1", Repo: repo}, nil); !errors.Is(err, ErrForbiddenRepo) {
			t.Fatalf("provision from %s: %v", repo, err)
		}
	}
	origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
	victim := provision(t, m, Ref{TaskID: "victim", Repo: origin})
	wt := provision(t, m, Ref{TaskID: "t2", Repo: origin})
	writeFiles(t, wt.Dir, map[string]string{"b.txt": "b\n"})
	if _, err := m.Commit(ctx, wt, CommitRequest{Author: agent}); err != nil {
		t.Fatal(err)
	}
	for _, remote := range []string{inside, link, victim.Dir, filepath.Dir(victim.ReadOnlyPaths[0])} {
		if _, err := m.Push(ctx, wt, PushRequest{Remote: remote}); !errors.Is(err, ErrForbiddenRepo) {
			t.Fatalf("push to %s: %v", remote, err)
		}
	}
	if branchExists(t, inside, "refs/heads/nightshift/t2") {
		t.Fatal("a push reached the forbidden repository")
	}
	// A task clone is not a repository to provision from either.
	if _, err := m.Provision(ctx, Ref{TaskID: "t3", Repo: victim.Dir}, nil); !errors.Is(err, ErrForbiddenRepo) {
		t.Fatalf("provision from a task clone: %v", err)
	}
}

// TestFIFOsNeverBlock: FIFOs in place of the index, a ref, packed-refs or
// a work file do not hang Commit, Diff or Push (an open for reading of a
// FIFO blocks until a writer comes). Hangs on the old code.
func TestFIFOsNeverBlock(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
	m := newManager(t)
	ctx := context.Background()
	wt := provision(t, m, Ref{TaskID: "t1", Repo: origin})
	mkfifo := func(rel string) {
		p := filepath.Join(wt.Dir, filepath.FromSlash(rel))
		_ = os.Remove(p)
		if err := syscall.Mkfifo(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeFiles(t, wt.Dir, map[string]string{"b.txt": "b\n"})
	mkfifo("pipe")
	mkfifo(".git/packed-refs")
	mkfifo(".git/refs/heads/nightshift/t1")
	var c Commit
	if err := within(t, "Commit", func() (err error) {
		c, err = m.Commit(ctx, wt, CommitRequest{Author: agent})
		return err
	}); err != nil {
		t.Fatalf("commit with FIFO refs: %v", err)
	}
	if err := within(t, "Push", func() error { _, err := m.Push(ctx, wt, PushRequest{}); return err }); err != nil {
		t.Fatal(err)
	}
	if got := git(t, origin, "ls-tree", "--name-only", "refs/heads/nightshift/t1"); got != "a.txt\nb.txt" || git(t, origin, "rev-parse", "refs/heads/nightshift/t1") != c.SHA {
		t.Fatalf("pushed tree = %q", got)
	}

	mkfifo(".git/index")
	err := within(t, "Commit", func() error { _, err := m.Commit(ctx, wt, CommitRequest{Author: agent}); return err })
	if !errors.Is(err, ErrUnsafeRepository) {
		t.Fatalf("commit with a FIFO index: %v", err)
	}
	if err := within(t, "Diff", func() error { _, err := m.Diff(ctx, wt); return err }); !errors.Is(err, ErrUnsafeRepository) {
		t.Fatalf("diff with a FIFO index: %v", err)
	}
	// A cancelled context stops the walk.
	_ = os.Remove(filepath.Join(wt.Dir, ".git", "index"))
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := within(t, "Commit", func() error { _, err := m.Commit(cctx, wt, CommitRequest{Author: agent}); return err }); !errors.Is(err, context.Canceled) {
		t.Fatalf("commit with a cancelled context: %v", err)
	}
}

// TestSymlinksAreCommittedAsLinks: links to host files and directories are
// committed as links (mode 120000, the target as text); nothing they point
// at is read, and a directory swapped for such a link in the middle of the
// walk fails the commit instead of being followed.
func TestSymlinksAreCommittedAsLinks(t *testing.T) {
	origin := newOrigin(t, map[string]string{"a.txt": "a\n", "dir/b.txt": "b\n", "other/c.txt": "c\n"})
	host := t.TempDir()
	canary := "CANARY-" + randHex(8)
	writeFiles(t, host, map[string]string{"secret.txt": canary + "\n", "sub/deep.txt": canary + "\n"})
	m := newManager(t)
	ctx := context.Background()
	wt := provision(t, m, Ref{TaskID: "t1", Repo: origin})
	if err := os.RemoveAll(filepath.Join(wt.Dir, "dir")); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"dir": host, "leak.txt": filepath.Join(host, "secret.txt"), "rel": "../../../"} {
		if err := os.Symlink(target, filepath.Join(wt.Dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	c, err := m.Commit(ctx, wt, CommitRequest{Author: agent})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Push(ctx, wt, PushRequest{}); err != nil {
		t.Fatal(err)
	}
	ls := git(t, origin, "ls-tree", "-r", c.SHA)
	for _, want := range []string{"120000 blob", "\tdir", "\tleak.txt", "\trel"} {
		if !strings.Contains(ls, want) {
			t.Errorf("pushed tree lacks %q:\n%s", want, ls)
		}
	}
	if got := git(t, origin, "cat-file", "-p", c.SHA+":leak.txt"); got != filepath.Join(host, "secret.txt") {
		t.Errorf("link text = %q", got)
	}
	if strings.Contains(allObjects(t, origin), canary) {
		t.Fatal("a file behind a link reached the remote")
	}

	// The race: "other" is a directory when listed and a link to the host
	// when opened.
	testHookBeforeDir = func(p string) {
		if p == "other" {
			_ = os.RemoveAll(filepath.Join(wt.Dir, "other"))
			_ = os.Symlink(host, filepath.Join(wt.Dir, "other"))
		}
	}
	t.Cleanup(func() { testHookBeforeDir = nil })
	if _, err := m.Commit(ctx, wt, CommitRequest{Author: agent}); err == nil {
		t.Fatal("a directory swapped for a link during the walk was committed")
	}
	testHookBeforeDir = nil
	pushKeepsOut(t, m, wt, origin, canary, "a file behind a swapped directory")
}

// TestCloneGitFilesAreNotTrusted: the clone's alternates and links in its
// .git lead nowhere: an index entry naming an object only another
// repository has (through planted alternates) fails the commit, and a
// symlinked HEAD is refused.
func TestCloneGitFilesAreNotTrusted(t *testing.T) {
	t.Parallel()
	canary := "CANARY-" + randHex(8)
	other := newOrigin(t, map[string]string{"secret.txt": canary + "\n"})
	blob := git(t, other, "rev-parse", "main:secret.txt")
	origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
	m := newManager(t)
	ctx := context.Background()
	wt := provision(t, m, Ref{TaskID: "t1", Repo: origin})
	alt := filepath.Join(wt.Dir, ".git", "objects", "info", "alternates")
	if err := os.WriteFile(alt, []byte(filepath.Join(other, "objects")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// x.txt's index entry matches its stat data but names the other
	// repository's blob: a stat cache that lies.
	writeFiles(t, wt.Dir, map[string]string{"x.txt": strings.Repeat("y", len(canary)+1)})
	past := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(wt.Dir, "x.txt"), past, past); err != nil {
		t.Fatal(err)
	}
	git(t, wt.Dir, "add", "x.txt")
	idxPath := filepath.Join(wt.Dir, ".git", "index")
	f, err := os.Open(idxPath)
	if err != nil {
		t.Fatal(err)
	}
	idx := &index.Index{}
	err = index.NewDecoder(f).Decode(idx)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(filepath.Join(wt.Dir, "x.txt"))
	if err != nil {
		t.Fatal(err)
	}
	lied := false
	for _, e := range idx.Entries {
		if e.Name == "x.txt" {
			fillStat(e, fi)
			e.Hash, lied = plumbing.NewHash(blob), true
		}
	}
	if !lied {
		t.Fatal("x.txt is not in the index")
	}
	if err := os.Remove(idxPath); err != nil {
		t.Fatal(err)
	}
	if err := writeIndex(idxPath, idx.Entries); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Commit(ctx, wt, CommitRequest{Author: agent}); !errors.Is(err, ErrUnsafeRepository) {
		t.Fatalf("commit with a lying index: %v", err)
	}
	pushKeepsOut(t, m, wt, origin, canary, "an object of the planted alternates")

	hostHead := filepath.Join(t.TempDir(), "HEAD")
	if err := os.WriteFile(hostHead, []byte("ref: refs/heads/main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	head := filepath.Join(wt.Dir, ".git", "HEAD")
	if err := os.Remove(head); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(hostHead, head); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Commit(ctx, wt, CommitRequest{Author: agent}); !errors.Is(err, ErrUnsafeRepository) {
		t.Fatalf("commit with a linked HEAD: %v", err)
	}
	if b, _ := os.ReadFile(hostHead); string(b) != "ref: refs/heads/main\n" {
		t.Fatalf("the host file behind HEAD was written: %q", b)
	}
}

// TestPushScansEverythingItSends: a secret in any part of what a push
// would send (a binary file, a file too large to diff, a file name, the
// commit's message or identity) stops the push before anything is sent;
// one only in the agent's own history never leaves, since that history is
// squashed; a clean change is pushed and every new file is scanned.
func TestPushScansEverythingItSends(t *testing.T) {
	t.Parallel()
	secret := "sk-live-" + randHex(12)
	scan := func(seen *[]string) ScanFunc {
		return func(what string, data []byte) error {
			if seen != nil {
				*seen = append(*seen, what)
			}
			if bytes.Contains(data, []byte(secret)) {
				return errors.New("contains the value of API_KEY")
			}
			return nil
		}
	}
	big := make([]byte, 3<<20)
	for i := range big {
		big[i] = byte('a' + i%26)
	}
	copy(big[len(big)-100:], secret)
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string) CommitRequest
		what  string // the part the scan must name; "" means the push succeeds
	}{
		{"binary file", func(t *testing.T, dir string) CommitRequest {
			writeFiles(t, dir, map[string]string{"blob.bin": "\x00\x01\x02" + secret + "\x00"})
			return CommitRequest{Author: agent}
		}, "file blob.bin"},
		{"file over the diff limit", func(t *testing.T, dir string) CommitRequest {
			writeFiles(t, dir, map[string]string{"data/big.txt": string(big)})
			return CommitRequest{Author: agent}
		}, "file data/big.txt"},
		{"file name", func(t *testing.T, dir string) CommitRequest {
			writeFiles(t, dir, map[string]string{"keys/" + secret + ".txt": "x\n"})
			return CommitRequest{Author: agent}
		}, "file names in keys"},
		{"commit message", func(t *testing.T, dir string) CommitRequest {
			writeFiles(t, dir, map[string]string{"b.txt": "b\n"})
			return CommitRequest{Author: agent, Message: "use " + secret}
		}, "commit message and identities"},
		{"identity", func(t *testing.T, dir string) CommitRequest {
			writeFiles(t, dir, map[string]string{"b.txt": "b\n"})
			return CommitRequest{Author: Signature{Name: secret, Email: "a@agents.localhost"}}
		}, "commit message and identities"},
		{"intermediate agent commit and message", func(t *testing.T, dir string) CommitRequest {
			writeFiles(t, dir, map[string]string{"cfg.txt": secret + "\n"})
			git(t, dir, "add", "-A")
			git(t, dir, "commit", "-q", "-m", "token is "+secret)
			writeFiles(t, dir, map[string]string{"cfg.txt": "from the environment\n"})
			git(t, dir, "commit", "-q", "-am", "drop it")
			return CommitRequest{Author: agent}
		}, ""},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
			m := newManager(t)
			ctx := context.Background()
			wt := provision(t, m, Ref{TaskID: fmt.Sprintf("t%d", i), Repo: origin})
			if _, err := m.Commit(ctx, wt, tc.setup(t, wt.Dir)); err != nil {
				t.Fatal(err)
			}
			_, err := m.Push(ctx, wt, PushRequest{Scan: scan(nil)})
			if tc.what == "" {
				if err != nil {
					t.Fatalf("push: %v", err)
				}
			} else {
				var sf *SecretFoundError
				if !errors.As(err, &sf) || !errors.Is(err, ErrSecretFound) || !strings.HasPrefix(sf.What, tc.what) {
					t.Fatalf("push err = %v, want a secret found in %s", err, tc.what)
				}
				if branchExists(t, origin, "refs/heads/"+wt.Branch) {
					t.Fatal("the branch reached the remote")
				}
			}
			if strings.Contains(allObjects(t, origin), secret) {
				t.Fatal("the secret reached the remote")
			}
		})
	}

	t.Run("clean change", func(t *testing.T) {
		t.Parallel()
		origin := newOrigin(t, map[string]string{"a.txt": "a\n", "dir/b.txt": "b\n"})
		m := newManager(t)
		ctx := context.Background()
		wt := provision(t, m, Ref{TaskID: "clean", Repo: origin})
		writeFiles(t, wt.Dir, map[string]string{"dir/c.bin": "\x00c", "a.txt": "aa\n"})
		c, err := m.Commit(ctx, wt, CommitRequest{Author: agent})
		if err != nil {
			t.Fatal(err)
		}
		var seen []string
		res, err := m.Push(ctx, wt, PushRequest{Scan: scan(&seen)})
		if err != nil || git(t, origin, "rev-parse", "refs/heads/nightshift/clean") != c.SHA {
			t.Fatalf("push = %+v, %v", res, err)
		}
		got := strings.Join(seen, "\n")
		for _, want := range []string{"file a.txt", "file dir/c.bin", "file names in dir", "file names in the top directory", "commit message and identities of " + c.SHA, "file paths"} {
			if !strings.Contains(got, want) {
				t.Errorf("scan did not see %q; it saw:\n%s", want, got)
			}
		}
		if strings.Contains(got, "dir/b.txt") {
			t.Errorf("scan saw a file the remote has:\n%s", got)
		}
	})
}

// TestForeignHardLinkRefused: a hard link in the work tree to a file
// someone else owns (a host file on the same filesystem) is not read into
// the commit.
func TestForeignHardLinkRefused(t *testing.T) {
	t.Parallel()
	if os.Getuid() != 0 {
		t.Skip("needs root to own a file as another user")
	}
	origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
	m := newManager(t)
	ctx := context.Background()
	wt := provision(t, m, Ref{TaskID: "t1", Repo: origin})
	canary := "CANARY-" + randHex(8)
	host := filepath.Join(filepath.Dir(filepath.Dir(wt.Dir)), "host-secret")
	if err := os.WriteFile(host, []byte(canary), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(host, 4242, 4242); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(host, filepath.Join(wt.Dir, "linked.txt")); err != nil {
		t.Skipf("cannot hard link here: %v", err)
	}
	if _, err := m.Commit(ctx, wt, CommitRequest{Author: agent}); !errors.Is(err, ErrUnsafeRepository) {
		t.Fatalf("commit with a foreign hard link: %v", err)
	}
	pushKeepsOut(t, m, wt, origin, canary, "the linked host file")
}
