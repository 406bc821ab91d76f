package orchestrator

import "context"

// redactRun gives the run its redactor: the tokens the run hands its agent,
// the task's secrets and the worker's own Redactor. It fails closed: when
// the worker is configured with Secrets and they cannot be loaded, the run
// must not start (a retryable "secrets" step error), since nothing it would
// emit, publish or push could be checked for them. rep.redact is set even
// then, so the failure itself is reported redacted.
func (w *Worker) redactRun(ctx context.Context, r *run) error {
	rep, item := r.rep, r.item
	if rep.tokens == nil {
		rep.tokens = &tokenRedactor{newRedactor: w.cfg.NewRedactor}
	}
	rep.redact = chainRedactors(rep.tokens, w.cfg.Redactor)
	if w.cfg.Secrets == nil {
		r.redacted = true
		return nil
	}
	if w.cfg.NewRedactor == nil {
		return stepErr("config", "the worker has Secrets but no NewRedactor: a run cannot redact the task's secrets")
	}
	secrets, err := w.cfg.Secrets(ctx, item.TaskID, item.Agent, item.Repo)
	if err != nil {
		return retryErr("secrets", "load the task's secrets for redaction (nothing runs without them): %w", err)
	}
	rep.redact = chainRedactors(rep.tokens, w.cfg.NewRedactor(secrets), w.cfg.Redactor)
	r.redacted = true
	return nil
}

// unredacted refuses to let anything of a run leave (a push) when the run
// has no redactor for the task's secrets.
func (r *run) unredacted() error {
	if r.redacted && r.rep.redact != nil {
		return nil
	}
	return retryErr("secrets", "the run has no redactor for the task's secrets; nothing was pushed")
}
