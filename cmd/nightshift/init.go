package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"

	"github.com/nightshift/nightshift/vault"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func runVersion(ctx context.Context, a *app, args []string) error {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok && v == "dev" {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v = "dev-" + s.Value[:12]
			}
		}
	}
	fmt.Fprintln(a.stdout, "nightshift", v)
	return nil
}

const starterConfig = `# nightshift.yaml: every key is optional. See the README for the reference.
listen: 127.0.0.1:8080
data_dir: ./.nightshift
sandbox:
  driver: bwrap            # process = no isolation, explicit opt-in
default_agent: claude
agents:
  claude: {command: [claude]}
  # fixer: {command: [sh, -c, "your-agent --prompt \"$NIGHTSHIFT_PROMPT\""]}
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
	fs.SetOutput(a.stderr)
	dir := fs.String("dir", ".", "where to write nightshift.yaml")
	if err := fs.Parse(args); err != nil {
		return usageErrorf("%v", err)
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
