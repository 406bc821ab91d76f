package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// app carries what every subcommand may use. Nothing reads the process
// environment or standard streams directly: run receives them, so an
// end-to-end test can drive the whole binary in-process.
type app struct {
	args   []string // os.Args
	env    map[string]string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	// followRetry bounds how long --follow reconnects without hearing
	// from the server; 0 means followRetryFor.
	followRetry time.Duration
}

// getenv returns the value of an environment variable given to run.
func (a *app) getenv(key string) string { return a.env[key] }

// command is one subcommand: it parses its own flags from args.
type command struct {
	summary string
	run     func(ctx context.Context, a *app, args []string) error
	// subs are the sub-commands (tasks ls, vault set, ...); nil when the
	// command has none.
	subs []string
	// globals are the global flags the command understands (server, token,
	// json, data-dir). Given before the command they are passed on to it;
	// the others are ignored there.
	globals []string
	// ownHelp is true when the command's own flag parsing answers -h with
	// its usage on stdout; otherwise run does it from usageOf.
	ownHelp bool
}

var clientGlobals = []string{"server", "token", "json"}

// commands is the subcommand table. Each subcommand lives in its own file.
func commands() map[string]command {
	return map[string]command{
		"serve":       {summary: "run the server (ingress, scheduler, workers)", run: runServe, globals: []string{"data-dir"}},
		"init":        {summary: "write a starter nightshift.yaml and vault key", run: runInit, ownHelp: true},
		"dispatch":    {summary: "create a task", run: runDispatch, globals: clientGlobals, ownHelp: true},
		"tasks":       {summary: "list, show, follow, diff, cancel and retry tasks", run: runTasks, subs: taskSubs, globals: clientGlobals, ownHelp: true},
		"automations": {summary: "list, show, switch and run automations", run: runAutomations, subs: automationSubs, globals: clientGlobals, ownHelp: true},
		"vault":       {summary: "manage encrypted secrets", run: runVault, subs: []string{"set", "get", "ls", "rm", "rotate-key", "audit"}, globals: []string{"data-dir", "json"}},
		"identity":    {summary: "manage agent identities", run: runIdentity, subs: []string{"new", "ls", "show", "inbox", "sms", "otp", "release"}, globals: clientGlobals, ownHelp: true},
		"sandbox":     {summary: "run a command in the configured sandbox", run: runSandbox, subs: []string{"exec", "check"}, globals: []string{"data-dir"}},
		"hooks":       {summary: "replay stored webhook payloads to a server", run: runHooks, subs: []string{"replay"}, globals: []string{"server"}, ownHelp: true},
		"mcp":         {summary: "serve MCP over stdio for an agent inside a sandbox", run: runMCP},
		"ravi":        {summary: "Ravi-compatible identity commands for agents inside a sandbox", run: runRavi},
		"version":     {summary: "print the version", run: runVersion, globals: []string{"json"}, ownHelp: true},
		"completion":  {summary: "print a shell completion script (bash, zsh or fish)", run: runCompletion, ownHelp: true},
	}
}

// multiCall maps the names the binary may be invoked under (argv[0]) to a
// subcommand, so a symlink named ravi inside a sandbox runs "nightshift ravi".
var multiCall = map[string]string{"ravi": "ravi"}

