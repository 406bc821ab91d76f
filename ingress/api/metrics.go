package api

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nightshift/nightshift/orchestrator"
)

// Metric names the API and its collectors export. Webhook deliveries are
// counted by ingress/webhook (nightshift_webhook_deliveries_total), events
// consumed, transitions, runs, sandbox exits, pushes, tokens and cost by
// the orchestrator (orchestrator/metrics.go); these complete the picture.

// Metrics are the API's own counters. A nil *Metrics records nothing.
type Metrics struct {
	requests *prometheus.CounterVec
}

// NewMetrics registers the API's counters on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nightshift_api_task_requests_total",
			Help: "Tasks requested through POST /api/v1/tasks, by outcome (accepted, rejected, queue_full, failed)."},
			[]string{"outcome"}),
	}
	reg.MustRegister(m.requests)
	return m
}

func (m *Metrics) requested(outcome string) {
	if m != nil {
		m.requests.WithLabelValues(outcome).Inc()
	}
}

// Collector reports the task store at scrape time: tasks by state, queue
// depth and the age of the oldest queued task. Every process reading the
// same database reports the same numbers, so scrape one of them.
type Collector struct {
	store   *orchestrator.Store
	now     func() time.Time
	timeout time.Duration

	tasks, depth, age, up *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a collector over store. Register it on the server's
// registry.
func NewCollector(store *orchestrator.Store) *Collector {
	return &Collector{store: store, now: time.Now, timeout: 5 * time.Second,
		tasks: prometheus.NewDesc("nightshift_tasks", "Tasks by current state.", []string{"state"}, nil),
		depth: prometheus.NewDesc("nightshift_queue_depth", "Tasks waiting for a worker (state queued).", nil, nil),
		age: prometheus.NewDesc("nightshift_queue_oldest_age_seconds",
			"How long the longest-waiting queued task has waited (0 when none).", nil, nil),
		up: prometheus.NewDesc("nightshift_store_up", "1 when the task store answered the scrape.", nil, nil),
	}
}

// Describe sends the descriptors.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.tasks
	ch <- c.depth
	ch <- c.age
	ch <- c.up
}

// Collect queries the store.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	counts, err := c.store.CountByState(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	oldest, ok, err := c.store.OldestQueued(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	for _, st := range orchestrator.States {
		ch <- prometheus.MustNewConstMetric(c.tasks, prometheus.GaugeValue, float64(counts[st]), string(st))
	}
	ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(counts[orchestrator.StateQueued]))
	age := 0.0
	if ok {
		age = c.now().Sub(oldest).Seconds()
		if age < 0 {
			age = 0
		}
	}
	ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, age)
}

// StepRecorder watches every task's state reports and records how long each
// step (queued, provisioning, running, testing, pushing) took and why runs
// ended. Run it in one process per cluster (the ingress).
type StepRecorder struct {
	bus      *orchestrator.Bus
	steps    *prometheus.HistogramVec
	outcomes *prometheus.CounterVec
	mu       sync.Mutex
	last     map[string]stepMark
}

type stepMark struct {
	run   int
	state orchestrator.State
	at    time.Time
}

// NewStepRecorder registers the step metrics on reg.
func NewStepRecorder(bus *orchestrator.Bus, reg prometheus.Registerer) *StepRecorder {
	r := &StepRecorder{bus: bus, last: map[string]stepMark{},
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "nightshift_task_step_duration_seconds",
			Help:    "Time a task run spent in a step (the state it left), by step.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 18)}, []string{"step"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nightshift_task_outcomes_total",
			Help: "Task runs that came to rest, by state (review, needs_input, failed, cancelled) and reason."},
			[]string{"state", "reason"}),
	}
	reg.MustRegister(r.steps, r.outcomes)
	return r
}

// Run records until ctx is done.
func (r *StepRecorder) Run(ctx context.Context) error {
	return r.bus.WatchStates(ctx, func(m orchestrator.TaskMessage) error {
		if m.State != nil {
			r.observe(*m.State)
		}
		return nil
	})
}

func (r *StepRecorder) observe(rep orchestrator.StateReport) {
	r.mu.Lock()
	defer r.mu.Unlock()
	prev, ok := r.last[rep.TaskID]
	if ok && prev.state == rep.State && prev.run == rep.Run {
		return // a duplicate report
	}
	if ok && rep.Run >= prev.run && !prev.at.IsZero() && !rep.At.IsZero() && stepState(prev.state) {
		if d := rep.At.Sub(prev.at); d >= 0 {
			r.steps.WithLabelValues(string(prev.state)).Observe(d.Seconds())
		}
	}
	switch rep.State {
	case orchestrator.StateReview, orchestrator.StateNeedsInput, orchestrator.StateFailed, orchestrator.StateCancelled, orchestrator.StateDone:
		reason := rep.Reason
		if rep.Patch.Reason != nil {
			reason = *rep.Patch.Reason
		}
		if rep.State == orchestrator.StateReview || rep.State == orchestrator.StateDone {
			reason = ""
		}
		if len(reason) > 40 {
			reason = "other"
		}
		r.outcomes.WithLabelValues(string(rep.State), reason).Inc()
		delete(r.last, rep.TaskID)
		return
	}
	if len(r.last) > 100000 {
		clear(r.last) // tasks that never came to rest (lost workers); start over
	}
	r.last[rep.TaskID] = stepMark{run: rep.Run, state: rep.State, at: rep.At}
}

func stepState(s orchestrator.State) bool {
	switch s {
	case orchestrator.StateQueued, orchestrator.StateProvisioning, orchestrator.StateRunning, orchestrator.StateTesting, orchestrator.StatePushing:
		return true
	}
	return false
}
