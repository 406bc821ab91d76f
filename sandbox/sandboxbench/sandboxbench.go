// Package sandboxbench measures what the sandbox costs: `true` in the full
// bwrap sandbox (profile, seccomp, cgroup or prlimit, egress proxy and its
// in-sandbox forwarder) against the floor of any bubblewrap sandbox and a
// plain fork/exec, all in the same run, plus 100 sandboxes started at once.
//
// The program calling Run must call sandbox.Reexec first thing in main:
// the forwarder inside the sandbox is that program re-executed.
package sandboxbench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"sync"
	"time"

	"github.com/nightshift/nightshift/sandbox"
	"github.com/nightshift/nightshift/sandbox/bwrap"
)

// Run prints timings and, last, "ratio=<ours / minimal bwrap>" (median
// start-to-exit of `true`).
func Run(ctx context.Context, w io.Writer) error {
	return run(ctx, w, 40, 100)
}

func run(ctx context.Context, w io.Writer, n, concurrent int) error {
	if err := bwrap.Available(ctx); err != nil {
		return err
	}
	d, err := bwrap.New(bwrap.Config{})
	if err != nil {
		return err
	}
	defer d.Close()
	state, err := os.MkdirTemp("", "sandboxbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(state)
	dir, err := os.MkdirTemp("", "sandboxbench-wt-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	m, err := sandbox.NewManager(d, sandbox.Config{StateDir: state}, nil)
	if err != nil {
		return err
	}
	// The prlimit path, for comparison: no cgroup to create and remove.
	dp, err := bwrap.New(bwrap.Config{DisableCgroups: true})
	if err != nil {
		return err
	}
	defer dp.Close()
	mp, err := sandbox.NewManager(dp, sandbox.Config{StateDir: state}, nil)
	if err != nil {
		return err
	}
	bw, err := exec.LookPath("bwrap")
	if err != nil {
		return err
	}
	truePath, err := exec.LookPath("true")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "sandbox benchmark: %d sequential runs of `true` each, %d concurrent; limits via %s\n", n, concurrent, d.Mode())

	plain := func() error { return exec.CommandContext(ctx, truePath).Run() }
	minimal := func() error {
		return exec.CommandContext(ctx, bw, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
			"--unshare-all", "--die-with-parent", "true").Run()
	}
	ours := func(m *sandbox.Manager, full bool) func() error {
		return func() error {
			spec := sandbox.Spec{ID: "bench", Dir: dir, Command: []string{"true"}}
			if full {
				spec.AllowHosts = []string{"example.com"} // proxy + in-sandbox forwarder
			}
			res, err := m.Run(ctx, spec)
			if err == nil && !res.OK() {
				err = fmt.Errorf("sandboxed true: %s", res.Reason)
			}
			return err
		}
	}
	cases := []struct {
		name string
		f    func() error
	}{
		{"fork/exec true", plain},
		{"minimal bwrap", minimal},
		{"ours, no network", ours(m, false)},
		{"ours, full, prlimit", ours(mp, true)},
		{"ours, full (proxy+forwarder)", ours(m, true)},
	}
	medians := map[string]time.Duration{}
	// Interleave the cases so that load on the machine hits them alike.
	samples := make([][]time.Duration, len(cases))
	for _, c := range cases { // warm up
		if err := c.f(); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2)) // fixed seed: the same order every run
	order := make([]int, len(cases))
	for i := range order {
		order[i] = i
	}
	for range n {
		// A fresh order each round: a sandbox's network namespace is torn
		// down asynchronously and slows whatever starts next.
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, i := range order {
			c := cases[i]
			start := time.Now()
			if err := c.f(); err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			samples[i] = append(samples[i], time.Since(start))
		}
	}
	for i, c := range cases {
		s := stats(samples[i])
		medians[c.name] = s.median
		fmt.Fprintf(w, "%-30s median %7.2f ms  p10 %7.2f ms  p90 %7.2f ms\n", c.name, ms(s.median), ms(s.p10), ms(s.p90))
	}
	for _, c := range []struct {
		name string
		f    func() error
	}{{"minimal bwrap", minimal}, {"ours, full (proxy+forwarder)", ours(m, true)}} {
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, concurrent)
		for range concurrent {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := c.f(); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return fmt.Errorf("%d concurrent %s: %w", concurrent, c.name, err)
		}
		el := time.Since(start)
		fmt.Fprintf(w, "%d concurrent %-27s %8.1f ms total  %6.2f ms per sandbox\n", concurrent, c.name, ms(el), ms(el)/float64(concurrent))
	}
	fmt.Fprintf(w, "ratio=%.2f\n", float64(medians["ours, full (proxy+forwarder)"])/float64(medians["minimal bwrap"]))
	return nil
}

type summary struct{ median, p10, p90 time.Duration }

func stats(d []time.Duration) summary {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	at := func(q float64) time.Duration { return s[int(q*float64(len(s)-1))] }
	return summary{at(0.5), at(0.1), at(0.9)}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