// run is the whole program: parse the global flags, find the command (and
// sub-command), hand it the global flags it understands, run it.
//
// Global flags (--server, --token, --json, --data-dir) may come before the
// command, between the command and its sub-command, or after them; "--"
// ends the flags. -h/--help anywhere before "--" prints the usage.
func run(ctx context.Context, args []string, environ []string, stdin io.Reader, stdout, stderr io.Writer) error {
	a := &app{args: args, env: envMap(environ), stdin: stdin, stdout: stdout, stderr: stderr}
	cmds := commands()
	if len(args) > 0 {
		if sub, ok := multiCall[filepath.Base(args[0])]; ok {
			return cmds[sub].run(ctx, a, args[1:])
		}
	}
	var rest []string
	if len(args) > 1 {
		rest = args[1:]
	}
	g, rest, err := parseGlobals(rest, nil, "")
	if err != nil {
		return err
	}
	if g.version {
		vargs := []string{}
		if g.set["json"] == "true" {
			vargs = append(vargs, "--json")
		}
		return runVersion(ctx, a, vargs)
	}
	if len(rest) == 0 || rest[0] == "help" {
		if len(rest) > 1 {
			return printHelp(a.stdout, strings.Join(rest[1:], " "))
		}
		if g.help || len(rest) > 0 {
			usage(a.stdout, cmds)
			return nil
		}
		usage(a.stderr, cmds)
		return usageErrorf("missing command (run nightshift --help to see the commands)")
	}
	verb := rest[0]
	c, ok := cmds[verb]
	if !ok {
		return usageErrorf("unknown command %q (run nightshift --help to see the commands)", verb)
	}
	if g.help {
		return printHelp(a.stdout, verb)
	}
	rest = rest[1:]
	inject := g.flags(c.globals)
	if c.subs != nil {
		// Global flags between the command and its sub-command.
		between, after, err := parseGlobals(rest, c.globals, verb)
		if err != nil {
			return err
		}
		if between.help || len(after) > 0 && after[0] == "help" {
			key := verb
			if len(after) > 1 && after[0] == "help" {
				key += " " + after[1]
			} else if len(after) > 0 && after[0] != "help" {
				key += " " + after[0] // tasks -h logs
			}
			return printHelp(a.stdout, key)
		}
		if len(after) == 0 {
			return usageErrorf("%s: missing command (want %s; see nightshift %s --help)", verb, strings.Join(c.subs, ", "), verb)
		}
		if !slices.Contains(c.subs, after[0]) && !(verb == "tasks" && after[0] == "list") {
			return usageErrorf("%s: unknown command %q (want %s)", verb, after[0], strings.Join(c.subs, ", "))
		}
		inject = append(inject, between.flags(c.globals)...)
		rest = append(append([]string{after[0]}, inject...), after[1:]...)
	} else {
		rest = append(inject, rest...)
	}
	if !c.ownHelp {
		if err := checkForeignGlobals(verb, c, rest); err != nil {
			return err
		}
	}
	if !c.ownHelp && wantsHelp(rest) {
		key := verb
		if c.subs != nil {
			key += " " + rest[0]
		}
		return printHelp(a.stdout, key)
	}
	if err := c.run(ctx, a, rest); !errors.Is(err, errHelp) {
		return err
	}
	return nil
}

// globalNames are the global flags that take a value, in the order they
// are passed on to a command.
var globalNames = []string{"server", "token", "data-dir", "json"}

// globalFlags are the flags every command may be given before its name.
type globalFlags struct {
	// set holds the value flags given, by name (one of globalNames).
	set           map[string]string
	help, version bool
}

// flags renders the global flags that were set and that the command
// understands (names) as arguments for it.
func (g globalFlags) flags(names []string) []string {
	var out []string
	for _, name := range globalNames {
		if v, ok := g.set[name]; ok && slices.Contains(names, name) {
			out = append(out, "--"+name+"="+v)
		}
	}
	return out
}

