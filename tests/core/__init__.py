"""trusttrace.core: the registry of choices, executors, the run lock."""
