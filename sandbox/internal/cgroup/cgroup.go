// Package cgroup gives each sandbox its own cgroup with memory and pids
// limits, when the host lets this process create one: a cgroup v2 subtree
// (a delegated parent, or the root of a cgroup namespace), or else the
// cgroup v1 memory and pids hierarchies when they are writable (root on a
// legacy or hybrid host). When neither works the caller falls back to
// prlimit.
package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Modes reported by Hierarchy.Mode.
const (
	ModeV2   = "cgroup2"
	ModeV1   = "cgroup1"
	ModeNone = "prlimit"
)

// ErrUnavailable reports that no writable cgroup hierarchy was found.
var ErrUnavailable = errors.New("cgroup: no delegated cgroup hierarchy")

// Hierarchy is where sandbox cgroups are created.
type Hierarchy struct {
	mu     sync.Mutex
	free   []*Group
	closed bool
	mode   string
	v2     string // parent dir with memory and pids enabled for children
	memory string // v1 parent dirs
	pids   string
}

// Mode returns ModeV2, ModeV1 or ModeNone.
func (h *Hierarchy) Mode() string {
	if h == nil {
		return ModeNone
	}
	return h.mode
}

// Detect finds a usable hierarchy. parent, when set, is a cgroup v2
// directory delegated to this process (e.g. systemd Delegate=yes); it must
// not contain processes itself. The error explains why none was usable.
func Detect(parent string) (*Hierarchy, error) {
	if parent != "" {
		if err := prepareV2(parent); err != nil {
			return nil, fmt.Errorf("cgroup: parent %s: %w", parent, err)
		}
		h := &Hierarchy{mode: ModeV2, v2: parent}
		h.sweep()
		return h, nil
	}
	mounts, own, err := readMounts()
	if err != nil {
		return nil, err
	}
	var why []string
	if root, ok := mounts["cgroup2"]; ok {
		dir := filepath.Join(root, own[""], "nightshift-sandbox")
		if err := prepareV2Child(dir); err == nil {
			h := &Hierarchy{mode: ModeV2, v2: dir}
			h.sweep()
			return h, nil
		} else {
			why = append(why, "cgroup2: "+err.Error())
		}
	}
	mem, okm := mounts["memory"]
	pids, okp := mounts["pids"]
	if okm && okp {
		h := &Hierarchy{mode: ModeV1,
			memory: filepath.Join(mem, own["memory"], "nightshift-sandbox"),
			pids:   filepath.Join(pids, own["pids"], "nightshift-sandbox")}
		err := errors.Join(os.MkdirAll(h.memory, 0o755), os.MkdirAll(h.pids, 0o755))
		if err == nil {
			err = errors.Join(writable(h.memory), writable(h.pids))
		}
		if err == nil {
			h.sweep()
			return h, nil
		} else {
			why = append(why, "cgroup1: "+err.Error())
		}
	} else {
		why = append(why, "cgroup1: memory and pids controllers not mounted")
	}
	return nil, fmt.Errorf("%w (%s)", ErrUnavailable, strings.Join(why, "; "))
}

func writable(dir string) error {
	if err := syscall.Access(dir, 2 /* W_OK */); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	return nil
}

// prepareV2 enables memory and pids for the children of dir.
func prepareV2(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return err
	}
	have := strings.Fields(string(b))
	for _, c := range []string{"memory", "pids"} {
		if !contains(have, c) {
			return fmt.Errorf("controller %s not delegated (have %q)", c, strings.TrimSpace(string(b)))
		}
	}
	b, _ = os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	on := strings.Fields(string(b))
	if contains(on, "memory") && contains(on, "pids") {
		return nil
	}
	return os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+memory +pids"), 0)
}

// prepareV2Child creates dir under a parent that can delegate memory and
// pids to it, then enables them for dir's own children.
func prepareV2Child(dir string) error {
	parent := filepath.Dir(dir)
	if err := prepareV2(parent); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
		return err
	}
	if err := writable(dir); err != nil {
		return err
	}
	return prepareV2(dir)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// readMounts returns the mount points of the cgroup2 ("cgroup2") and v1
// memory/pids hierarchies, and this process's path in each ("" for v2).
func readMounts() (map[string]string, map[string]string, error) {
	mounts := map[string]string{}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		pre, post, ok := strings.Cut(s.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 {
			continue
		}
		switch qf[0] {
		case "cgroup2":
			mounts["cgroup2"] = pf[4]
		case "cgroup":
			for _, opt := range strings.Split(qf[2], ",") {
				if opt == "memory" || opt == "pids" {
					mounts[opt] = pf[4]
				}
			}
		}
	}
	own := map[string]string{}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, nil, err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			own[""] = parts[2]
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "memory" || c == "pids" {
				own[c] = parts[2]
			}
		}
	}
	return mounts, own, nil
}

// Group is one sandbox's cgroup (one directory per hierarchy). Groups are
// pooled: creating and removing a memory cgroup costs milliseconds, so an
// empty group is reused for the next sandbox with fresh limits.
type Group struct {
	h       *Hierarchy
	v2      bool
	dirs    []string // v2: one; v1: memory, pids
	oomBase int      // oom_kill count when acquired
}

const poolMax = 32

