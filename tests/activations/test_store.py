import numpy as np
import torch

from trusttrace.activations.store import is_complete, load_activations, read_metadata, save_activations
from trusttrace.runs.layout import TraceLayout


def test_roundtrip_atomic_and_metadata(tmp_path):
    path = TraceLayout(tmp_path).activation("org/step1", "fairness")
    acts = torch.randn(3, 5, 4)
    save_activations(path, acts, np.array([0, 1, 0, 1, 1]), {"model": "m", "n_rows": "5", "limit": None})
    assert path.parent.name == "org%2Fstep1"
    assert sorted(path.parent.iterdir()) == [path, path.with_name(path.name + ".sha256.json")]  # and its record
    stored = load_activations(path)
    torch.testing.assert_close(stored.layers, acts.to(torch.bfloat16).float())
    assert list(stored.labels) == [0, 1, 0, 1, 1]
    meta = read_metadata(path)
    assert meta["n_layers"] == "3" and meta["storage_dtype"] == "bfloat16" and meta["limit"] == "null"
    assert is_complete(path, {"model": "m", "n_rows": "5"})
    assert not is_complete(path, {"n_rows": "6"})
    assert load_activations(path, layers=[2]).layers.shape == (1, 5, 4)


def test_damaged_activations_raise_a_named_error_never_a_parser_error(tmp_path):
    import pytest

    from trusttrace.core.errors import DamagedFileError

    path = tmp_path / "a" / "x.safetensors"
    save_activations(path, torch.randn(2, 4, 3), np.array([0, 1, 0, 1]), {"n_rows": "4"})
    data = path.read_bytes()
    path.write_bytes(data[:-7])  # truncated
    with pytest.raises(DamagedFileError, match="x.safetensors.*trusttrace trace"):
        load_activations(path)
    assert not is_complete(path, {"n_rows": "4"})
    path.write_bytes(data[:-7] + b"\xff" * 7)  # the same size, other bytes
    with pytest.raises(DamagedFileError, match="sha256"):
        load_activations(path)
    path.with_name(path.name + ".sha256.json").unlink()  # without its record: parsed, and garbage is refused
    path.write_bytes(b"garbage" * 3)
    with pytest.raises(DamagedFileError, match="cannot be read"):
        load_activations(path)
    with pytest.raises(DamagedFileError):
        read_metadata(path)
