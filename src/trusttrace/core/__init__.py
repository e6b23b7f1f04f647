"""Plumbing that knows no stage: atomic writes and their records, the errors, the names users pick from,
trusttrace's cache folders, progress, statistics, executors, the run lock and file names."""
