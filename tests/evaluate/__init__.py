"""trusttrace.evaluate: the suite, lm-eval's specs, proxy-tuning."""
