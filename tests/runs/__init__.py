"""trusttrace.runs: layouts, records, settings, tables."""
