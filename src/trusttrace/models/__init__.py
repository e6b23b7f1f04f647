"""Which model and which checkpoints: Hugging Face Hub calls, catalogs and local series, where a model's files
are, the GGUF cache, loading a model and its decoder blocks, checkpoints fetched ahead."""
