package worktree

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// GC removes task clones whose task is not live (per the callback) once
// they have been unused for Config.Retention, removes half-provisioned
// leftovers of tasks that are not live, and removes mirrors that no task
// clone uses and that were not fetched for Config.MirrorRetention. Call it
// on start to clean orphans and then periodically. A nil live means no
// task is live.
func (m *Manager) GC(ctx context.Context, live func(taskID string) bool) error {
	if live == nil {
		live = func(string) bool { return false }
	}
	now := m.cfg.Now()
	ents, err := os.ReadDir(m.cfg.TaskDir)
	if err != nil {
		return fmt.Errorf("worktree: gc: %w", err)
	}
	var errs []error
	used := map[string]bool{} // mirror dirs still referenced
	for _, e := range ents {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		name := e.Name()
		if !e.IsDir() {
			continue
		}
		if strings.HasPrefix(name, stagingPref) {
			id := strings.TrimPrefix(name, stagingPref)
			if i := strings.LastIndexByte(id, '-'); i > 0 {
				id = id[:i]
			}
			if live(id) || !m.taskLock(id).TryLock() {
				continue
			}
			err := removeAll(filepath.Join(m.cfg.TaskDir, name))
			m.taskLock(id).Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if validTaskID(name) != nil {
			continue
		}
		root := m.taskRoot(name)
		meta, merr := readMeta(root)
		if live(name) {
			if merr == nil {
				used[meta.MirrorDir] = true
			}
			continue
		}
		if merr == nil && now.Sub(meta.UsedAt) < m.cfg.Retention {
			used[meta.MirrorDir] = true
			continue
		}
		l := m.taskLock(name)
		if !l.TryLock() {
			if merr == nil {
				used[meta.MirrorDir] = true
			}
			continue
		}
		err := removeAll(root)
		l.Unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("remove task %s: %w", name, err))
			continue
		}
		m.log.LogAttrs(ctx, slog.LevelInfo, "worktree collected", slog.String("task_id", name))
	}
	mirrors, err := os.ReadDir(m.cfg.MirrorDir)
	if err != nil {
		return fmt.Errorf("worktree: gc: %w", err)
	}
	for _, e := range mirrors {
		if !e.IsDir() || !strings.HasSuffix(e.Name(), ".git") {
			continue
		}
		dir := filepath.Join(m.cfg.MirrorDir, e.Name())
		if used[dir] {
			if err := m.repack(ctx, dir); err != nil {
				errs = append(errs, fmt.Errorf("repack mirror %s: %w", e.Name(), err))
			}
			continue
		}
		var ms mirrorState
		if b, err := os.ReadFile(filepath.Join(dir, mirrorStateFile)); err == nil {
			_ = json.Unmarshal(b, &ms)
		}
		if !ms.FetchedAt.IsZero() && now.Sub(ms.FetchedAt) < m.cfg.MirrorRetention {
			continue
		}
		l := m.mirrorLock(dir)
		if !l.TryLock() {
			continue
		}
		unlock, ok := tryLockFile(dir + ".lock")
		if !ok {
			l.Unlock()
			continue
		}
		err := removeAll(dir)
		unlock()
		_ = os.Remove(dir + ".lock")
		l.Unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("remove mirror %s: %w", e.Name(), err))
			continue
		}
		m.log.LogAttrs(ctx, slog.LevelInfo, "mirror collected", slog.String("mirror", e.Name()))
	}
	if len(errs) > 0 {
		return fmt.Errorf("worktree: gc: %w", errors.Join(errs...))
	}
	return nil
}

// repack consolidates a mirror's packs once there are more than
// MaxMirrorPacks. It runs native git in the mirror (never in a task clone;
// repack runs no hooks) and keeps unreachable objects, which task clones
// may still need through alternates. Provisions of the mirror wait.
func (m *Manager) repack(ctx context.Context, dir string) error {
	if m.cfg.MaxMirrorPacks < 0 {
		return nil
	}
	packs, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "*.pack"))
	if len(packs) <= m.cfg.MaxMirrorPacks {
		return nil
	}
	l := m.mirrorLock(dir)
	l.Lock()
	defer l.Unlock()
	unlock, err := lockFile(ctx, dir+".lock")
	if err != nil {
		return err
	}
	defer unlock()
	start := m.cfg.Now()
	gitBin, err := exec.LookPath("git")
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, gitBin, "-C", dir, "-c", "core.hooksPath=/dev/null", "-c", "gc.auto=0",
		"repack", "-a", "-d", "-q", "--keep-unreachable")
	cmd.Env = []string{"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null"}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("git repack: %w: %s", err, strings.TrimSpace(string(out)))
	}
	m.log.LogAttrs(ctx, slog.LevelInfo, "mirror repacked", slog.String("mirror", filepath.Base(dir)),
		slog.Int("packs", len(packs)), slog.Duration("took", m.cfg.Now().Sub(start)))
	return nil
}
