package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/nightshift/nightshift/identity/mcpserver"
)

const raviUsage = `usage: ravi <command> [--json]

Ravi-compatible commands answering from this task's Nightshift identity:
  get email | phone | owner     print the address, number or owner
  get-email                     same as "get email"
  get-identity-name             print the identity's name (also the git author)
  secrets get KEY               print a secret this task may read
  inbox email | sms [--wait D]  list received messages, newest first
  ask QUESTION                  ask the people who gave you the task (then end
                                your turn: the answer resumes your session)

Needs NIGHTSHIFT_MCP_URL and NIGHTSHIFT_MCP_TOKEN (set inside the sandbox).`

// runRavi answers the Ravi CLI's verbs from the task identity through the
// server's MCP endpoint. The binary runs it when invoked as "ravi".
func runRavi(ctx context.Context, a *app, args []string) error {
	asJSON := false
	var wait time.Duration
	var words []string
	for i := 0; i < len(args); i++ {
		switch arg := args[i]; {
		case arg == "--json" || arg == "-json":
			asJSON = true
		case arg == "-h" || arg == "--help" || arg == "help":
			fmt.Fprintln(a.stderr, raviUsage)
			return nil
		case arg == "--wait" || arg == "-wait":
			if i+1 == len(args) {
				return usageErrorf("ravi: --wait needs a duration")
			}
			i++
			d, err := time.ParseDuration(args[i])
			if err != nil || d < 0 {
				return usageErrorf("ravi: --wait %q is not a duration such as 30s", args[i])
			}
			wait = d
		case strings.HasPrefix(arg, "--wait="):
			d, err := time.ParseDuration(strings.TrimPrefix(arg, "--wait="))
			if err != nil || d < 0 {
				return usageErrorf("ravi: %s is not a duration such as 30s", arg)
			}
			wait = d
		case strings.HasPrefix(arg, "-") && arg != "-":
			return usageErrorf("ravi: unknown flag %s", arg)
		default:
			words = append(words, arg)
		}
	}
	verb := strings.Join(words, " ")
	var tool string
	var toolArgs map[string]any
	switch {
	case verb == "get email" || verb == "get-email":
		tool = mcpserver.ToolGetEmail
	case verb == "get phone":
		tool = mcpserver.ToolGetPhone
	case verb == "get owner" || verb == "get-identity-name":
		tool = mcpserver.ToolGetIdentity
	case len(words) == 3 && words[0] == "secrets" && words[1] == "get":
		tool, toolArgs = mcpserver.ToolGetSecret, map[string]any{"name": words[2]}
	case verb == "inbox email":
		tool = mcpserver.ToolCheckInbox
	case verb == "inbox sms":
		tool = mcpserver.ToolCheckSMS
	case len(words) >= 2 && words[0] == "ask":
		tool, toolArgs = mcpserver.ToolAskHuman, map[string]any{"question": strings.Join(words[1:], " ")}
	case verb == "":
		fmt.Fprintln(a.stderr, raviUsage)
		return usageErrorf("ravi: missing command")
	default:
		fmt.Fprintln(a.stderr, raviUsage)
		return usageErrorf("ravi: unknown command %q", verb)
	}
	if tool == mcpserver.ToolCheckInbox || tool == mcpserver.ToolCheckSMS {
		toolArgs = map[string]any{}
		if wait > 0 {
			toolArgs["wait_seconds"] = wait.Seconds()
		}
	}

	mcpURL, token := a.getenv("NIGHTSHIFT_MCP_URL"), a.getenv("NIGHTSHIFT_MCP_TOKEN")
	if mcpURL == "" || token == "" {
		return errors.New("ravi: no task identity here (NIGHTSHIFT_MCP_URL and NIGHTSHIFT_MCP_TOKEN are not set)")
	}
	c, err := mcpserver.Dial(ctx, mcpURL, token, mcpserver.ClientConfig{HTTPClient: &http.Client{}, Name: "ravi"})
	if err != nil {
		return fmt.Errorf("ravi: %w", err)
	}
	defer c.Close()
	out := a.stdout

	switch tool {
	case mcpserver.ToolGetEmail:
		v, err := c.Text(ctx, tool, nil)
		if err != nil {
			return raviErr(err)
		}
		return raviPrint(out, asJSON, v, map[string]any{"email": v})
	case mcpserver.ToolGetPhone:
		v, err := c.Text(ctx, tool, nil)
		if err != nil {
			return raviErr(err)
		}
		return raviPrint(out, asJSON, v, map[string]any{"phone_number": v})
	case mcpserver.ToolGetIdentity:
		var id mcpserver.IdentityResult
		if err := c.JSON(ctx, tool, nil, &id); err != nil {
			return raviErr(err)
		}
		if verb == "get-identity-name" {
			return raviPrint(out, asJSON, id.Name, map[string]any{"uuid": id.ID, "name": id.Name, "inbox": id.Email, "phone": id.Phone})
		}
		first, last, _ := strings.Cut(id.Owner, " ")
		return raviPrint(out, asJSON, id.Owner, map[string]any{"first_name": first, "last_name": last})
	case mcpserver.ToolAskHuman:
		v, err := c.Text(ctx, tool, toolArgs)
		if err != nil {
			return raviErr(err)
		}
		return raviPrint(out, asJSON, v, map[string]any{"status": "asked", "message": v})
	case mcpserver.ToolGetSecret:
		var s mcpserver.SecretResult
		if err := c.JSON(ctx, tool, toolArgs, &s); err != nil {
			return raviErr(err)
		}
		return raviPrint(out, asJSON, s.Value, map[string]any{"key": s.Name, "value": s.Value, "notes": "", "scope": s.Scope})
	default: // inbox
		var res mcpserver.InboxResult
		if err := c.JSON(ctx, tool, toolArgs, &res); err != nil {
			return raviErr(err)
		}
		if asJSON {
			rows := make([]map[string]any, 0, len(res.Messages))
			for _, m := range res.Messages {
				row := map[string]any{"id": m.ID, "direction": "incoming", "created_dt": m.ReceivedAt.Format(time.RFC3339Nano)}
				if tool == mcpserver.ToolCheckSMS {
					row["from_number"], row["phone_number"], row["body"] = m.From, m.To, m.Body
				} else {
					row["from_email"], row["to_email"], row["subject"], row["text_content"] = m.From, m.To, m.Subject, m.Body
				}
				rows = append(rows, row)
			}
			return printJSON(out, rows)
		}
		if len(res.Messages) == 0 {
			fmt.Fprintln(a.stderr, "No messages")
			return nil
		}
		for i, m := range res.Messages {
			if i > 0 {
				fmt.Fprintln(out)
			}
			fmt.Fprintf(out, "From: %s\nDate: %s\n", m.From, m.ReceivedAt.Format(time.RFC3339))
			if m.Subject != "" {
				fmt.Fprintf(out, "Subject: %s\n", m.Subject)
			}
			fmt.Fprintf(out, "\n%s\n", strings.TrimSpace(m.Body))
		}
		return nil
	}
}

func raviPrint(w io.Writer, asJSON bool, plain string, obj map[string]any) error {
	if asJSON {
		return printJSON(w, obj)
	}
	_, err := fmt.Fprintln(w, plain)
	return err
}

func raviErr(err error) error {
	var te *mcpserver.ToolError
	if errors.As(err, &te) {
		return fmt.Errorf("ravi: %s", te.Message)
	}
	return fmt.Errorf("ravi: %w", err)
}
