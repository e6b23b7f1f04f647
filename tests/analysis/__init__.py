"""trusttrace.analysis: probes, the line search, controls, mutual information, phases, correlation."""
