"""What is fed to models: the five dimensions' datasets, statement files, leak-free groups, token batches."""
