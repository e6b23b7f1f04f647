"""trusttrace.demo: the demo job and its plan."""
