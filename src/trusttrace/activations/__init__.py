"""Last-token activations of every block: extracted in prefix-tree packed rows, stored as safetensors, and the
untrained network's kept once per machine."""
