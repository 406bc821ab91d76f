package config

import (
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"strings"
	"text/template"

	"gopkg.in/yaml.v3"
)

// Automation is one user-defined trigger (automations: in nightshift.yaml,
// or a definition stored through the API): a schedule, or an event filter
// (On + Where), that starts an agent run on Repo (or each of Repos) with
// Prompt. The same shape is the JSON definition the API stores; the keys are
// the contract.
type Automation struct {
	// Name identifies the automation: lower case letters, digits and -.
	Name string `yaml:"name" json:"name"`
	// Schedule is a 5-field cron expression or a descriptor (@every 30m,
	// @daily, ...). Exclusive with On.
	Schedule string `yaml:"schedule" json:"schedule,omitempty"`
	// Timezone is the IANA zone the schedule is read in. Default UTC.
	Timezone string `yaml:"timezone" json:"timezone,omitempty"`
	// Repo is the repository a run works on; Repos lists several (one run
	// each). An event-triggered automation defaults to the event's repo.
	Repo  string   `yaml:"repo" json:"repo,omitempty"`
	Repos []string `yaml:"repos" json:"repos,omitempty"`
	// Agent runs the prompt. Default: the repository's or default_agent.
	Agent string `yaml:"agent" json:"agent,omitempty"`
	// Prompt is a text/template over the triggering event ({{.Target.URL}}).
	Prompt string `yaml:"prompt" json:"prompt"`
	// Mode is change (default), plan or answer.
	Mode string `yaml:"mode" json:"mode,omitempty"`
	// Respond is reply (default: post where the event came from) or silent.
	Respond string `yaml:"respond" json:"respond,omitempty"`
	// Inbox lists the automation's runs in the board's inbox.
	Inbox bool `yaml:"inbox" json:"inbox,omitempty"`
	// On names the events that trigger it; Where narrows them.
	On    *On      `yaml:"on" json:"on,omitempty"`
	Where []Filter `yaml:"where" json:"where,omitempty"`
	// Disabled starts the automation switched off (enable it through the
	// API, the board or the CLI).
	Disabled bool `yaml:"disabled" json:"disabled,omitempty"`

	// Allow lists who may trigger an event automation. Empty: anyone whose
	// event reached the events stream (the built-in trigger checks already
	// ran for GitHub, Linear and Slack).
	Allow Triggerers `yaml:"allow" json:"allow,omitempty"`
	// Budget limits each run and the automation's spend per day.
	Budget AutomationBudget `yaml:"budget" json:"budget,omitempty"`
	// SecretScopes are the vault scopes runs may be granted. Empty: the
	// usual scopes of the task (agents, repo:, agent:, task:).
	SecretScopes []string `yaml:"secret_scopes" json:"secret_scopes,omitempty"`
	// Concurrency is how many runs may be active at once. Default 1.
	Concurrency int `yaml:"concurrency" json:"concurrency,omitempty"`
	// PauseAfter pauses the automation after this many consecutive failed
	// runs. Default 3; negative: never.
	PauseAfter int `yaml:"pause_after" json:"pause_after,omitempty"`
	// CatchUp says what a schedule does about ticks missed while no
	// scheduler ran: skip (default) or once (fire the latest missed tick).
	CatchUp string `yaml:"catch_up" json:"catch_up,omitempty"`
}

// On selects events by source and kind (a glob each; empty matches all).
type On struct {
	Source string `yaml:"source" json:"source,omitempty"`
	Kind   string `yaml:"kind" json:"kind,omitempty"`
}

// Filter is one condition over a field of the normalized event.
type Filter struct {
	// Field is a dotted JSON path of the event (repo, actor.login,
	// target.number), raw.<path> into the original payload, or label.
	Field string `yaml:"field" json:"field"`
	// Op is eq, ne, glob, regex, contains or in.
	Op string `yaml:"op" json:"op"`
	// Value is what the field is compared with; a list for in.
	Value Values `yaml:"value" json:"value"`
}

// Values is a string or a list of strings.
type Values []string

// UnmarshalYAML accepts a scalar or a sequence of scalars.
func (v *Values) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*v = Values{n.Value}
	case yaml.SequenceNode:
		out := make(Values, 0, len(n.Content))
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: a value list holds scalars only", c.Line)
			}
			out = append(out, c.Value)
		}
		*v = out
	default:
		return fmt.Errorf("line %d: want a value or a list of values", n.Line)
	}
	return nil
}