// parseGlobals reads global flags from the front of args up to the first
// word that is not a flag (the command) or "--" (after which the next word
// is the command). Before the command (allowed nil) every global flag is
// accepted; between a command and its sub-command (allowed set) only the
// ones the command understands.
func parseGlobals(args []string, allowed []string, verb string) (globalFlags, []string, error) {
	var g globalFlags
	where := "before the command"
	if verb != "" {
		where = verb + ":"
	}
	for len(args) > 0 {
		arg := args[0]
		if arg == "--" {
			return g, args[1:], nil
		}
		if !strings.HasPrefix(arg, "-") || arg == "-" {
			return g, args, nil
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		args = args[1:]
		switch name {
		case "h", "help":
			g.help = true
			continue
		case "version":
			if verb == "" {
				g.version = true
				continue
			}
		case "server", "token", "data-dir", "json":
			if allowed != nil && !slices.Contains(allowed, name) {
				break
			}
			switch {
			case name == "json" && !hasValue:
				value = "true"
			case name == "json" && value != "true" && value != "false":
				return g, nil, usageErrorf("%s --json=%s: want true or false", where, value)
			case !hasValue && len(args) == 0:
				return g, nil, usageErrorf("flag --%s needs a value", name)
			case !hasValue:
				value, args = args[0], args[1:]
			}
			if g.set == nil {
				g.set = map[string]string{}
			}
			g.set[name] = value
			continue
		}
		if verb == "" {
			return g, nil, usageErrorf("unknown flag %s before the command (global flags: --server, --token, --json, --data-dir, --version, --help)", arg)
		}
		return g, nil, usageErrorf("%s unknown flag %s before the sub-command (put it after: nightshift %s <command> %s)", where, arg, verb, arg)
	}
	return g, args, nil
}

// checkForeignGlobals refuses, in one sentence, a global flag given after
// a command that neither understands it nor has a flag of that name (the
// commands whose own parsing would print Go's flag usage instead).
func checkForeignGlobals(verb string, c command, args []string) error {
	own := complFlags[verb]
	if c.subs != nil && len(args) > 0 {
		own = append(slices.Clone(own), complFlags[verb+" "+args[0]]...)
	}
	for _, arg := range args {
		if arg == "--" {
			return nil
		}
		if !strings.HasPrefix(arg, "-") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		switch name {
		case "server", "token", "data-dir", "json":
			if !slices.Contains(c.globals, name) && !slices.Contains(own, name) {
				return usageErrorf("%s: unknown flag --%s (it does not apply to %s)", verb, name, verb)
			}
		}
	}
	return nil
}

// wantsHelp reports whether args ask for help before "--", for commands
// whose own parsing does not print the usage on stdout.
func wantsHelp(args []string) bool {
	for _, arg := range args {
		switch arg {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

// parseFlags parses the flags of one of the client commands. Flags may
// come before, between and after positional arguments, except: "--" ends
// the flags, and once text reports that the positional words so far start
// free text (a prompt, a message), every later word is text too, but for
// the global flags (see textGlobals). -h/--help prints the usage of help
// (a usageOf key) on stdout and returns errHelp.
func parseFlags(a *app, fs *flag.FlagSet, help string, args []string, text func(pos []string) bool) ([]string, error) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var pos []string
	for {
		if text != nil && text(pos) {
			words, err := textGlobals(fs, help, args)
			if err != nil {
				return nil, err
			}
			return append(pos, words...), nil
		}
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				printHelp(a.stdout, help)
				return nil, errHelp
			}
			msg := err.Error()
			if f, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
				msg = "unknown flag --" + f
			} else if f, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
				msg = "flag --" + f + " needs a value"
			}
			return nil, usageErrorf("%s: %s (see nightshift %s --help)", help, msg, help)
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// textGlobals sets on fs the global flags (--server, --token, --json,
// --data-dir) found in free text up to "--" and returns the other words:
// a global flag is a flag wherever it appears, so a token or a server URL
// typed after a prompt never becomes prompt text, while the command's own
// flags there ("make the --follow flag faster") stay text. A global flag
// the command does not take is refused rather than sent as text.
func textGlobals(fs *flag.FlagSet, help string, args []string) ([]string, error) {
	var words []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			return append(words, args[i+1:]...), nil
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(arg, "-"), "-"), "=")
		if !strings.HasPrefix(arg, "-") || !slices.Contains(globalNames, name) {
			words = append(words, arg)
			continue
		}
		if fs.Lookup(name) == nil {
			return nil, usageErrorf("%s: unknown flag --%s (it does not apply to %s; put \"--\" before text that contains it)", help, name, help)
		}
		if !hasValue && name != "json" {
			if i+1 == len(args) {
				return nil, usageErrorf("%s: flag --%s needs a value (see nightshift %s --help)", help, name, help)
			}
			i++
			value = args[i]
		} else if !hasValue {
			value = "true"
		}
		if err := fs.Set(name, value); err != nil {
			return nil, usageErrorf("%s: bad value for --%s (see nightshift %s --help)", help, name, help)
		}
	}
	return words, nil
}

// errHelp is returned by parseFlags after it printed the usage: the
// command ends successfully.
var errHelp = errors.New("help printed")

func usage(w io.Writer, cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(w, "usage: nightshift [global flags] <command> [flags] [args]\n\ncommands:")
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, cmds[n].summary)
	}
	fmt.Fprint(w, globalHelp)
}

const globalHelp = `
global flags (before or after the command; each command uses those it understands):
  --server URL      server URL (env NIGHTSHIFT_SERVER, default http://127.0.0.1:8080)
  --token T         API token (env NIGHTSHIFT_TOKEN)
  --json            print machine-readable JSON
  --data-dir DIR    data directory of serve and vault (env NIGHTSHIFT_DATA_DIR)
  --version         print the version
  -h, --help        print help (also "nightshift help <command>", "nightshift <command> --help")
  --                end of flags: every later word is an argument

The global flags are flags wherever they appear before "--", also among the
words of a prompt or a message; a command's own flags after the first
prompt word are prompt text.

examples:
  nightshift serve
  nightshift --server https://ns.example.com tasks ls --state running
  nightshift dispatch --repo . --follow "fix the flaky test in ./store"
  nightshift completion bash > /etc/bash_completion.d/nightshift
`

