package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nightshift/nightshift/identity"
	"github.com/nightshift/nightshift/identity/identityapi"
)

const identityUsage = `usage: nightshift identity <command> [flags]

commands:
  new [--task ID] [--repo R] [--agent A]   create an identity and an agent token for it
  ls [--all]                               list identities (--all includes released ones)
  show ID                                  show one identity
  inbox ID [--since T] [--wait D]          list received email, newest first
  sms ID [--since T] [--wait D]            list received SMS, newest first
  otp ID [--wait D]                        print the newest one-time code or link
  release ID                               release an identity and revoke its tokens

flags on every command (also accepted before "identity"): --server URL (env NIGHTSHIFT_SERVER,
default http://127.0.0.1:8080), --token T (env NIGHTSHIFT_TOKEN), --json

examples:
  nightshift identity new --repo github.com/acme/api
  nightshift identity otp 01j9z8x7w6v5u4t3 --wait 2m
  nightshift --json identity ls --all`

// runIdentity is "nightshift identity": a client of /api/v1/identities.
func runIdentity(ctx context.Context, a *app, args []string) error {
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("identity "+sub, flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs, a)
	asJSON := &cf.json
	var (
		task, repo, agent, since string
		all                      bool
		wait                     time.Duration
	)
	switch sub {
	case "new":
		fs.StringVar(&task, "task", "", "task id the identity belongs to (default: a stand-alone identity)")
		fs.StringVar(&repo, "repo", "", "repository the agent token is scoped to")
		fs.StringVar(&agent, "agent", "", "agent name the token is scoped to")
	case "ls":
		fs.BoolVar(&all, "all", false, "include released identities")
	case "inbox", "sms":
		fs.StringVar(&since, "since", "", "only messages after this RFC 3339 time")
		fs.DurationVar(&wait, "wait", 0, "wait up to this long for a message to arrive")
	case "otp":
		fs.DurationVar(&wait, "wait", 0, "wait up to this long for a code to arrive")
	case "show", "release":
	default:
		return usageErrorf("identity: unknown command %q (see nightshift identity --help)", sub)
	}
	pos, err := parseFlags(a, fs, "identity "+sub, args, nil)
	if err != nil {
		return err
	}
	wantArgs := 1
	if sub == "new" || sub == "ls" {
		wantArgs = 0
	}
	if len(pos) != wantArgs {
		if wantArgs == 0 {
			return usageErrorf("identity %s: unexpected argument %q", sub, pos[0])
		}
		return usageErrorf("identity %s: want one identity ID", sub)
	}
	if since != "" {
		if _, err := time.Parse(time.RFC3339Nano, since); err != nil {
			return usageErrorf("identity %s: --since %q is not an RFC 3339 time", sub, since)
		}
	}
	c := identityClient{cf.client()}
	out := a.stdout
	switch sub {
	case "new":
		var created identityapi.Created
		if err := c.do(ctx, http.MethodPost, "", identityapi.CreateRequest{TaskID: task, Repo: repo, Agent: agent}, &created); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(out, created)
		}
		tw := tabwriter.NewWriter(out, 0, 4, 1, ' ', 0)
		fmt.Fprintf(tw, "id:\t%s\nname:\t%s\nemail:\t%s\nphone:\t%s\ntoken:\t%s\n", created.ID, created.Name, created.Email, dash(created.Phone), created.Token)
		return tw.Flush()
	case "ls":
		q := ""
		if all {
			q = "?all=true"
		}
		var list identityapi.List
		if err := c.do(ctx, http.MethodGet, q, nil, &list); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(out, list.Identities)
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tEMAIL\tPHONE\tTASK\tCREATED\tSTATE")
		for _, id := range list.Identities {
			state := "live"
			if !id.Live() {
				state = "released"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", id.ID, id.Name, id.Email, dash(id.Phone), dash(id.TaskID), id.CreatedAt.Local().Format(time.DateTime), state)
		}
		return tw.Flush()
	case "show":
		var id identity.Identity
		if err := c.do(ctx, http.MethodGet, "/"+url.PathEscape(pos[0]), nil, &id); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(out, id)
		}
		tw := tabwriter.NewWriter(out, 0, 4, 1, ' ', 0)
		fmt.Fprintf(tw, "id:\t%s\nname:\t%s\nemail:\t%s\nphone:\t%s\nprovider:\t%s\ntask:\t%s\ncreated:\t%s\n",
			id.ID, id.Name, id.Email, dash(id.Phone), id.Provider, dash(id.TaskID), id.CreatedAt.Local().Format(time.RFC3339))
		if id.ReleasedAt != nil {
			fmt.Fprintf(tw, "released:\t%s\n", id.ReleasedAt.Local().Format(time.RFC3339))
		}
		return tw.Flush()
	case "release":
		if err := c.do(ctx, http.MethodDelete, "/"+url.PathEscape(pos[0]), nil, nil); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(out, map[string]string{"id": pos[0], "status": "released"})
		}
		fmt.Fprintf(out, "released %s\n", pos[0])
		return nil
	case "inbox", "sms":
		kind := "email"
		if sub == "sms" {
			kind = "sms"
		}
		q := url.Values{"kind": {kind}}
		if since != "" {
			q.Set("since", since)
		}
		if wait > 0 {
			q.Set("wait", wait.String())
		}
		var msgs identityapi.Messages
		if err := c.do(ctx, http.MethodGet, "/"+url.PathEscape(pos[0])+"/messages?"+q.Encode(), nil, &msgs); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(out, msgs.Messages)
		}
		if len(msgs.Messages) == 0 {
			fmt.Fprintf(a.stderr, "no %s messages\n", kind)
			return nil
		}
		for i, m := range msgs.Messages {
			if i > 0 {
				fmt.Fprintln(out)
			}
			fmt.Fprintf(out, "From:     %s\nReceived: %s\n", m.From, m.ReceivedAt.Local().Format(time.RFC3339))
			if m.Subject != "" {
				fmt.Fprintf(out, "Subject:  %s\n", m.Subject)
			}
			fmt.Fprintf(out, "\n%s\n", strings.TrimSpace(m.Body))
		}
		return nil
	case "otp":
		q := url.Values{}
		if wait > 0 {
			q.Set("wait", wait.String())
		}
		var res identityapi.OTP
		if err := c.do(ctx, http.MethodGet, "/"+url.PathEscape(pos[0])+"/otp?"+q.Encode(), nil, &res); err != nil {
			return err
		}
		if *asJSON {
			if err := printJSON(out, res); err != nil {
				return err
			}
		}
		if !res.Found {
			if wait > 0 {
				return fmt.Errorf("no one-time code arrived within %s", wait)
			}
			return errors.New("no one-time code received yet (use --wait to wait for one)")
		}
		if !*asJSON {
			if res.OTP.Code != "" {
				fmt.Fprintln(out, res.OTP.Code)
			}
			if res.OTP.Link != "" {
				fmt.Fprintln(out, res.OTP.Link)
			}
		}
		return nil
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// identityClient calls the identities REST API (under /api/v1/identities).
type identityClient struct{ c *client }

func (ic identityClient) do(ctx context.Context, method, path string, in, out any) error {
	return ic.c.do(ctx, method, "/api/v1/identities"+path, in, out)
}