// Acquire returns an empty group with the given limits (0 = unlimited).
func (h *Hierarchy) Acquire(memory int64, pids int) (*Group, error) {
	if h == nil || h.mode == ModeNone {
		return nil, ErrUnavailable
	}
	h.mu.Lock()
	var g *Group
	if n := len(h.free); n > 0 {
		g, h.free = h.free[n-1], h.free[:n-1]
	}
	h.mu.Unlock()
	if g == nil {
		var err error
		// The sequence is process-wide: several Managers (and so several
		// hierarchies) in one process must not pick the same name.
		if g, err = h.create(fmt.Sprintf("sb-%d-%d", os.Getpid(), processSeq.Add(1))); err != nil {
			return nil, err
		}
	}
	if err := g.setLimits(memory, pids); err != nil {
		g.remove()
		return nil, err
	}
	g.oomBase = g.oomKills()
	return g, nil
}

func (h *Hierarchy) create(name string) (*Group, error) {
	g := &Group{h: h, v2: h.mode == ModeV2}
	parents := []string{h.v2}
	if !g.v2 {
		parents = []string{h.memory, h.pids}
	}
	for _, p := range parents {
		dir := filepath.Join(p, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			g.remove()
			return nil, err
		}
		g.dirs = append(g.dirs, dir)
	}
	if g.v2 {
		// memory.oom.group kills the whole tree on OOM, not one process.
		os.WriteFile(filepath.Join(g.dirs[0], "memory.oom.group"), []byte("1"), 0)
	}
	return g, nil
}

func (g *Group) setLimits(memory int64, pids int) error {
	write := func(dir, file, val string) error {
		return os.WriteFile(filepath.Join(dir, file), []byte(val), 0)
	}
	mem, pidsVal := "max", "max"
	if memory > 0 {
		mem = strconv.FormatInt(memory, 10)
	}
	if pids > 0 {
		pidsVal = strconv.Itoa(pids)
	}
	if g.v2 {
		err := errors.Join(write(g.dirs[0], "memory.max", mem), write(g.dirs[0], "pids.max", pidsVal))
		write(g.dirs[0], "memory.swap.max", "0")
		return err
	}
	if memory <= 0 {
		mem = "-1"
	}
	// memsw (when swap accounting exists) must stay >= the memory limit:
	// lift it first, set the memory limit, then bring memsw down to it.
	write(g.dirs[0], "memory.memsw.limit_in_bytes", "-1")
	err := errors.Join(write(g.dirs[0], "memory.limit_in_bytes", mem), write(g.dirs[1], "pids.max", pidsVal))
	write(g.dirs[0], "memory.memsw.limit_in_bytes", mem)
	return err
}

// Add moves the process pid (with its threads) into the group. Processes it
// forks afterwards are born inside.
func (g *Group) Add(pid int) error {
	for _, d := range g.dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			return err
		}
	}
	return nil
}

// Procs returns the pids in the group.
func (g *Group) Procs() []int {
	b, err := os.ReadFile(filepath.Join(g.dirs[len(g.dirs)-1], "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			pids = append(pids, n)
		}
	}
	return pids
}

// Kill kills every process in the group.
func (g *Group) Kill() {
	if g.v2 {
		if err := os.WriteFile(filepath.Join(g.dirs[0], "cgroup.kill"), []byte("1"), 0); err == nil {
			return
		}
	}
	for _, pid := range g.Procs() {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

func (g *Group) oomKills() int {
	file := "memory.oom_control"
	if g.v2 {
		file = "memory.events"
	}
	b, err := os.ReadFile(filepath.Join(g.dirs[0], file))
	if err != nil {
		return 0
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if f := strings.Fields(string(line)); len(f) == 2 && f[0] == "oom_kill" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// OOMKilled reports whether the kernel's OOM killer killed a process in
// the group since it was acquired.
func (g *Group) OOMKilled() bool { return g.oomKills() > g.oomBase }

// Release kills what is left, waits until the group is empty and returns it
// to the pool (or removes it when the pool is full).
func (g *Group) Release() error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		g.Kill()
		if len(g.Procs()) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup: %s still has processes", g.dirs[0])
		}
		time.Sleep(5 * time.Millisecond) // kernel teardown; nothing to wait on in v1
	}
	h := g.h
	h.mu.Lock()
	if !h.closed && len(h.free) < poolMax {
		h.free = append(h.free, g)
		h.mu.Unlock()
		return nil
	}
	h.mu.Unlock()
	return g.remove()
}

func (g *Group) remove() error {
	var errs []error
	for i := len(g.dirs) - 1; i >= 0; i-- {
		var err error
		for range 100 { // rmdir races the last exits' accounting
			if err = os.Remove(g.dirs[i]); err == nil || os.IsNotExist(err) {
				err = nil
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Close removes the pooled groups. Groups released later are removed.
func (h *Hierarchy) Close() error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	free := h.free
	h.free, h.closed = nil, true
	h.mu.Unlock()
	var errs []error
	for _, g := range free {
		errs = append(errs, g.remove())
	}
	return errors.Join(errs...)
}

// sweep removes empty groups left by processes that are gone.
func (h *Hierarchy) sweep() {
	parents := []string{h.v2}
	if h.mode == ModeV1 {
		parents = []string{h.pids, h.memory}
	}
	for _, p := range parents {
		ents, _ := os.ReadDir(p)
		for _, e := range ents {
			rest, ok := strings.CutPrefix(e.Name(), "sb-")
			if !e.IsDir() || !ok {
				continue
			}
			pidStr, _, _ := strings.Cut(rest, "-")
			if pid, err := strconv.Atoi(pidStr); err == nil && syscall.Kill(pid, 0) == syscall.ESRCH {
				os.Remove(filepath.Join(p, e.Name())) // fails, harmlessly, when not empty
			}
		}
	}
}

// processSeq numbers sandbox cgroups created by this process.
var processSeq atomic.Int64
