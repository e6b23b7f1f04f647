"""trusttrace.report: the page and its figures, in a headless browser too."""
