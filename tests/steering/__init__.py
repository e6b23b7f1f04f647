"""trusttrace.steering: vectors, the vectors job, other tools' formats."""
