package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/nightshift/nightshift/vault"
)

// version overrides the version from the build info when set at build
// time with -ldflags "-X main.version=v1.2.3" (a distribution's own tag).
var version string

const versionUsage = `usage: nightshift version [--json]
       nightshift --version

Prints the module version from the build information, with the VCS
revision and commit time when the binary was built from a checkout
(a "(devel)" build prints its revision). --json prints the fields.

examples:
  nightshift version
  nightshift --version --json`

// buildVersion is what "nightshift version" reports.
type buildVersion struct {
	Version  string `json:"version"`
	Revision string `json:"revision,omitempty"`
	Time     string `json:"time,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go,omitempty"`
}

// versionOf reads the version from the build info (nil: none) and the
// -X override.
func versionOf(bi *debug.BuildInfo, override string) buildVersion {
	v := buildVersion{Version: "(devel)"}
	if bi != nil {
		if bi.Main.Version != "" {
			v.Version = bi.Main.Version
		}
		v.Go = bi.GoVersion
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Revision = s.Value
			case "vcs.time":
				v.Time = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	if override != "" {
		v.Version = override
	}
	return v
}

// String is the one line "nightshift version" prints.
func (v buildVersion) String() string {
	s := "nightshift " + v.Version
	var extra []string
	if v.Revision != "" {
		rev := v.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if v.Modified {
			rev += "+dirty"
		}
		extra = append(extra, "revision "+rev)
	}
	if v.Time != "" {
		extra = append(extra, v.Time)
	}
	if len(extra) > 0 {
		s += " (" + strings.Join(extra, ", ") + ")"
	}
	return s
}

func runVersion(ctx context.Context, a *app, args []string) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(a, fs, "version", args, nil)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErrorf("version: unexpected argument %q", pos[0])
	}
	bi, _ := debug.ReadBuildInfo()
	v := versionOf(bi, version)
	if *asJSON {
		return printJSON(a.stdout, v)
	}
	fmt.Fprintln(a.stdout, v)
	return nil
}

const initUsage = `usage: nightshift init [--dir DIR]

Writes a starter DIR/nightshift.yaml and creates the vault key
DIR/.nightshift/vault.key (keep it secret and backed up). Refuses to
overwrite an existing nightshift.yaml.

examples:
  nightshift init
  nightshift init --dir /etc/nightshift`

const starterConfig = `# nightshift.yaml: every key is optional. See the README for the reference.
listen: 127.0.0.1:8080
data_dir: ./.nightshift
sandbox:
  driver: bwrap            # process = no isolation, explicit opt-in
# default_agent: claude   # the default; name any agent below
agents:
  claude: {command: [claude]}
  # fixer: {command: [sh, -c, "your-agent --prompt-file \"$NIGHTSHIFT_PROMPT_FILE\""]}   # or read the prompt on stdin
repos:
  - match: "*"
    # setup: "go mod download"
    # test: "go test ./..."
    # allow_hosts: [proxy.golang.org]
    timeout: 30m
# github:
#   webhook_secrets: ["${vault:GITHUB_WEBHOOK_SECRET}"]
#   token: ${vault:GITHUB_TOKEN}
# models:
#   anthropic: {api_key: "${vault:ANTHROPIC_API_KEY}"}
`

func runInit(ctx context.Context, a *app, args []string) error {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	dir := fs.String("dir", ".", "where to write nightshift.yaml")
	pos, err := parseFlags(a, fs, "init", args, nil)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErrorf("init: unexpected argument %q (use --dir DIR)", pos[0])
	}
	path := filepath.Join(*dir, "nightshift.yaml")
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("%s already exists; not overwriting it", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, []byte(starterConfig), 0o644); err != nil {
		return err
	}
	dataDir := filepath.Join(*dir, ".nightshift")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	keyPath := filepath.Join(dataDir, "vault.key")
	if _, err := vault.FileKey(keyPath, nil).RootKey(ctx); err != nil {
		return fmt.Errorf("create vault key: %w", err)
	}
	fmt.Fprintf(a.stdout, "wrote %s and %s (keep the key secret and backed up: without it the vault cannot be read)\n", path, keyPath)
	return nil
}
