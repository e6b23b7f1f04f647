"""trusttrace.training: pre-training, fine-tuning, the corpus."""
