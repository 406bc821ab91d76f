package webhook

import "github.com/prometheus/client_golang/prometheus"

// Delivery outcomes, the "outcome" label of nightshift_webhook_deliveries_total.
const (
	outcomeAccepted  = "accepted"
	outcomeDuplicate = "duplicate"
	outcomeIgnored   = "ignored"
	outcomeRefused   = "refused"
	outcomeRejected  = "rejected" // 4xx: bad signature, malformed, too large
	outcomeFailed    = "failed"   // 503: not stored
)

type metrics struct {
	deliveries *prometheus.CounterVec
	refused    *prometheus.CounterVec
	duration   *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nightshift_webhook_deliveries_total",
			Help: "Webhook deliveries by source and outcome.",
		}, []string{"source", "outcome"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nightshift_webhook_refused_total",
			Help: "Triggers refused by authorization or the CI attempt cap, by source and reason.",
		}, []string{"source", "reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nightshift_webhook_duration_seconds",
			Help:    "Time to answer a webhook delivery, by source.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"source"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.deliveries, m.refused, m.duration} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
