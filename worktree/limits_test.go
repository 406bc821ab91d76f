package worktree

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// allocated reports the bytes fn allocated (runtime.MemStats.TotalAlloc,
// which only grows): an upper bound on the heap fn grew by at any moment.
// Callers are not parallel, so other tests' allocations do not count.
func allocated(t *testing.T, fn func()) uint64 {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// sparse makes a file with a few bytes of content and an apparent size
// of size bytes, using no disk for the rest.
func sparse(t *testing.T, p string, size int64) {
	t.Helper()
	if err := os.WriteFile(p, []byte(filepath.Base(p)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
}

// TestSparseFilesOverCommitBytesRefused: an agent's sparse files cost no
// disk but their apparent size in reading; a change adding more than
// MaxCommitBytes of new files is refused with a *LimitError, whether the
// walk reads them (stopping before it passes the cap) or the agent
// staged them itself (the index's stat cache names blobs it wrote), and
// neither Commit nor Diff holds a file in memory. Fails on the old code:
// there was no total cap, and every file was read whole into memory.
func TestSparseFilesOverCommitBytesRefused(t *testing.T) {
	const (
		files = 20
		size  = 30 << 20
		limit = 64 << 20
	)
	origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
	m := newManager(t, func(c *Config) { c.MaxCommitBytes = limit })
	ctx := context.Background()
	for _, staged := range []bool{false, true} {
		id := fmt.Sprintf("staged-%v", staged)
		wt := provision(t, m, Ref{TaskID: id, Repo: origin})
		for i := range files {
			sparse(t, filepath.Join(wt.Dir, fmt.Sprintf("big%02d.bin", i)), size)
		}
		if staged {
			git(t, wt.Dir, "add", "-A")
		}
		var cerr, derr error
		n := allocated(t, func() { _, cerr = m.Commit(ctx, wt, CommitRequest{Author: agent}) })
		var le *LimitError
		if !errors.As(cerr, &le) || le.Reason != LimitCommitBytes || !errors.Is(cerr, ErrCommitTooLarge) || le.Limit != limit {
			t.Fatalf("%s: commit err = %v, want a commit_too_large limit", id, cerr)
		}
		if !strings.Contains(cerr.Error(), "the most one commit may add") || !strings.Contains(le.Path, "big") {
			t.Errorf("%s: the error does not say what and where: %v", id, cerr)
		}
		t.Logf("%s: commit allocated %d KiB for %d MiB of apparent size", id, n>>10, files*size>>20)
		if n > 16<<20 {
			t.Errorf("%s: commit allocated %d MiB (apparent size %d MiB)", id, n>>20, files*size>>20)
		}
		if branchExists(t, wt.Dir, "refs/heads/"+wt.Branch) && git(t, wt.Dir, "rev-parse", "refs/heads/"+wt.Branch) != wt.BaseCommit {
			t.Errorf("%s: the refused commit moved the task branch", id)
		}
		if !staged {
			n = allocated(t, func() { _, derr = m.Diff(ctx, wt) })
			if !errors.Is(derr, ErrCommitTooLarge) {
				t.Fatalf("diff err = %v", derr)
			}
			if n > 16<<20 {
				t.Errorf("diff allocated %d MiB", n>>20)
			}
		}
	}
}

// TestLargeCommitStreams: a change under the caps with a 40 MiB file that
// does not compress is committed, scanned and pushed without holding it in
// memory; the scan sees it in overlapping windows, so a secret across a
// window boundary is still found. Fails on the old code, which read every
// file, and every object a push sends, whole into memory.
func TestLargeCommitStreams(t *testing.T) {
	const size = 40 << 20
	origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
	m := newManager(t)
	ctx := context.Background()
	wt := provision(t, m, Ref{TaskID: "big", Repo: origin})
	data := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{1})
	_, _ = rng.Read(data)
	secret := "sk-live-" + randHex(12)
	// Straddles the end of the first scan window.
	copy(data[scanWindow-len(secret)/2:], secret)
	if err := os.WriteFile(filepath.Join(wt.Dir, "data.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	data = nil
	var (
		c   Commit
		err error
	)
	n := allocated(t, func() { c, err = m.Commit(ctx, wt, CommitRequest{Author: agent}) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("commit of %d MiB allocated %d KiB", size>>20, n>>10)
	if n > size/4 {
		t.Errorf("commit allocated %d MiB for a %d MiB file", n>>20, size>>20)
	}
	var windows, longest int
	scan := func(what string, b []byte) error {
		if what == "file data.bin" {
			windows++
			longest = max(longest, len(b))
		}
		if bytes.Contains(b, []byte(secret)) {
			return errors.New("contains the value of API_KEY")
		}
		return nil
	}
	_, err = m.Push(ctx, wt, PushRequest{Scan: scan})
	var sf *SecretFoundError
	if !errors.As(err, &sf) || sf.What != "file data.bin" {
		t.Fatalf("push err = %v, want the secret across a window boundary found", err)
	}
	if branchExists(t, origin, "refs/heads/"+wt.Branch) {
		t.Fatal("the branch reached the remote")
	}

	// Without the secret the same file is pushed, in windows.
	if err := os.WriteFile(filepath.Join(wt.Dir, "data.bin"), bytes.Repeat([]byte("0123456789abcdef"), size/16), 0o644); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, wt.Dir, map[string]string{"noise.bin": randHex(1 << 10)})
	if c, err = m.Commit(ctx, wt, CommitRequest{Author: agent}); err != nil {
		t.Fatal(err)
	}
	windows, longest = 0, 0
	var res PushResult
	n = allocated(t, func() { res, err = m.Push(ctx, wt, PushRequest{Scan: scan}) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("push of %d MiB allocated %d KiB in %d scan windows", size>>20, n>>10, windows)
	if n > size/4 {
		t.Errorf("push allocated %d MiB for a %d MiB file", n>>20, size>>20)
	}
	if want := size / (scanWindow - scanOverlap); windows < want || longest > scanWindow {
		t.Errorf("scan saw data.bin in %d windows of up to %d bytes, want at least %d of at most %d", windows, longest, want, scanWindow)
	}
	if got := git(t, origin, "rev-parse", res.Ref); got != c.SHA {
		t.Fatalf("remote has %s, want %s", got, c.SHA)
	}
	if got := git(t, origin, "cat-file", "-s", c.SHA+":data.bin"); got != fmt.Sprint(size) {
		t.Fatalf("pushed data.bin is %s bytes", got)
	}
	git(t, origin, "fsck", "--no-progress")
}

// openFDs counts this process's open files.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// TestDeepTreeRefused: a tree nested 5,000 levels deep (made through
// directory descriptors, as an agent's mkdir; cd loop does) fails fast
// with a short message, and the walk's open files stay bounded by
// MaxTreeDepth. Fails on the old code, which held one open directory per
// level (and ran out of descriptors at ~20,000 levels) and quoted the
// whole path.
func TestDeepTreeRefused(t *testing.T) {
	const depth = 5000
	origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
	m := newManager(t)
	ctx := context.Background()
	wt := provision(t, m, Ref{TaskID: "deep", Repo: origin})
	fd, err := unix.Open(wt.Dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range depth {
		if err := unix.Mkdirat(fd, "d", 0o755); err != nil {
			t.Fatalf("level %d: %v", i, err)
		}
		next, err := unix.Openat(fd, "d", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatalf("level %d: %v", i, err)
		}
		fd = next
	}
	if err := unix.Mkdirat(fd, "leaf", 0o755); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)

	before := openFDs(t)
	peak := before
	testHookBeforeDir = func(string) { peak = max(peak, openFDs(t)) }
	defer func() { testHookBeforeDir = nil }()
	_, err = m.Commit(ctx, wt, CommitRequest{Author: agent})
	testHookBeforeDir = nil
	var le *LimitError
	if !errors.As(err, &le) || !errors.Is(err, ErrTreeTooDeep) || le.Limit != MaxTreeDepth {
		t.Fatalf("commit err = %.300v, want a tree_too_deep limit", err)
	}
	if len(err.Error()) > 400 {
		t.Errorf("the error is %d bytes long: %.300s...", len(err.Error()), err)
	}
	if peak-before > MaxTreeDepth+16 {
		t.Errorf("the walk held %d more open files (limit %d)", peak-before, MaxTreeDepth)
	}
	if after := openFDs(t); after > before {
		t.Errorf("%d open files leaked", after-before)
	}
	t.Logf("open files: %d before, peak %d; err: %v", before, peak, err)
	if _, err := m.Diff(ctx, wt); !errors.Is(err, ErrTreeTooDeep) {
		t.Fatalf("diff err = %.300v", err)
	}
}

// TestProtectedPathsThroughSymlinks: a symlink at a protected path or at a
// directory above a protected pattern's literal prefix redirects it, and
// counts as changing it. Fails on the old code for the .github link,
// which was pushed.
func TestProtectedPathsThroughSymlinks(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		links map[string]string // link -> target
		files map[string]string
		hit   string // the protected path reported; "" means the commit is fine
	}{
		{".github link", map[string]string{".github": "ci"}, map[string]string{"ci/workflows/evil.yml": "on: push\n"}, ".github"},
		{".github/workflows link", map[string]string{".github/workflows": "../ci"}, map[string]string{"ci/evil.yml": "on: push\n", ".github/README": "x\n"}, ".github/workflows"},
		{"link to .github elsewhere", map[string]string{"docs": ".github"}, map[string]string{".github/README": "x\n"}, ""},
		{"link beside the workflows", map[string]string{".github/templates": "../ci"}, map[string]string{"ci/x.md": "x\n", ".github/README": "x\n"}, ""},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
			m := newManager(t)
			ctx := context.Background()
			wt := provision(t, m, Ref{TaskID: fmt.Sprintf("t%d", i), Repo: origin})
			writeFiles(t, wt.Dir, tc.files)
			for link, target := range tc.links {
				if err := os.Symlink(target, filepath.Join(wt.Dir, link)); err != nil {
					t.Fatal(err)
				}
			}
			_, err := m.Commit(ctx, wt, CommitRequest{Author: agent})
			var pe *ProtectedPathError
			if tc.hit == "" {
				if err != nil {
					t.Fatalf("commit: %v", err)
				}
				return
			}
			if !errors.As(err, &pe) || !errors.Is(err, ErrProtectedPath) || strings.Join(pe.Paths, ",") != tc.hit {
				t.Fatalf("commit err = %v, want %s protected", err, tc.hit)
			}
			if _, err := m.Commit(ctx, wt, CommitRequest{Author: agent, AllowProtected: true}); err != nil {
				t.Fatalf("commit with AllowProtected: %v", err)
			}
		})
	}
}

// TestNestedRepositoryFilesCommitted: a repository the agent made (or
// cloned) inside the work tree is committed as files, without its .git,
// rather than silently left out. Fails on the old code, which dropped it.
func TestNestedRepositoryFilesCommitted(t *testing.T) {
	t.Parallel()
	origin := newOrigin(t, map[string]string{"a.txt": "a\n"})
	m := newManager(t)
	ctx := context.Background()
	wt := provision(t, m, Ref{TaskID: "nested", Repo: origin})
	sub := filepath.Join(wt.Dir, "sub")
	writeFiles(t, sub, map[string]string{"lib.go": "package lib\n", "x/y.txt": "y\n"})
	git(t, sub, "init", "-q")
	git(t, sub, "add", "-A")
	git(t, sub, "commit", "-q", "-m", "nested")
	c, err := m.Commit(ctx, wt, CommitRequest{Author: agent})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Files, ","); got != "sub/lib.go,sub/x/y.txt" {
		t.Fatalf("committed %s", got)
	}
	if _, err := m.Push(ctx, wt, PushRequest{}); err != nil {
		t.Fatal(err)
	}
	if got := git(t, origin, "ls-tree", "-r", "--name-only", c.SHA); got != "a.txt\nsub/lib.go\nsub/x/y.txt" {
		t.Fatalf("pushed tree:\n%s", got)
	}
}

// TestErrorsShortenPaths: paths an agent chose are shortened in error
// text, and a long list of them is cut.
func TestErrorsShortenPaths(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("d/", 20000) + "f.yml"
	if got := shortPath(long); len(got) > 160 || !strings.HasPrefix(got, "d/d/") || !strings.HasSuffix(got, "/f.yml") {
		t.Errorf("shortPath = %q", got)
	}
	if got := shortPath("a/b.txt"); got != "a/b.txt" {
		t.Errorf("shortPath of a short path = %q", got)
	}
	paths := make([]string, 100)
	for i := range paths {
		paths[i] = fmt.Sprintf(".github/workflows/%d/%s", i, long)
	}
	msg := (&ProtectedPathError{Paths: paths}).Error()
	if len(msg) > 4000 || !strings.HasSuffix(msg, "and 80 more") {
		t.Errorf("error is %d bytes: %.200s...%s", len(msg), msg, msg[max(0, len(msg)-40):])
	}
}
