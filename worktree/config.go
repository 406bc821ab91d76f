package worktree

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/crypto/ssh"
)

// DefaultProtected is the protected path list used when Config.Protected is nil.
var DefaultProtected = []string{".github/workflows/**"}

// Config configures a Manager. Every field documents its zero-value default.
type Config struct {
	// MirrorDir holds one bare mirror per repository. Required.
	MirrorDir string
	// TaskDir holds one directory per task: TaskDir/<task-id>/work is the
	// clone, TaskDir/<task-id>/task.json its metadata. Required.
	TaskDir string
	// Logger receives operational logs (derive it with a component
	// attribute); nil discards them.
	Logger *slog.Logger
	// Protected lists glob patterns ("**" spans directories) of paths a
	// task may not change unless CommitRequest.AllowProtected is set.
	// nil means DefaultProtected; an empty non-nil slice protects nothing.
	Protected []string
	// Retention is how long a finished task clone (one GC's live callback
	// reports as not live) is kept after its last use. Zero means 24h;
	// negative means remove at the next GC.
	Retention time.Duration
	// MirrorRetention is how long a mirror no task clone uses is kept after
	// its last fetch. Zero means 7 days; negative means remove at the next GC.
	MirrorRetention time.Duration
	// MaxMirrorPacks is how many packfiles a mirror may collect (one per
	// fetch that brought objects) before GC repacks it into one; zero
	// means 20, negative disables repacking.
	MaxMirrorPacks int
	// MaxFileSize is the largest file Commit and Diff will read from a
	// worktree; zero means 100 MiB (GitHub's hard limit).
	MaxFileSize int64
	// MaxCommitBytes caps what one Commit (or Diff) may add: the summed
	// size of the new and changed files it reads whose content the mirror
	// does not already have, sparse files counted at their apparent size.
	// The walk stops with a *LimitError (ErrCommitTooLarge) before reading
	// past it. Zero means 1 GiB.
	MaxCommitBytes int64
	// HTTPClient is used for http(s) remotes; nil means a client with no
	// overall timeout (operations are bounded by their context).
	HTTPClient *http.Client
	// SSHHostKeyCallback verifies SSH host keys when Auth.SSHKnownHosts is
	// empty; nil means SSH remotes require Auth.SSHKnownHosts.
	SSHHostKeyCallback ssh.HostKeyCallback
	// CheckoutWorkers is the number of goroutines writing files during
	// checkout; zero means GOMAXPROCS (at least 2).
	CheckoutWorkers int
	// FetchTimeout bounds a mirror fetch when the caller's context has no
	// deadline; zero means 10 minutes.
	FetchTimeout time.Duration
	// PushTimeout bounds a push when the caller's context has no deadline;
	// zero means 5 minutes.
	PushTimeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// ForbiddenDirs are directories no local repository (a path or file://
	// URL given as Ref.Repo or PushRequest.Remote) may resolve under, with
	// symlinks evaluated; such a repository is refused with
	// ErrForbiddenRepo. MirrorDir and TaskDir are always forbidden: a task
	// must not fetch from or push to another task's clone or a mirror.
	// nil forbids only those two.
	ForbiddenDirs []string
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Protected == nil {
		c.Protected = append([]string(nil), DefaultProtected...)
	}
	if c.Retention == 0 {
		c.Retention = 24 * time.Hour
	}
	if c.MirrorRetention == 0 {
		c.MirrorRetention = 7 * 24 * time.Hour
	}
	if c.MaxMirrorPacks == 0 {
		c.MaxMirrorPacks = 20
	}
	if c.MaxFileSize <= 0 {
		c.MaxFileSize = 100 << 20
	}
	if c.MaxCommitBytes <= 0 {
		c.MaxCommitBytes = 1 << 30
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{}
	}
	if c.CheckoutWorkers <= 0 {
		c.CheckoutWorkers = max(runtime.GOMAXPROCS(0), 2)
	}
	if c.FetchTimeout <= 0 {
		c.FetchTimeout = 10 * time.Minute
	}
	if c.PushTimeout <= 0 {
		c.PushTimeout = 5 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.MirrorDir != "" {
		if abs, err := filepath.Abs(c.MirrorDir); err == nil {
			c.MirrorDir = abs
		}
	}
	if c.TaskDir != "" {
		if abs, err := filepath.Abs(c.TaskDir); err == nil {
			c.TaskDir = abs
		}
	}
	return c
}

func (c Config) validate() error {
	if c.MirrorDir == "" {
		return errors.New("worktree: config: MirrorDir is required")
	}
	if c.TaskDir == "" {
		return errors.New("worktree: config: TaskDir is required")
	}
	if c.MirrorDir == c.TaskDir {
		return errors.New("worktree: config: MirrorDir and TaskDir must differ")
	}
	for _, p := range c.Protected {
		if err := validGlob(p); err != nil {
			return fmt.Errorf("worktree: config: Protected %q: %w", p, err)
		}
	}
	return nil
}
