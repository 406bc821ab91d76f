package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/vault"
)

const vaultUsage = `usage: nightshift vault <command> [flags]

commands:
  set NAME [--scope SCOPE]              store a new version; the value is read from stdin
                                         (default scope server: no agent can read it)
  get NAME [--scope SCOPE] [--version N] print a value (--json for metadata too)
  ls                                     list secrets and versions (no values)
  rm NAME [--scope SCOPE] [--version N]  destroy one version, or all of them
  rotate-key [--root]                    new key-encryption key (or new root key)
  audit [--verify] [--name NAME] [--limit N]  show or verify the audit log

common flags: --data-dir DIR (default ./.nightshift, env NIGHTSHIFT_DATA_DIR), --json,
  --nats URL (env NIGHTSHIFT_NATS_URL): the vault of a NATS cluster (serve with nats.url) instead of
  the data dir's; this host's root key opens it (every host is given the same key)
root key: NIGHTSHIFT_VAULT_KEY (hex/base64 of 32 bytes), else NIGHTSHIFT_VAULT_PASSPHRASE,
else the key file DIR/vault.key (created on first use).
scopes:
  server              read only by the server: ${vault:NAME} in nightshift.yaml (the default;
                      "global", its old name, is an alias). Never given to an agent.
  agents              every agent
  repo:<glob>         tasks on matching repositories (the globs of repos[].match)
  agent:<name>        tasks run by that agent
  task:<id>           one task
Agents read what their task is granted with MCP get_secret, ravi secrets get, or
${vault:NAME} in agents.<name>.env; the most specific scope wins.
`

