"""trusttrace.models: model names, checkpoint series, the hub, model files, loading, prefetching."""
