package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
)

const completionUsage = `usage: nightshift completion bash|zsh|fish

Prints a shell completion script for the commands, sub-commands and flags.

examples:
  source <(nightshift completion bash)                     # in ~/.bashrc
  nightshift completion bash > /etc/bash_completion.d/nightshift
  source <(nightshift completion zsh)                      # in ~/.zshrc
  nightshift completion fish > ~/.config/fish/completions/nightshift.fish`

// complSubs are the sub-commands completion offers after a command: the
// commands' own, and the shells of "completion".
func complSubs() map[string][]string {
	out := map[string][]string{"completion": {"bash", "zsh", "fish"}}
	for name, c := range commands() {
		if c.subs != nil {
			out[name] = c.subs
		}
	}
	return out
}

// complFlags are the flags completion offers, by command and by
// "command sub-command"; both apply after a sub-command.
var complFlags = map[string][]string{
	"":                 {"server", "token", "json", "data-dir", "version", "help"},
	"serve":            {"config", "data-dir", "listen", "role", "nats", "ack-wait", "help"},
	"init":             {"dir", "help"},
	"dispatch":         {"repo", "branch", "agent", "follow", "prompt-file", "server", "token", "json", "help"},
	"tasks":            {"server", "token", "json", "help"},
	"tasks ls":         {"state", "repo", "source", "limit", "before"},
	"tasks logs":       {"f", "follow"},
	"tasks retry":      {"from-base"},
	"automations":      {"server", "token", "json", "help"},
	"automations runs": {"limit"},
	"vault":            {"data-dir", "json", "nats", "help"},
	"vault set":        {"scope", "raw"},
	"vault get":        {"scope", "version", "raw"},
	"vault rm":         {"scope", "version"},
	"vault rotate-key": {"root"},
	"vault audit":      {"verify", "name", "limit"},
	"identity":         {"server", "token", "json", "help"},
	"identity new":     {"task", "repo", "agent"},
	"identity ls":      {"all"},
	"identity inbox":   {"since", "wait"},
	"identity sms":     {"since", "wait"},
	"identity otp":     {"wait"},
	"sandbox":          {"help"},
	"sandbox exec":     {"dir", "driver", "allow-host", "env", "ro", "ro-in-dir", "forward", "tool", "timeout", "memory", "processes", "v", "data-dir"},
	"sandbox check":    {"driver", "data-dir"},
	"hooks":            {"server", "help"},
	"hooks replay":     {"source", "event", "secret", "delivery", "keep-timestamp"},
	"mcp":              {"url", "token", "help"},
	"ravi":             {"json", "wait", "help"},
	"version":          {"json", "help"},
	"completion":       {"help"},
}

// complBool are the flags that take no value.
var complBool = []string{"json", "version", "help", "h", "follow", "f", "all", "verify", "root", "raw", "keep-timestamp", "v", "from-base"}

// complFiles are the flags whose value is a path.
var complFiles = []string{"prompt-file", "config", "data-dir", "dir", "ro"}

func dashed(names []string) string {
	out := make([]string, len(names))
	for i, n := range names {
		if len(n) == 1 {
			out[i] = "-" + n
		} else {
			out[i] = "--" + n
		}
	}
	return strings.Join(out, " ")
}

func runCompletion(ctx context.Context, a *app, args []string) error {
	fs := flag.NewFlagSet("completion", flag.ContinueOnError)
	pos, err := parseFlags(a, fs, "completion", args, nil)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErrorf("completion: want one shell: bash, zsh or fish")
	}
	switch pos[0] {
	case "bash":
		return writeBashCompletion(a.stdout, false)
	case "zsh":
		return writeBashCompletion(a.stdout, true)
	case "fish":
		return writeFishCompletion(a.stdout)
	}
	return usageErrorf("completion: unknown shell %q (want bash, zsh or fish)", pos[0])
}

