"""trusttrace.trace: the trace job."""
