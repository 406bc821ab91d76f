package main

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nightshift/nightshift/config"
	"github.com/nightshift/nightshift/ingress/api"
	"github.com/nightshift/nightshift/orchestrator"
	"github.com/nightshift/nightshift/orchestrator/automation"
)

// newAutomations opens the automation buckets and seeds them with the
// automations of nightshift.yaml (an invalid entry fails the start and
// names its key). reg is nil for an engine that only serves the API.
func newAutomations(ctx context.Context, bus *orchestrator.Bus, cfg *config.Config, reg prometheus.Registerer, logger *slog.Logger) (*automation.Engine, error) {
	e, err := automation.New(ctx, bus.JetStream(), automation.Config{Replicas: cfg.NATS.Replicas, Logger: logger, Metrics: reg})
	if err != nil {
		return nil, err
	}
	if err := e.Seed(ctx, cfg.Automations); err != nil {
		return nil, err
	}
	return e, nil
}

// mountAutomations serves /api/v1/automations and /api/v1/inbox (ingress).
func mountAutomations(ctx context.Context, apiSrv *api.Server, bus *orchestrator.Bus, cfg *config.Config, logger *slog.Logger) error {
	e, err := newAutomations(ctx, bus, cfg, nil, logger)
	if err != nil {
		return err
	}
	apiSrv.MountAutomations(e)
	return nil
}

// automationRunner returns the runner that fires schedules, matches events
// and follows runs (scheduler role). Any number of schedulers may run it.
func automationRunner(ctx context.Context, bus *orchestrator.Bus, cfg *config.Config, reg prometheus.Registerer, logger *slog.Logger) (func(context.Context) error, error) {
	e, err := newAutomations(ctx, bus, cfg, reg, logger)
	if err != nil {
		return nil, err
	}
	return e.Run, nil
}
