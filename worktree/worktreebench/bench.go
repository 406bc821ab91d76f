// Package worktreebench measures task worktree provisioning against native
// git on generated repositories: our Provision from a warm mirror, `git
// worktree add` and `git clone --shared` from the same mirror, and `cp -r`
// of a checkout as the floor. It also times a push of one task commit
// over a long history against native `git push`, and publishing a
// one-file change (our Commit and Push with every sent object scanned)
// against native `git add -A`, `git commit` and `git push`. The last line it prints
// is ratio=<ours / git worktree add> for the largest repository.
package worktreebench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"github.com/nightshift/nightshift/worktree"
)

// Run generates the repositories, runs the measurements and prints them
// to w. args are flags: -files, -small, -commits, -runs, -dir, -keep.
func Run(ctx context.Context, w io.Writer, args []string) error {
	fs := flag.NewFlagSet("worktree", flag.ContinueOnError)
	fs.SetOutput(w)
	files := fs.Int("files", 20000, "files in the large repository")
	small := fs.Int("small", 500, "files in the small repository (0 skips it)")
	commits := fs.Int("commits", 300, "commits of history in each repository")
	runs := fs.Int("runs", 5, "timed runs per method (the median is reported)")
	dir := fs.String("dir", "", "work directory (default: a new temporary directory)")
	keep := fs.Bool("keep", false, "keep the work directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := exec.LookPath("git"); err != nil {
		return fmt.Errorf("worktreebench: git not found: %w", err)
	}
	root := *dir
	if root == "" {
		d, err := os.MkdirTemp("", "worktreebench-")
		if err != nil {
			return err
		}
		root = d
	}
	if !*keep {
		defer os.RemoveAll(root)
	}
	sizes := []int{}
	if *small > 0 {
		sizes = append(sizes, *small)
	}
	sizes = append(sizes, *files)
	var ratio float64
	for _, n := range sizes {
		r, err := benchRepo(ctx, w, filepath.Join(root, fmt.Sprintf("repo%d", n)), n, *commits, *runs)
		if err != nil {
			return err
		}
		ratio = r
	}
	fmt.Fprintf(w, "ratio=%.2f\n", ratio)
	return nil
}

type result struct {
	name  string
	times []time.Duration
	rss   int64 // peak RSS in KiB, max over runs
}

