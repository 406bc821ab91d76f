package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
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
}

// getenv returns the value of an environment variable given to run.
func (a *app) getenv(key string) string { return a.env[key] }

// command is one subcommand: it parses its own flags from args.
type command struct {
	summary string
	run     func(ctx context.Context, a *app, args []string) error
}

// commands is the subcommand table. Each subcommand lives in its own file.
func commands() map[string]command {
	return map[string]command{
		"serve":    {"run the server (ingress, scheduler, workers)", runServe},
		"init":     {"write a starter nightshift.yaml and vault key", runInit},
		"dispatch": {"create a task", runDispatch},
		"tasks":    {"list, show, follow, diff, cancel and retry tasks", runTasks},
		"vault":    {"manage encrypted secrets", runVault},
		"identity": {"manage agent identities", runIdentity},
		"sandbox":  {"run a command in the configured sandbox", runSandbox},
		"hooks":    {"replay stored webhook payloads to a server", runHooks},
		"mcp":      {"serve MCP over stdio for an agent inside a sandbox", runMCP},
		"ravi":     {"Ravi-compatible identity commands for agents inside a sandbox", runRavi},
		"version":  {"print the version", runVersion},
	}
}

// multiCall maps the names the binary may be invoked under (argv[0]) to a
// subcommand, so a symlink named ravi inside a sandbox runs "nightshift ravi".
var multiCall = map[string]string{"ravi": "ravi"}

// run is the whole program: parse args, dispatch to a subcommand.
func run(ctx context.Context, args []string, environ []string, stdin io.Reader, stdout, stderr io.Writer) error {
	a := &app{args: args, env: envMap(environ), stdin: stdin, stdout: stdout, stderr: stderr}
	cmds := commands()
	if len(args) > 0 {
		if sub, ok := multiCall[filepath.Base(args[0])]; ok {
			return cmds[sub].run(ctx, a, args[1:])
		}
	}
	if len(args) < 2 || args[1] == "-h" || args[1] == "--help" || args[1] == "help" {
		usage(stderr, cmds)
		if len(args) < 2 {
			return usageErrorf("missing command")
		}
		return nil
	}
	c, ok := cmds[args[1]]
	if !ok {
		usage(stderr, cmds)
		return usageErrorf("unknown command %q", args[1])
	}
	return c.run(ctx, a, args[2:])
}

func usage(w io.Writer, cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(w, "usage: nightshift <command> [flags]\n\ncommands:")
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n", n, cmds[n].summary)
	}
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
