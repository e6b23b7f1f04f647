"""trusttrace.activations: extraction, packing, stored activations, the random-init cache."""