func (r *result) median() time.Duration {
	s := append([]time.Duration(nil), r.times...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func benchRepo(ctx context.Context, w io.Writer, root string, nfiles, ncommits, runs int) (float64, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return 0, err
	}
	origin := filepath.Join(root, "origin.git")
	start := time.Now()
	if err := generate(ctx, origin, nfiles, ncommits); err != nil {
		return 0, fmt.Errorf("generate: %w", err)
	}
	fmt.Fprintf(w, "\nrepository: %d files, %d commits (generated with git fast-import in %s)\n",
		nfiles, ncommits+1, time.Since(start).Round(time.Millisecond))

	m, err := worktree.New(worktree.Config{MirrorDir: filepath.Join(root, "mirrors"), TaskDir: filepath.Join(root, "tasks")})
	if err != nil {
		return 0, err
	}
	defer m.Close()
	start = time.Now()
	warm, err := m.Provision(ctx, worktree.Ref{TaskID: "warm", Repo: origin}, nil)
	if err != nil {
		return 0, fmt.Errorf("warm mirror: %w", err)
	}
	fmt.Fprintf(w, "cold provision (clone into mirror + checkout): %s\n", time.Since(start).Round(time.Millisecond))
	mirror := filepath.Dir(warm.ReadOnlyPaths[0])
	sha := warm.BaseCommit
	scratch := filepath.Join(root, "scratch")

	ours := &result{name: "ours: Provision (warm mirror, base SHA; process RSS)"}
	oursFetch := &result{name: "ours: Provision (warm mirror, fetch + default branch)"}
	wtAdd := &result{name: "git worktree add"}
	clone := &result{name: "git clone --shared"}
	cp := &result{name: "cp -r of a checkout (floor)"}
	for i := range runs {
		// Ours, measured in-process; peak RSS is reset before each run.
		resetPeakRSS()
		t0 := time.Now()
		if _, err := m.Provision(ctx, worktree.Ref{TaskID: fmt.Sprintf("b%d", i), Repo: origin, Base: sha}, nil); err != nil {
			return 0, err
		}
		ours.times = append(ours.times, time.Since(t0))
		ours.rss = max(ours.rss, peakRSS())

		t0 = time.Now()
		if _, err := m.Provision(ctx, worktree.Ref{TaskID: fmt.Sprintf("f%d", i), Repo: origin}, nil); err != nil {
			return 0, err
		}
		oursFetch.times = append(oursFetch.times, time.Since(t0))

		d := filepath.Join(scratch, fmt.Sprintf("wt%d", i))
		if err := timeCmd(ctx, wtAdd, mirror, "git", "worktree", "add", "-q", "--detach", d, sha); err != nil {
			return 0, err
		}
		d = filepath.Join(scratch, fmt.Sprintf("clone%d", i))
		if err := timeCmd(ctx, clone, root, "git", "clone", "-q", "--shared", mirror, d); err != nil {
			return 0, err
		}
		d = filepath.Join(scratch, fmt.Sprintf("cp%d", i))
		if err := timeCmd(ctx, cp, root, "cp", "-r", warm.Dir, d); err != nil {
			return 0, err
		}
		// Clean up untimed so runs do not pile up in the page cache.
		_ = m.Remove(ctx, fmt.Sprintf("b%d", i))
		_ = m.Remove(ctx, fmt.Sprintf("f%d", i))
		_ = os.RemoveAll(scratch)
		_ = exec.CommandContext(ctx, "git", "-C", mirror, "worktree", "prune").Run()
	}
	fmt.Fprintf(w, "%-55s %10s %12s\n", "provision a task worktree ("+strconv.Itoa(runs)+" runs)", "median", "peak RSS")
	for _, r := range []*result{ours, oursFetch, wtAdd, clone, cp} {
		rss := "-"
		if r.rss > 0 {
			rss = fmt.Sprintf("%d MiB", r.rss/1024)
		}
		fmt.Fprintf(w, "%-55s %10s %12s\n", r.name, r.median().Round(time.Millisecond), rss)
	}
	ratio := float64(ours.median()) / float64(wtAdd.median())
	fmt.Fprintf(w, "ours / git worktree add = %.2f; ours / cp -r = %.2f\n", ratio, float64(ours.median())/float64(cp.median()))

	if err := benchPush(ctx, w, m, root, origin, warm, runs); err != nil {
		return 0, fmt.Errorf("push: %w", err)
	}
	return ratio, nil
}

// benchPush times pushing one task commit to a remote that has the whole
// history: ours against native git push of the same commit.
func benchPush(ctx context.Context, w io.Writer, m *worktree.Manager, root, origin string, wt *worktree.Worktree, runs int) error {
	f, err := os.OpenFile(filepath.Join(wt.Dir, "README.md"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintln(f, "a task change")
	f.Close()
	t0 := time.Now()
	c, err := m.Commit(ctx, wt, worktree.CommitRequest{Author: worktree.Signature{Name: "Bench Agent", Email: "bench@agents.localhost"}})
	if err != nil {
		return err
	}
	commitTook := time.Since(t0)
	t0 = time.Now()
	if _, err := m.Diff(ctx, wt); err != nil {
		return err
	}
	diffTook := time.Since(t0)
	status := &result{name: "git status (same worktree, for scale)"}
	if err := timeCmd(ctx, status, wt.Dir, "git", "status", "--porcelain"); err != nil {
		return err
	}
	fmt.Fprintf(w, "%-55s %10s\n", "ours: Commit (scan worktree, one file changed)", commitTook.Round(time.Millisecond))
	fmt.Fprintf(w, "%-55s %10s\n", "ours: Diff against base", diffTook.Round(time.Millisecond))
	fmt.Fprintf(w, "%-55s %10s\n", status.name, status.median().Round(time.Millisecond))
	ours := &result{name: "ours: Push (one commit over the base)"}
	native := &result{name: "git push (same commit)"}
	for i := range runs {
		t0 := time.Now()
		if _, err := m.Push(ctx, wt, worktree.PushRequest{Remote: origin, Branch: fmt.Sprintf("bench/ours%d", i)}); err != nil {
			return err
		}
		ours.times = append(ours.times, time.Since(t0))
		// Native git from a clone that shares the same objects.
		if err := timeCmd(ctx, native, root, "git", "-C", filepath.Dir(wt.ReadOnlyPaths[0]), "push", "-q", origin,
			c.SHA+":refs/heads/bench/git"+strconv.Itoa(i)); err != nil {
			// The mirror lacks the task's objects; push from the task clone
			// with hooks disabled instead.
			native.times = native.times[:0]
			break
		}
	}
	if len(native.times) == 0 {
		for i := range runs {
			if err := timeCmd(ctx, native, root, "git", "-C", wt.Dir, "-c", "core.hooksPath=/dev/null", "push", "-q", origin,
				c.SHA+":refs/heads/bench/git"+strconv.Itoa(i)); err != nil {
				return err
			}
		}
	}
	// go-git's own push walks every object reachable from the remote's refs.
	naive := &result{name: "go-git Repository.Push (same commit)"}
	st := filesystem.NewStorageWithOptions(osfs.New(filepath.Join(wt.Dir, ".git")), cache.NewObjectLRUDefault(),
		filesystem.Options{AlternatesFS: osfs.New("/")})
	remote := gogit.NewRemote(st, &config.RemoteConfig{Name: "origin", URLs: []string{origin}})
	for i := range min(runs, 3) {
		t0 := time.Now()
		err := remote.PushContext(ctx, &gogit.PushOptions{
			RemoteName: "origin",
			RefSpecs:   []config.RefSpec{config.RefSpec(c.SHA + ":refs/heads/bench/gogit" + strconv.Itoa(i))},
		})
		if err != nil {
			return fmt.Errorf("go-git push: %w", err)
		}
		naive.times = append(naive.times, time.Since(t0))
	}
	for _, r := range []*result{ours, native, naive} {
		fmt.Fprintf(w, "%-55s %10s\n", r.name, r.median().Round(time.Millisecond))
	}
	return benchCommitPush(ctx, w, m, root, origin, wt, runs)
}

// benchCommitPush times what publishing a one-file change costs: our
// Commit (squash) and Push with every sent object scanned, against native
// git add -A, commit and push of the same change in a checkout sharing the
// mirror's objects.
func benchCommitPush(ctx context.Context, w io.Writer, m *worktree.Manager, root, origin string, wt *worktree.Worktree, runs int) error {
	clone := filepath.Join(root, "native-checkout")
	if err := timeCmd(ctx, &result{}, root, "git", "clone", "-q", "--shared", filepath.Dir(wt.ReadOnlyPaths[0]), clone); err != nil {
		return err
	}
	defer os.RemoveAll(clone)
	never := []byte("sk-bench-value-that-is-never-there")
	scanned := 0
	scan := func(_ string, data []byte) error {
		scanned += len(data)
		if bytes.Contains(data, never) {
			return errors.New("secret")
		}
		return nil
	}
	ours := &result{name: "ours: Commit + Push, every object scanned"}
	native := &result{name: "git add -A && git commit && git push (same change)"}
	for i := range runs {
		for _, dir := range []string{wt.Dir, clone} {
			f, err := os.OpenFile(filepath.Join(dir, "README.md"), os.O_APPEND|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			fmt.Fprintf(f, "change %d\n", i)
			f.Close()
		}
		t0 := time.Now()
		if _, err := m.Commit(ctx, wt, worktree.CommitRequest{Author: worktree.Signature{Name: "Bench Agent", Email: "bench@agents.localhost"}}); err != nil {
			return err
		}
		if _, err := m.Push(ctx, wt, worktree.PushRequest{Remote: origin, Branch: fmt.Sprintf("bench/cp%d", i), Scan: scan}); err != nil {
			return err
		}
		ours.times = append(ours.times, time.Since(t0))
		script := fmt.Sprintf("git -c core.hooksPath=/dev/null add -A && git -c core.hooksPath=/dev/null -c user.name=Bench -c user.email=bench@x commit -q -m 'change %d' && git -c core.hooksPath=/dev/null push -q %s HEAD:refs/heads/bench/native%d", i, origin, i)
		if err := timeCmd(ctx, native, clone, "sh", "-c", script); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "%-55s %10s\n", ours.name, ours.median().Round(time.Millisecond))
	fmt.Fprintf(w, "%-55s %10s\n", native.name, native.median().Round(time.Millisecond))
	fmt.Fprintf(w, "ours / native commit+push = %.2f (%d bytes scanned per push)\n", float64(ours.median())/float64(native.median()), scanned/max(runs, 1))
	return nil
}

// timeCmd runs a command and records its wall time and peak RSS. A
// child's ru_maxrss inherits this (large) process's RSS at fork, so peak
// RSS comes from /usr/bin/time (its own child is forked from a small
// process) when installed, and is left at zero otherwise.
func timeCmd(ctx context.Context, r *result, dir, name string, args ...string) error {
	var rssFile string
	full := append([]string{name}, args...)
	if _, err := os.Stat("/usr/bin/time"); err == nil {
		f, err := os.CreateTemp("", "rss-")
		if err == nil {
			rssFile = f.Name()
			f.Close()
			defer os.Remove(rssFile)
			full = append([]string{"/usr/bin/time", "-f", "%M", "-o", rssFile}, full...)
		}
	}
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	r.times = append(r.times, time.Since(t0))
	if rssFile != "" {
		if b, err := os.ReadFile(rssFile); err == nil {
			n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			r.rss = max(r.rss, n)
		}
	}
	return nil
}

// resetPeakRSS resets VmHWM (Linux); peakRSS then reads it in KiB.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				return n
			}
		}
	}
	return 0
}

