import numpy as np
import torch

from trusttrace.layout import TraceLayout
from trusttrace.store import is_complete, load_activations, read_metadata, save_activations


def test_roundtrip_atomic_and_metadata(tmp_path):
    path = TraceLayout(tmp_path).activation("org/step1", "fairness")
    acts = torch.randn(3, 5, 4)
    save_activations(path, acts, np.array([0, 1, 0, 1, 1]), {"model": "m", "n_rows": "5", "limit": None})
    assert path.parent.name == "org__step1" and list(path.parent.iterdir()) == [path]
    stored = load_activations(path)
    torch.testing.assert_close(stored.layers, acts.to(torch.bfloat16).float())
    assert list(stored.labels) == [0, 1, 0, 1, 1]
    meta = read_metadata(path)
    assert meta["n_layers"] == "3" and meta["storage_dtype"] == "bfloat16" and meta["limit"] == "null"
    assert is_complete(path, {"model": "m", "n_rows": "5"})
    assert not is_complete(path, {"n_rows": "6"})
    assert load_activations(path, layers=[2]).layers.shape == (1, 5, 4)
