package orchestrator

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the orchestrator's Prometheus metrics. A nil *Metrics records
// nothing.
type Metrics struct {
	eventsConsumed *prometheus.CounterVec
	tasksCreated   *prometheus.CounterVec
	transitions    *prometheus.CounterVec
	runDuration    prometheus.Histogram
	sandboxEnds    *prometheus.CounterVec
	pushErrors     prometheus.Counter
	tokens         *prometheus.CounterVec
	cost           prometheus.Counter
}

// NewMetrics registers the orchestrator's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		eventsConsumed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nightshift_scheduler_events_total",
			Help: "Events consumed by the scheduler, by source, kind and outcome (created, follow_up, duplicate, control)."},
			[]string{"source", "kind", "outcome"}),
		tasksCreated: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nightshift_tasks_created_total",
			Help: "Tasks created, by source."}, []string{"source"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nightshift_task_transitions_total",
			Help: "Recorded task state transitions, by target state."}, []string{"state"}),
		runDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "nightshift_task_run_duration_seconds",
			Help: "Duration of task runs on this worker.", Buckets: prometheus.ExponentialBuckets(1, 2, 14)}),
		sandboxEnds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nightshift_sandbox_exits_total",
			Help: "Sandboxed commands ended, by reason (exit N is folded to exit)."}, []string{"reason"}),
		pushErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "nightshift_push_errors_total",
			Help: "Failed pushes."}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nightshift_model_tokens_total",
			Help: "Model tokens used by tasks, by direction."}, []string{"direction"}),
		cost: prometheus.NewCounter(prometheus.CounterOpts{Name: "nightshift_model_cost_usd_total",
			Help: "Model cost reported by agents, in USD."}),
	}
	reg.MustRegister(m.eventsConsumed, m.tasksCreated, m.transitions, m.runDuration, m.sandboxEnds, m.pushErrors, m.tokens, m.cost)
	return m
}

func (m *Metrics) event(ev *Event, outcome string) {
	if m != nil {
		m.eventsConsumed.WithLabelValues(string(ev.Source), ev.Kind, outcome).Inc()
	}
}

func (m *Metrics) created(src Source) {
	if m != nil {
		m.tasksCreated.WithLabelValues(string(src)).Inc()
	}
}

func (m *Metrics) transition(s State) {
	if m != nil {
		m.transitions.WithLabelValues(string(s)).Inc()
	}
}

func (m *Metrics) observeRun(d time.Duration) {
	if m != nil {
		m.runDuration.Observe(d.Seconds())
	}
}

func (m *Metrics) sandboxEnded(reason string) {
	if m == nil {
		return
	}
	if len(reason) > 5 && reason[:5] == "exit " {
		reason = "exit"
	}
	m.sandboxEnds.WithLabelValues(reason).Inc()
}

func (m *Metrics) pushFailed() {
	if m != nil {
		m.pushErrors.Inc()
	}
}

func (m *Metrics) usage(u Usage) {
	if m != nil {
		m.tokens.WithLabelValues("input").Add(float64(u.InputTokens))
		m.tokens.WithLabelValues("output").Add(float64(u.OutputTokens))
		m.cost.Add(u.CostUSD)
	}
}