// UnmarshalJSON accepts a string, number, boolean or a list of them.
func (v *Values) UnmarshalJSON(b []byte) error {
	var list []any
	if err := json.Unmarshal(b, &list); err != nil {
		var one any
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		list = []any{one}
	}
	out := make(Values, 0, len(list))
	for _, x := range list {
		switch x := x.(type) {
		case string:
			out = append(out, x)
		case float64, bool:
			b, _ := json.Marshal(x)
			out = append(out, string(b))
		default:
			return fmt.Errorf("value %v: want a string, number or boolean", x)
		}
	}
	*v = out
	return nil
}

// MarshalJSON writes one value as a string, several as a list.
func (v Values) MarshalJSON() ([]byte, error) {
	if len(v) == 1 {
		return json.Marshal(v[0])
	}
	return json.Marshal([]string(v))
}

// Triggerers lists who may trigger an automation: any match lets the event
// through.
type Triggerers struct {
	// Logins are user names (case-insensitive).
	Logins []string `yaml:"logins" json:"logins,omitempty"`
	// Teams are org/team slugs; membership is asked from the forge.
	Teams []string `yaml:"teams" json:"teams,omitempty"`
	// Associations are GitHub author associations (OWNER, MEMBER, ...).
	Associations []string `yaml:"associations" json:"associations,omitempty"`
}

// Empty reports whether no restriction is set.
func (t Triggerers) Empty() bool {
	return len(t.Logins)+len(t.Teams)+len(t.Associations) == 0
}

// AutomationBudget limits what an automation spends. Zero is unlimited.
type AutomationBudget struct {
	// Tokens and CostUSD limit one run (as repos[].budget does a task).
	Tokens  int64   `yaml:"tokens" json:"tokens,omitempty"`
	CostUSD float64 `yaml:"cost_usd" json:"cost_usd,omitempty"`
	// PerDayUSD caps the summed cost of the automation's runs per day (in
	// its timezone); past it nothing fires until the next day.
	PerDayUSD float64 `yaml:"per_day_usd" json:"per_day_usd,omitempty"`
}

// Automation modes and reply policies.
const (
	ModeChange    = "change"
	ModePlan      = "plan"
	ModeAnswer    = "answer"
	RespondReply  = "reply"
	RespondSilent = "silent"
	CatchUpSkip   = "skip"
	CatchUpOnce   = "once"
)

var automationName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// FilterOps are the operators a where condition may use.
var FilterOps = []string{"eq", "ne", "glob", "regex", "contains", "in"}

// WithDefaults returns a with its documented defaults applied.
func (a Automation) WithDefaults() Automation {
	if a.Mode == "" {
		a.Mode = ModeChange
	}
	if a.Respond == "" {
		a.Respond = RespondReply
	}
	if a.Concurrency == 0 {
		a.Concurrency = 1
	}
	if a.PauseAfter == 0 {
		a.PauseAfter = 3
	}
	if a.CatchUp == "" && a.Schedule != "" {
		a.CatchUp = CatchUpSkip
	}
	return a
}