// runVault works on the data directory directly, so secrets never travel
// over the HTTP API.
func runVault(ctx context.Context, a *app, args []string) error {
	sub, args := args[0], args[1:]
	fl := flag.NewFlagSet("vault "+sub, flag.ContinueOnError)
	dataDir := fl.String("data-dir", "", "data directory (default ./.nightshift, env NIGHTSHIFT_DATA_DIR)")
	jsonOut := fl.Bool("json", false, "print JSON")
	scope := fl.String("scope", vault.ScopeServer, "scope: server, agents, repo:<glob>, agent:<name>, task:<id>")
	version := fl.Int("version", 0, "version number (0: latest for get, all for rm)")
	verify := fl.Bool("verify", false, "verify the audit hash chain")
	name := fl.String("name", "", "only audit entries for this secret")
	limit := fl.Int("limit", 100, "audit entries to show (newest)")
	root := fl.Bool("root", false, "rotate the root key instead of the key-encryption key")
	raw := fl.Bool("raw", false, "set: keep a trailing newline; get: print the value without adding one")
	natsURL := fl.String("nats", "", "the vault of the NATS cluster at URL (env NIGHTSHIFT_NATS_URL; default: the data dir's)")
	pos, err := parseFlags(a, fl, "vault "+sub, args, nil)
	if err != nil {
		return err
	}
	if *dataDir == "" {
		*dataDir = a.getenv("NIGHTSHIFT_DATA_DIR")
	}
	if *dataDir == "" {
		*dataDir = ".nightshift"
	}
	if *natsURL == "" {
		*natsURL = a.getenv("NIGHTSHIFT_NATS_URL")
	}
	wantArgs := map[string]int{"set": 1, "get": 1, "rm": 1, "ls": 0, "rotate-key": 0, "audit": 0}
	n, ok := wantArgs[sub]
	if !ok {
		return usageErrorf("vault: unknown command %q", sub)
	}
	if len(pos) != n {
		return usageErrorf("vault %s: want %d argument(s), got %d", sub, n, len(pos))
	}
	if *version < 0 || *limit < 0 {
		return usageErrorf("vault %s: --version and --limit must not be negative", sub)
	}
	if n == 1 {
		if err := vault.ValidateName(pos[0]); err != nil {
			return usageErrorf("%v", err)
		}
	}
	if err := vault.ValidateScope(*scope); err != nil {
		return usageErrorf("%v", err)
	}
	*scope = vault.CanonicalScope(*scope)

	// Read the value before touching the data directory.
	var value []byte
	if sub == "set" {
		value, err = io.ReadAll(io.LimitReader(a.stdin, vault.MaxValueSize+1))
		if err != nil {
			return fmt.Errorf("vault set: read value from stdin: %w", err)
		}
		if len(value) > vault.MaxValueSize {
			return fmt.Errorf("vault set: value is larger than 1 MiB")
		}
		if !*raw {
			value = vaultTrimNewline(value)
		}
		if len(value) == 0 {
			return usageErrorf("vault set: empty value on stdin")
		}
	}

	dbPath := filepath.Join(*dataDir, "nightshift.db")
	if sub != "set" && *natsURL == "" {
		if _, err := os.Stat(dbPath); errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("no vault in %s (set a secret or run nightshift init first)", *dataDir)
		}
	}
	if err := os.MkdirAll(*dataDir, 0o700); err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	keys, choice := vault.SelectKeySource(*dataDir, a.getenv("NIGHTSHIFT_VAULT_KEY_FILE"), a.getenv("NIGHTSHIFT_VAULT_KEY"), a.getenv("NIGHTSHIFT_VAULT_PASSPHRASE"), logger)
	// The same database the server uses (the vault sets secure_delete on
	// its own connections).
	db, err := orchestrator.OpenDB(dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	v, closeVault, err := openCLIVault(ctx, a, db, *natsURL, keys, logger)
	if err != nil {
		next := filepath.Join(*dataDir, "vault.key.new")
		if _, serr := os.Stat(next); errors.Is(err, vault.ErrWrongKey) && choice == vault.KeyFromFile && serr == nil {
			return fmt.Errorf("%w (an interrupted root key rotation left %s: if it opens the vault, rename it to vault.key)", err, next)
		}
		if errors.Is(err, vault.ErrMoved) {
			return fmt.Errorf("%w: pass --nats URL (or set NIGHTSHIFT_NATS_URL)", err)
		}
		return err
	}
	defer closeVault()
	actor := vault.Actor{Kind: vault.ActorOperator, ID: vaultOperator(a)}

	switch sub {
	case "set":
		ver, err := v.Set(ctx, actor, pos[0], *scope, value)
		clear(value)
		if err != nil {
			return err
		}
		if *jsonOut {
			return vaultWriteJSON(a.stdout, map[string]any{"name": pos[0], "scope": *scope, "version": ver})
		}
		fmt.Fprintf(a.stdout, "%s (%s) version %d\n", pos[0], *scope, ver)
	case "get":
		sec, err := v.Read(ctx, actor, pos[0], *scope, *version)
		if err != nil {
			return err
		}
		val := sec.Value
		if *jsonOut {
			return vaultWriteJSON(a.stdout, map[string]any{"name": sec.Name, "scope": sec.Scope, "version": sec.Version, "value": string(val)})
		}
		a.stdout.Write(val)
		if !*raw && (len(val) == 0 || val[len(val)-1] != '\n') {
			fmt.Fprintln(a.stdout)
		}
	case "ls":
		list, err := v.List(ctx, actor)
		if err != nil {
			return err
		}
		if *jsonOut {
			if list == nil {
				list = []vault.Info{}
			}
			return vaultWriteJSON(a.stdout, list)
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tSCOPE\tLATEST\tVERSIONS\tUPDATED")
		for _, in := range list {
			live := 0
			for _, vi := range in.Versions {
				if vi.DestroyedAt == nil {
					live++
				}
			}
			last := in.Versions[len(in.Versions)-1].CreatedAt.Format(time.RFC3339)
			latest := fmt.Sprint(in.Latest)
			if in.Latest == 0 {
				latest = "destroyed"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d live / %d\t%s\n", in.Name, in.Scope, latest, live, len(in.Versions), last)
		}
		return tw.Flush()
	case "rm":
		n, err := v.Destroy(ctx, actor, pos[0], *scope, *version)
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "destroyed %d version(s) of %s (%s)\n", n, pos[0], *scope)
	case "rotate-key":
		if *root {
			return rotateRoot(ctx, a, v, actor, choice, *dataDir)
		}
		id, n, err := v.RotateKEK(ctx, actor)
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "key-encryption key %d in use; %d data key(s) re-wrapped\n", id, n)
	case "audit":
		if *verify {
			rep, err := v.VerifyAudit(ctx, actor)
			if err != nil {
				return err
			}
			if *jsonOut {
				if rep.Problems == nil {
					rep.Problems = []vault.AuditProblem{}
				}
				if err := vaultWriteJSON(a.stdout, rep); err != nil {
					return err
				}
			} else {
				for _, p := range rep.Problems {
					fmt.Fprintf(a.stdout, "row %d: %s: %s\n", p.Seq, p.Kind, p.Detail)
				}
				if rep.OK() {
					fmt.Fprintf(a.stdout, "audit chain intact: %d rows\n", rep.Rows)
				}
			}
			if !rep.OK() {
				return fmt.Errorf("audit chain broken: %d problem(s), first at row %d (%s)", len(rep.Problems), rep.Problems[0].Seq, rep.Problems[0].Kind)
			}
			return nil
		}
		entries, err := v.AuditLog(ctx, actor, vault.AuditFilter{Name: *name, Limit: *limit})
		if err != nil {
			return err
		}
		if *jsonOut {
			if entries == nil {
				entries = []vault.AuditEntry{}
			}
			return vaultWriteJSON(a.stdout, entries)
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tAT\tWHO\tACTION\tSECRET\tOUTCOME\tDETAIL")
		for _, e := range entries {
			secret := e.Name
			if secret != "" {
				secret = fmt.Sprintf("%s (%s) v%d", e.Name, e.Scope, e.Version)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s:%s\t%s\t%s\t%s\t%s\n", e.Seq, e.At.Format(time.RFC3339), e.ActorKind, e.ActorID, e.Action, secret, e.Outcome, e.Detail)
		}
		return tw.Flush()
	}
	return nil
}

// rotateRoot replaces the root key. For the key file the new key is written
// to vault.key.new first, the vault re-sealed, then the file renamed over
// vault.key; if the rename never happens, vault.key.new holds the key.
func rotateRoot(ctx context.Context, a *app, v *vault.Vault, actor vault.Actor, choice vault.KeyChoice, dataDir string) error {
	switch choice {
	case vault.KeyFromEnv:
		next := a.getenv("NIGHTSHIFT_VAULT_NEW_KEY")
		if next == "" {
			return usageErrorf("vault rotate-key --root: set NIGHTSHIFT_VAULT_NEW_KEY to the new key (hex or base64 of 32 bytes)")
		}
		if err := v.RotateRoot(ctx, actor, vault.EnvKey(next)); err != nil {
			return err
		}
		fmt.Fprintln(a.stdout, "root key rotated; set NIGHTSHIFT_VAULT_KEY to the new key and restart servers")
	case vault.KeyFromPassphrase:
		next := a.getenv("NIGHTSHIFT_VAULT_NEW_PASSPHRASE")
		if next == "" {
			return usageErrorf("vault rotate-key --root: set NIGHTSHIFT_VAULT_NEW_PASSPHRASE to the new passphrase")
		}
		salt := filepath.Join(dataDir, "vault.salt")
		os.Remove(salt + ".new")
		if err := v.RotateRoot(ctx, actor, vault.PassphraseKey([]byte(next), salt+".new")); err != nil {
			return err
		}
		if err := os.Rename(salt+".new", salt); err != nil {
			return fmt.Errorf("root key rotated but %s.new could not replace %s: %w (rename it by hand)", salt, salt, err)
		}
		fmt.Fprintln(a.stdout, "root key rotated; use NIGHTSHIFT_VAULT_PASSPHRASE with the new passphrase and restart servers")
	default:
		path := filepath.Join(dataDir, "vault.key")
		key := make([]byte, vault.KeySize)
		if _, err := rand.Read(key); err != nil {
			return err
		}
		os.Remove(path + ".new")
		if err := vault.WriteKeyFile(path+".new", key); err != nil {
			return err
		}
		if err := v.RotateRoot(ctx, actor, vault.FileKey(path+".new", nil)); err != nil {
			os.Remove(path + ".new")
			return err
		}
		if err := os.Rename(path+".new", path); err != nil {
			return fmt.Errorf("root key rotated but %s.new could not replace %s: %w (rename it by hand)", path, path, err)
		}
		fmt.Fprintf(a.stdout, "root key rotated; %s replaced (back it up again, give it to every host that opens the vault) and servers must restart\n", path)
	}
	return nil
}

func vaultTrimNewline(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
		if n := len(b); n > 0 && b[n-1] == '\r' {
			b = b[:n-1]
		}
	}
	return b
}

func vaultOperator(a *app) string {
	for _, k := range []string{"NIGHTSHIFT_OPERATOR", "USER", "LOGNAME"} {
		if s := strings.TrimSpace(a.getenv(k)); s != "" {
			return s
		}
	}
	return "operator"
}

func vaultWriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
