"""Every user mistake answered with its message and nothing half-written: the walk, fuzzing, models."""
