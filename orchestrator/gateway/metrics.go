package gateway

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's Prometheus collectors; a nil *metrics records nothing.
type metrics struct {
	requests *prometheus.CounterVec
	tokens   *prometheus.CounterVec
	cost     *prometheus.CounterVec
	refusals *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "nightshift", Subsystem: "gateway",
			Name: "requests_total", Help: "Model requests by provider and HTTP status."}, []string{"provider", "code"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "nightshift", Subsystem: "gateway",
			Name: "tokens_total", Help: "Metered model tokens by provider and direction."}, []string{"provider", "direction"}),
		cost: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "nightshift", Subsystem: "gateway",
			Name: "cost_usd_total", Help: "Priced model cost in USD by provider."}, []string{"provider"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "nightshift", Subsystem: "gateway",
			Name: "refusals_total", Help: "Requests the gateway refused, by reason (auth, endpoint, budget, policy)."}, []string{"reason"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "nightshift", Subsystem: "gateway",
			Name: "request_duration_seconds", Help: "Duration of proxied model requests, streams included.",
			Buckets: []float64{0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}}, []string{"provider"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.tokens, m.cost, m.refusals, m.latency} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) request(provider string, code int) {
	if m != nil {
		m.requests.WithLabelValues(provider, strconv.Itoa(code)).Inc()
	}
}

func (m *metrics) refused(reason string) {
	if m != nil {
		m.refusals.WithLabelValues(reason).Inc()
	}
}

func (m *metrics) usage(provider string, u Usage) {
	if m != nil {
		m.tokens.WithLabelValues(provider, "input").Add(float64(u.InputTokens))
		m.tokens.WithLabelValues(provider, "output").Add(float64(u.OutputTokens))
		m.cost.WithLabelValues(provider).Add(u.CostUSD)
	}
}

func (m *metrics) duration(provider string, d time.Duration) {
	if m != nil {
		m.latency.WithLabelValues(provider).Observe(d.Seconds())
	}
}