func verbNames() []string {
	var names []string
	for n := range commands() {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// writeBashCompletion writes the bash script; zsh runs the same one
// through bashcompinit.
func writeBashCompletion(w io.Writer, zsh bool) error {
	var b strings.Builder
	if zsh {
		b.WriteString("#compdef nightshift\n# zsh completion for nightshift: source <(nightshift completion zsh)\nautoload -U +X bashcompinit && bashcompinit\n")
	} else {
		b.WriteString("# bash completion for nightshift: source <(nightshift completion bash)\n")
	}
	var valueFlags []string
	for _, k := range sortedKeys(complFlags) {
		for _, f := range complFlags[k] {
			if !slices.Contains(complBool, f) && !slices.Contains(valueFlags, f) {
				valueFlags = append(valueFlags, f)
			}
		}
	}
	sort.Strings(valueFlags)
	subVerbs := sortedKeys(complSubs())
	fmt.Fprintf(&b, `_nightshift() {
    local cur prev verb="" sub="" words="" i w
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${COMP_WORDS[i]}"
        case "$w" in
        --) [[ -n $verb ]] && return 0; continue ;;
        %s) ((i++)); continue ;;
        -*) continue ;;
        esac
        if [[ -z $verb ]]; then
            verb="$w"
            case "$verb" in %s) ;; *) break ;; esac
        else
            sub="$w"
            break
        fi
    done
    case "$prev" in
    %s)
        COMPREPLY=($(compgen -f -- "$cur"))
        return 0 ;;
    %s)
        return 0 ;;
    esac
    if [[ -z $verb ]]; then
        words="%s %s"
    else
        case "$verb" in
`, strings.ReplaceAll(dashed(valueFlags), " ", "|"),
		strings.Join(subVerbs, "|"),
		strings.ReplaceAll(dashed(complFiles), " ", "|"),
		strings.ReplaceAll(dashed(valueFlags), " ", "|"),
		strings.Join(verbNames(), " "), dashed(complFlags[""]))
	for _, v := range verbNames() {
		subs := complSubs()[v]
		fmt.Fprintf(&b, "        %s)\n", v)
		if len(subs) > 0 {
			fmt.Fprintf(&b, "            if [[ -z $sub ]]; then words=%q; else\n                words=%q\n                case \"$sub\" in\n", strings.Join(subs, " ")+" "+dashed(complFlags[v]), dashed(complFlags[v]))
			for _, s := range subs {
				if f := complFlags[v+" "+s]; len(f) > 0 {
					fmt.Fprintf(&b, "                %s) words=\"$words %s\" ;;\n", s, dashed(f))
				}
			}
			b.WriteString("                esac\n            fi ;;\n")
		} else {
			fmt.Fprintf(&b, "            words=%q ;;\n", dashed(complFlags[v]))
		}
	}
	b.WriteString(`        esac
    fi
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
    return 0
}
complete -o default -F _nightshift nightshift
`)
	_, err := io.WriteString(w, b.String())
	return err
}

func writeFishCompletion(w io.Writer) error {
	var b strings.Builder
	cmds := commands()
	verbs := verbNames()
	b.WriteString("# fish completion for nightshift: nightshift completion fish > ~/.config/fish/completions/nightshift.fish\n")
	fmt.Fprintf(&b, "complete -c nightshift -f\n")
	for _, v := range verbs {
		fmt.Fprintf(&b, "complete -c nightshift -n __fish_use_subcommand -a %s -d %s\n", v, fishQuote(cmds[v].summary))
	}
	flagLine := func(cond, f string) {
		opt := "-l " + f
		if len(f) == 1 {
			opt = "-s " + f
		}
		if !slices.Contains(complBool, f) {
			opt += " -r"
			if slices.Contains(complFiles, f) {
				opt += " -F"
			}
		}
		if cond != "" {
			fmt.Fprintf(&b, "complete -c nightshift -n %s %s\n", fishQuote(cond), opt)
		} else {
			fmt.Fprintf(&b, "complete -c nightshift %s\n", opt)
		}
	}
	for _, f := range complFlags[""] {
		flagLine("", f)
	}
	for _, v := range verbs {
		cond := "__fish_seen_subcommand_from " + v
		if subs := complSubs()[v]; len(subs) > 0 {
			fmt.Fprintf(&b, "complete -c nightshift -n %s -a %s\n", fishQuote(cond+"; and not __fish_seen_subcommand_from "+strings.Join(subs, " ")), fishQuote(strings.Join(subs, " ")))
			for _, s := range subs {
				for _, f := range complFlags[v+" "+s] {
					flagLine(cond+"; and __fish_seen_subcommand_from "+s, f)
				}
			}
		}
		for _, f := range complFlags[v] {
			if !slices.Contains(complFlags[""], f) {
				flagLine(cond, f)
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func fishQuote(s string) string {
	return "'" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "'", `\'`) + "'"
}