// Validate checks a (defaults applied or not) and names the bad key
// relative to the automation (where[0].op); callers prefix it.
func (a Automation) Validate() *Error {
	bad := func(key, format string, args ...any) *Error {
		return &Error{Key: key, Msg: fmt.Sprintf(format, args...)}
	}
	if !automationName.MatchString(a.Name) {
		if a.Name == "" {
			return bad("name", "required")
		}
		return bad("name", "%q: use lower case letters, digits and - (at most 63)", a.Name)
	}
	switch {
	case a.Schedule == "" && a.On == nil:
		return bad("schedule", "an automation needs a schedule or on")
	case a.Schedule != "" && a.On != nil:
		return bad("on", "an automation has a schedule or on, not both")
	case a.On == nil && len(a.Where) > 0:
		return bad("where", "where narrows on; a scheduled automation has no event to filter")
	case a.Schedule != "" && a.Repo == "" && len(a.Repos) == 0:
		return bad("repo", "a scheduled automation needs repo or repos")
	case a.Repo != "" && len(a.Repos) > 0:
		return bad("repos", "set repo or repos, not both")
	case a.Timezone != "" && a.Schedule == "":
		return bad("timezone", "a timezone applies to a schedule")
	case strings.TrimSpace(a.Prompt) == "":
		return bad("prompt", "required")
	}
	for i, r := range a.Repos {
		if strings.TrimSpace(r) == "" {
			return bad(fmt.Sprintf("repos[%d]", i), "empty")
		}
	}
	if a.On != nil {
		for k, g := range map[string]string{"on.source": a.On.Source, "on.kind": a.On.Kind} {
			if _, err := pathMatch(g); err != nil {
				return bad(k, "bad glob %q", g)
			}
		}
	}
	if _, err := template.New("prompt").Option("missingkey=error").Parse(a.Prompt); err != nil {
		return bad("prompt", "bad template: %s", strings.TrimPrefix(err.Error(), "template: prompt:"))
	}
	switch a.Mode {
	case "", ModeChange, ModePlan, ModeAnswer:
	default:
		return bad("mode", "unknown mode %q (want change, plan or answer)", a.Mode)
	}
	switch a.Respond {
	case "", RespondReply, RespondSilent:
	default:
		return bad("respond", "unknown value %q (want reply or silent)", a.Respond)
	}
	switch a.CatchUp {
	case "", CatchUpSkip, CatchUpOnce:
	default:
		return bad("catch_up", "unknown policy %q (want skip or once)", a.CatchUp)
	}
	if a.CatchUp != "" && a.Schedule == "" {
		return bad("catch_up", "catch_up applies to a schedule")
	}
	if a.Concurrency < 0 {
		return bad("concurrency", "must not be negative")
	}
	if a.Budget.Tokens < 0 || a.Budget.CostUSD < 0 || a.Budget.PerDayUSD < 0 {
		return bad("budget", "must not be negative")
	}
	for i, t := range a.Allow.Teams {
		if org, team, ok := strings.Cut(t, "/"); !ok || org == "" || team == "" {
			return bad(fmt.Sprintf("allow.teams[%d]", i), "%q: want org/team", t)
		}
	}
	for i, s := range a.SecretScopes {
		if !validScope(s) {
			return bad(fmt.Sprintf("secret_scopes[%d]", i), "unknown scope %q (want agents, repo:<match>, agent:<name> or task:<id>)", s)
		}
	}
	for i, f := range a.Where {
		key := fmt.Sprintf("where[%d]", i)
		if strings.TrimSpace(f.Field) == "" {
			return bad(key+".field", "required")
		}
		switch f.Op {
		case "eq", "ne", "glob", "regex", "contains":
			if len(f.Value) != 1 {
				return bad(key+".value", "%s takes one value, got %d", f.Op, len(f.Value))
			}
		case "in":
			if len(f.Value) == 0 {
				return bad(key+".value", "in takes a list of values")
			}
		case "":
			return bad(key+".op", "required (one of %s)", strings.Join(FilterOps, ", "))
		default:
			return bad(key+".op", "unknown operator %q (want one of %s)", f.Op, strings.Join(FilterOps, ", "))
		}
		switch f.Op {
		case "regex":
			if _, err := regexp.Compile(f.Value[0]); err != nil {
				return bad(key+".value", "bad regex: %v", err)
			}
		case "glob":
			if _, err := pathMatch(f.Value[0]); err != nil {
				return bad(key+".value", "bad glob %q", f.Value[0])
			}
		}
	}
	return nil
}

func validScope(s string) bool {
	if s == "agents" {
		return true
	}
	kind, rest, ok := strings.Cut(s, ":")
	return ok && rest != "" && (kind == "repo" || kind == "agent" || kind == "task")
}

// pathMatch checks glob g is well formed.
func pathMatch(g string) (bool, error) { return path.Match(g, "") }

func (c *Config) validateAutomations() error {
	seen := map[string]int{}
	for i, a := range c.Automations {
		key := fmt.Sprintf("automations[%d]", i)
		if err := a.Validate(); err != nil {
			return &Error{Key: key + "." + err.Key, Msg: err.Msg}
		}
		if j, dup := seen[a.Name]; dup {
			return &Error{Key: key + ".name", Msg: fmt.Sprintf("%q is already the name of automations[%d]", a.Name, j)}
		}
		seen[a.Name] = i
		if a.Agent != "" && !c.knownAgent(a.Agent) {
			return &Error{Key: key + ".agent", Msg: fmt.Sprintf("unknown agent %q", a.Agent)}
		}
	}
	return nil
}
