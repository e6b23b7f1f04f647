"""trusttrace.data: the datasets and statement files."""
