package cluster

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Agent is a shell command agent for the suites. Each run records
// "<start unix ns> <pid> <task id>" in Starts before anything else, sleeps
// Sleep seconds (a shell expression, may be "0"), appends its prompt and
// pid to WORK.md in the worktree and prints a one-line summary.
type Agent struct {
	Script string
	Starts string
}

// NewAgent writes the script under dir. sleep is a shell word or
// expression for sleep(1), e.g. "25" or "0.2".
func NewAgent(t testing.TB, dir, sleep string) *Agent {
	t.Helper()
	a := &Agent{Script: filepath.Join(dir, "agent.sh"), Starts: filepath.Join(dir, "agent-starts.log")}
	script := "#!/bin/sh\n" +
		"echo \"$(date +%s%N) $$ $NIGHTSHIFT_TASK_ID $PWD\" >> " + shellQuote(a.Starts) + "\n" +
		"sleep " + sleep + "\n" +
		"printf '%s\\n' \"$NIGHTSHIFT_PROMPT\" >> WORK.md\n" +
		"echo \"agent pid $$\" >> WORK.md\n" +
		"echo 'Add the requested change'\n"
	if err := os.WriteFile(a.Script, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return a
}

// AgentStart is one recorded agent start.
type AgentStart struct {
	At     time.Time
	PID    int
	TaskID string
	// Dir is the agent's working directory (its worktree).
	Dir string
}

// Ran reports whether the agent run s worked in a worktree under r's data dir.
func (r *Role) Ran(s AgentStart) bool {
	return s.Dir != "" && strings.HasPrefix(s.Dir, r.DataDir+string(os.PathSeparator))
}

// Started lists the agent runs started so far, in order.
func (a *Agent) Started() []AgentStart {
	b, _ := os.ReadFile(a.Starts)
	var out []AgentStart
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		ns, err1 := strconv.ParseInt(f[0], 10, 64)
		pid, err2 := strconv.Atoi(f[1])
		if err1 != nil || err2 != nil {
			continue
		}
		st := AgentStart{At: time.Unix(0, ns), PID: pid, TaskID: f[2]}
		if len(f) > 3 {
			st.Dir = strings.Join(f[3:], " ")
		}
		out = append(out, st)
	}
	return out
}