// generate writes a bare repository with nfiles files and ncommits
// further commits touching a few files each, through git fast-import.
func generate(ctx context.Context, bare string, nfiles, ncommits int) error {
	if out, err := exec.CommandContext(ctx, "git", "init", "-q", "--bare", "-b", "main", bare).CombinedOutput(); err != nil {
		return fmt.Errorf("git init: %v: %s", err, out)
	}
	cmd := exec.CommandContext(ctx, "git", "fast-import", "--quiet")
	cmd.Dir = bare
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	bw := bufio.NewWriterSize(in, 1<<20)
	rng := rand.New(rand.NewPCG(1, uint64(nfiles)))
	paths := make([]string, nfiles)
	perDir := 50
	for i := range paths {
		d := i / perDir
		ext := []string{".go", ".ts", ".md", ".json", ".py"}[i%5]
		paths[i] = fmt.Sprintf("pkg%02d/mod%03d/file%05d%s", d/20, d, i, ext)
	}
	content := func(i, rev int) []byte {
		var b bytes.Buffer
		lines := 10 + rng.IntN(60)
		fmt.Fprintf(&b, "// file %d revision %d\n", i, rev)
		for l := range lines {
			fmt.Fprintf(&b, "line %d: %016x %016x value=%d\n", l, rng.Uint64(), rng.Uint64(), rng.IntN(1000))
		}
		return b.Bytes()
	}
	when := int64(1700000000)
	commit := func(msg string, mark int, files map[int][]byte, from int) {
		fmt.Fprintf(bw, "commit refs/heads/main\nmark :%d\ncommitter Bench Dev <dev@example.test> %d +0000\n", mark, when)
		when += 600
		fmt.Fprintf(bw, "data %d\n%s\n", len(msg), msg)
		if from > 0 {
			fmt.Fprintf(bw, "from :%d\n", from)
		}
		keys := make([]int, 0, len(files))
		for k := range files {
			keys = append(keys, k)
		}
		sort.Ints(keys)
		for _, k := range keys {
			name := "README.md"
			if k >= 0 {
				name = paths[k]
			}
			fmt.Fprintf(bw, "M 100644 inline %s\ndata %d\n", name, len(files[k]))
			bw.Write(files[k])
			bw.WriteByte('\n')
		}
	}
	first := map[int][]byte{-1: []byte("# generated benchmark repository\n")}
	for i := range nfiles {
		first[i] = content(i, 0)
	}
	commit("initial import", 1, first, 0)
	for c := 1; c <= ncommits; c++ {
		ch := map[int][]byte{}
		for range 3 {
			i := rng.IntN(nfiles)
			ch[i] = content(i, c)
		}
		commit(fmt.Sprintf("change %d", c), c+1, ch, c)
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	in.Close()
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("git fast-import: %v: %s", err, stderr.String())
	}
	return nil
}
