"""trusttrace.steer: the steer job, its controls, proxy-tuned rows."""
