package giteatest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Version is the Gitea release the tests run against.
const Version = "v1.27.3"

// ErrUnavailable wraps every reason the Gitea binary could not be had (no
// Go toolchain, no module proxy, a failed build). Tests skip on it, naming
// the reason; any other error fails them.
var ErrUnavailable = errors.New("giteatest: gitea binary unavailable")

// Dir is the cache directory of the built binary and its source copy:
// $NIGHTSHIFT_GITEA_DIR, else $TMPDIR/nightshift-gitea-<Version>. It is
// the directory scripts/gitea builds into.
func Dir() string {
	if d := os.Getenv("NIGHTSHIFT_GITEA_DIR"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "nightshift-gitea-"+Version)
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Binary returns the path of the cached Gitea binary, building it with
// scripts/gitea first when the cache is empty (minutes; the script holds
// a lock so concurrent test processes build once). The source copy the
// binary reads options/, templates/ and public/ from is Dir()/src.
func Binary() (string, error) {
	binOnce.Do(func() { binPath, binErr = binary() })
	return binPath, binErr
}

func binary() (string, error) {
	dir := Dir()
	bin := filepath.Join(dir, "gitea")
	if cached(dir) {
		return bin, nil
	}
	script, err := findScript()
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", script)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Env = append(os.Environ(), "NIGHTSHIFT_GITEA_DIR="+dir)
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%w: %s failed: %v: %s", ErrUnavailable, script, err, tail(stderr.String(), 2000))
	}
	if got := strings.TrimSpace(string(out)); got != bin || !cached(dir) {
		return "", fmt.Errorf("%w: %s printed %q, want %s", ErrUnavailable, script, got, bin)
	}
	return bin, nil
}

// cached reports whether dir holds a finished build.
func cached(dir string) bool {
	st, err := os.Stat(filepath.Join(dir, "gitea"))
	if err != nil || st.Mode()&0o111 == 0 {
		return false
	}
	_, err = os.Stat(filepath.Join(dir, "src", ".copied"))
	return err == nil
}

// findScript walks up from the working directory to the module root and
// returns its scripts/gitea.
func findScript() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			s := filepath.Join(d, "scripts", "gitea")
			if _, err := os.Stat(s); err != nil {
				return "", fmt.Errorf("module root %s has no scripts/gitea", d)
			}
			return s, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s", wd)
		}
	}
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