// printHelp prints the usage of a command or sub-command ("tasks logs");
// a sub-command without its own text gets its command's.
func printHelp(w io.Writer, key string) error {
	for k := key; k != ""; {
		if text, ok := usageOf[k]; ok {
			fmt.Fprintln(w, strings.TrimRight(text, "\n"))
			return nil
		}
		i := strings.LastIndexByte(k, ' ')
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return usageErrorf("no help for %q: unknown command (run nightshift --help to see the commands)", key)
}

// usageOf holds the -h text of every command and sub-command that has
// its own.
var usageOf = map[string]string{
	"dispatch":      dispatchUsage,
	"tasks":         tasksUsage,
	"tasks ls":      tasksLsUsage,
	"tasks list":    tasksLsUsage,
	"tasks show":    "usage: nightshift tasks show ID [--json]\n\nPrints one task: state, repository, branch, agent, pull request, usage.\n\nexample:\n  nightshift tasks show 01j9z8x7w6v5u4t3",
	"tasks logs":    tasksLogsUsage,
	"tasks diff":    "usage: nightshift tasks diff ID [--json]\n\nPrints the task's change as a unified diff against its base (--json: stat and patch).\n\nexample:\n  nightshift tasks diff 01j9z8x7w6v5u4t3 | less",
	"tasks cancel":  "usage: nightshift tasks cancel ID [--json]\n\nStops the task's run; the task ends cancelled.\n\nexample:\n  nightshift tasks cancel 01j9z8x7w6v5u4t3",
	"tasks retry":   "usage: nightshift tasks retry ID [--from-base] [--json]\n\nRuns a finished task's prompt again, as a new run that starts from the task's\nbranch: the commits earlier runs and follow-ups pushed are kept and the\nretry's commit goes on top. --from-base starts over from the base branch\ninstead, replacing the task's branch.\n\nexamples:\n  nightshift tasks retry 01j9z8x7w6v5u4t3\n  nightshift tasks retry --from-base 01j9z8x7w6v5u4t3",
	"tasks message": tasksMessageUsage,
	"identity":      identityUsage,
	"automations":   automationsUsage,
	"hooks":         hooksUsage,
	"init":          initUsage,
	"version":       versionUsage,
	"completion":    completionUsage,
	"serve": `usage: nightshift serve [--config FILE] [--data-dir DIR] [--listen ADDR]
                       [--role all|ingress|scheduler|worker] [--nats URL] [--ack-wait D]

Runs the server: webhooks, REST API, board, scheduler and workers. With no
config and no flags: HTTP on 127.0.0.1:8080, data in ./.nightshift,
embedded NATS. --data-dir may also come before "serve".

examples:
  nightshift serve
  nightshift serve --config /etc/nightshift.yaml --listen 0.0.0.0:8080
  nightshift --data-dir /var/lib/nightshift serve --role worker --nats nats://10.0.0.5:4222`,
	"vault": vaultUsage + `
--data-dir and --json may also come before "vault".

examples:
  printf %s "$TOKEN" | nightshift vault set GITHUB_TOKEN
  nightshift vault set NPM_TOKEN --scope repo:github.com/acme/* < token.txt
  nightshift --data-dir /var/lib/nightshift vault ls --json
  nightshift vault audit --verify`,
	"sandbox": sandboxUsage + `

examples:
  nightshift sandbox check
  nightshift sandbox exec --dir . --allow-host proxy.golang.org -- go test ./...`,
	"mcp": `usage: nightshift mcp [--url URL] [--token T]

Serves MCP over stdio for an agent inside a sandbox, bridged to the
server's /mcp endpoint with the task token. The worker sets it up; you
rarely run it by hand.

flags:
  --url URL    MCP endpoint of the server (env NIGHTSHIFT_MCP_URL)
  --token T    the task's MCP token (env NIGHTSHIFT_MCP_TOKEN); not the API token

example:
  NIGHTSHIFT_MCP_URL=http://127.0.0.1:8080/mcp NIGHTSHIFT_MCP_TOKEN=... nightshift mcp`,
	"ravi": raviUsage + `

example (inside a sandbox):
  ravi get email`,
}

func envMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// usageError is a mistake in how the command was called (exit code 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}
