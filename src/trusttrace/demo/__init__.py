"""The `demo` job: every stage on a model pre-trained here, the plan that sizes it to a time budget, and its
summary."""
