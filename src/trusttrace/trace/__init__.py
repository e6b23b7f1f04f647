"""The `trace` job: one checkpoint as the unit of work, what a rerun reuses, and tracing during training."""
