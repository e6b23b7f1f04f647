"""The `steer` job: its config, the sweep of layer × α on a target model, its controls, and proxy-tuned rows."""
