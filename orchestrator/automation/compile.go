// Package automation runs user-defined triggers: automations defined in
// nightshift.yaml or through the API, stored and versioned in a replicated
// JetStream KV bucket. An automation only produces normalized events (one
// orchestrator.Event per run, published on the events stream with a
// delivery id unique per automation and tick or matched event); the
// scheduler turns them into tasks like any other event.
//
// Guarantees: a schedule fires once per tick whatever the number of
// engines (a revision-checked KV create claims each tick; no leader); a
// matched event starts at most one run per automation and repository (the
// run id is derived from the delivery id, and the published event's
// delivery id dedupes a redelivery); guard rails (who may trigger, budget
// per day, concurrency, pause after consecutive failures) are decided by
// one revision-checked update of the automation's state, so every engine
// sees the same count.
package automation

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"text/template"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/orchestrator"
)

// Compiled is an automation ready to run: its filter, prompt template and
// schedule parsed once.
type Compiled struct {
	Def      config.Automation
	filter   *Filter
	prompt   *template.Template
	schedule cron.Schedule
	every    time.Duration // @every schedules tick on multiples of it since the epoch
	loc      *time.Location
}

// CompileError names the bad key of a definition (where[0].op).
type CompileError = config.Error

// Compile validates def (with its defaults applied) and compiles it. The
// error names the key relative to the automation.
func Compile(def config.Automation) (*Compiled, error) {
	def = def.WithDefaults()
	if err := def.Validate(); err != nil {
		return nil, err
	}
	c := &Compiled{Def: def, loc: time.UTC}
	if def.On != nil {
		f, err := CompileFilter(*def.On, def.Where)
		if err != nil {
			return nil, err
		}
		c.filter = f
	}
	tmpl, err := template.New("prompt").Option("missingkey=error").Parse(def.Prompt)
	if err != nil {
		return nil, &config.Error{Key: "prompt", Msg: "bad template: " + err.Error()}
	}
	// Executing over a sample event finds fields the event does not have
	// ({{.Target.Link}}) at load, not at the first run.
	if _, err := render(tmpl, sampleEvent()); err != nil {
		return nil, &config.Error{Key: "prompt", Msg: err.Error()}
	}
	c.prompt = tmpl
	if def.Timezone != "" {
		loc, err := time.LoadLocation(def.Timezone)
		if err != nil {
			return nil, &config.Error{Key: "timezone", Msg: fmt.Sprintf("unknown time zone %q", def.Timezone)}
		}
		c.loc = loc
	}
	if def.Schedule != "" {
		if err := c.parseSchedule(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

func (c *Compiled) parseSchedule() error {
	spec := strings.TrimSpace(c.Def.Schedule)
	if rest, ok := strings.CutPrefix(spec, "@every "); ok {
		d, err := time.ParseDuration(strings.TrimSpace(rest))
		if err != nil || d < time.Second || d%time.Second != 0 {
			return &config.Error{Key: "schedule", Msg: fmt.Sprintf("%q: @every takes whole seconds, at least 1s (30m, 2h)", spec)}
		}
		c.every = d
		return nil
	}
	s, err := cronParser.Parse(spec)
	if err != nil {
		return &config.Error{Key: "schedule", Msg: fmt.Sprintf("%q: %v (want 5 fields: minute hour day-of-month month day-of-week, or @every 30m)", spec, err)}
	}
	c.schedule = s
	return nil
}

// Next returns the first tick strictly after t, or the zero time for an
// automation without a schedule. @every ticks fall on multiples of the
// interval since the Unix epoch, so every engine computes the same ticks.
func (c *Compiled) Next(t time.Time) time.Time {
	switch {
	case c.every > 0:
		n := t.Unix()/int64(c.every/time.Second) + 1
		return time.Unix(n*int64(c.every/time.Second), 0).UTC()
	case c.schedule != nil:
		return c.schedule.Next(t.In(c.loc)).UTC()
	}
	return time.Time{}
}

// Scheduled reports whether the automation fires on a schedule.
func (c *Compiled) Scheduled() bool { return c.every > 0 || c.schedule != nil }

// Matches reports whether ev triggers the automation (on + where).
func (c *Compiled) Matches(ev *orchestrator.Event) bool {
	return c.filter != nil && c.filter.Match(ev)
}

// Prompt renders the prompt over ev.
func (c *Compiled) Prompt(ev *orchestrator.Event) (string, error) { return render(c.prompt, ev) }

func render(t *template.Template, ev *orchestrator.Event) (string, error) {
	var b bytes.Buffer
	if err := t.Execute(&b, ev); err != nil {
		return "", fmt.Errorf("prompt template: %w", err)
	}
	return b.String(), nil
}

func sampleEvent() *orchestrator.Event {
	return &orchestrator.Event{ID: "sample", Source: orchestrator.SourceAPI, Kind: "sample", Repo: "github.com/acme/api",
		Target:     orchestrator.Target{Type: "issue", Number: 1, URL: "https://github.com/acme/api/issues/1"},
		Automation: &orchestrator.AutomationRun{}}
}

// hash is a stable digest of a definition (to tell a changed config entry).
func hash(def config.Automation) string {
	b, _ := json.Marshal(def)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
