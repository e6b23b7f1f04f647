"""trusttrace.cli: the command."""
