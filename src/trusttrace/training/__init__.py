"""Making checkpoints: the loop pre-training and fine-tuning share, a small model pre-trained on a local
corpus, the chat model fine-tuned from it."""
