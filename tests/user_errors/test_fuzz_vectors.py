"""Property-based tests of every vector file reader: whatever bytes a file holds, reading it gives a vector
or a ``TrustTraceError`` with a message, never a library's raw error (or a crash).

Readers: ``SteeringVector.load`` (.safetensors) and ``interop.import_vector`` (.gguf, .pt, .npz). Inputs:
random bytes, valid files cut short, valid files with bytes overwritten (garbage headers), and well-formed
containers holding the wrong tensor names, shapes and dtypes. Each test reports how many inputs it tried
(``pytest -s``) and puts the count in its assertion message; ``-m slow`` runs ten times as many.
"""

from __future__ import annotations

import io
import itertools
import json
import struct
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save as save_safetensors

from trusttrace.core.errors import TrustTraceError
from trusttrace.steering.interop import export_vector, import_vector
from trusttrace.steering.vector import SteeringVector

from ..support import report

SUFFIXES = (".safetensors", ".gguf", ".pt", ".npz")
FAST, SLOW = 60, 600  # examples per test (default suite, -m slow)
_names = itertools.count()


def read(path: Path) -> SteeringVector:
    return SteeringVector.load(path) if path.suffix == ".safetensors" else import_vector(path)


def outcome(folder: Path, suffix: str, blob: bytes, tally: Counter) -> None:
    """Write ``blob`` as a ``suffix`` file and read it: a vector, or a TrustTraceError with a message."""
    path = folder / f"f{next(_names)}{suffix}"
    path.write_bytes(blob)
    try:
        vector = read(path)
    except TrustTraceError as err:
        assert str(err).strip(), f"an empty message for {path}"
        assert path.name in str(err), f"the message does not name the file: {err}"
        tally["refused"] += 1
    else:
        assert isinstance(vector, SteeringVector) and vector.hidden_size > 0
        assert all(bool(torch.isfinite(v).all()) for v in vector.layers.values())
        tally["loaded"] += 1
    finally:
        path.unlink()
    tally["tried"] += 1


def valid_files(folder: Path) -> dict[str, bytes]:
    """One valid file of each format (three layers, hidden size 8)."""
    vector = SteeringVector({l: torch.randn(8, generator=torch.Generator().manual_seed(l)) for l in range(3)},
                            {"model": "m", "architecture": "llama"})
    out = {}
    for suffix, fmt in ((".gguf", "repeng"), (".pt", "lm-eval"), (".npz", "numpy")):
        out[suffix] = export_vector(vector, folder / f"valid{suffix}", fmt).read_bytes()
    vector.save(folder / "valid.safetensors")
    out[".safetensors"] = (folder / "valid.safetensors").read_bytes()
    for suffix in out:  # each valid file reads back as the vector
        assert read(folder / f"valid{suffix}").hidden_size == 8
    return out


def run(check: Callable[[], None], tally: Counter, label: str) -> None:
    check()
    summary = f"{label}: tried {tally['tried']} inputs, {tally['loaded']} loaded, {tally['refused']} refused"
    report("test_fuzz_vectors", summary)
    # some inputs must load: a reader that refused every file would pass every "refused cleanly" check
    assert tally["tried"] > 0 and tally["loaded"] > 0, summary


def fuzz_settings(n: int) -> settings:
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _random_bytes(folder: Path, n: int) -> None:
    tally: Counter = Counter()
    valid = valid_files(folder)

    @fuzz_settings(n)
    @given(case=st.one_of(st.tuples(st.sampled_from(SUFFIXES), st.binary(max_size=512)),
                          st.sampled_from(list(valid.items()))))  # now and then a file as written, which must load
    def check(case: tuple[str, bytes]) -> None:
        outcome(folder, *case, tally)

    run(check, tally, "random bytes")


def _truncated(folder: Path, n: int) -> None:
    tally: Counter = Counter()
    valid = valid_files(folder)

    @fuzz_settings(n)
    @given(suffix=st.sampled_from(SUFFIXES), cut=st.one_of(st.floats(0, 1, exclude_max=True), st.just(1.0)))
    def check(suffix: str, cut: float) -> None:
        blob = valid[suffix]
        outcome(folder, suffix, blob[: int(cut * len(blob))], tally)

    run(check, tally, "truncated files")


def _garbage_headers(folder: Path, n: int) -> None:
    """Valid files with a few bytes overwritten, mostly in the first 256 bytes (headers, lengths, offsets)."""
    tally: Counter = Counter()
    valid = valid_files(folder)

    @fuzz_settings(n)
    @given(suffix=st.sampled_from(SUFFIXES), data=st.data())
    def check(suffix: str, data: st.DataObject) -> None:
        blob = bytearray(valid[suffix])
        edits = data.draw(st.lists(st.tuples(st.integers(0, min(255, len(blob) - 1)), st.integers(0, 255)),
                                   max_size=6))  # no edit: the file as it was
        for pos, byte in edits:
            blob[pos] = byte
        outcome(folder, suffix, bytes(blob), tally)

    run(check, tally, "garbage headers")


DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int8, torch.bool)
NAMES = st.one_of(st.sampled_from(["layer_0", "layer_1", "layer_12", "layer_-1", "layer_x", "layer_", "weight",
                                   "layer_٣", "direction.0"]), st.text(min_size=1, max_size=12))
SHAPES = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple)


@st.composite
def tensors(draw: st.DrawFn) -> torch.Tensor:
    dtype, shape = draw(st.sampled_from(DTYPES)), draw(SHAPES)
    if dtype == torch.bool:
        return torch.zeros(shape, dtype=dtype)
    special = draw(st.sampled_from([None, float("nan"), float("inf"), 1e39]))
    t = torch.ones(shape, dtype=torch.float64) * draw(st.floats(-3, 3))
    if special is not None and t.numel():
        t.view(-1)[0] = special
    return t.to(dtype)


def _wrong_contents(folder: Path, n: int) -> None:
    """Well-formed containers holding the wrong names, shapes, dtypes and structures."""
    tally: Counter = Counter()
    valid = valid_files(folder)

    @fuzz_settings(n)
    @given(suffix=st.sampled_from((".safetensors", ".pt", ".npz")),
           entries=st.dictionaries(NAMES, tensors(), max_size=4), data=st.data(), intact=st.booleans())
    def check(suffix: str, entries: dict[str, torch.Tensor], data: st.DataObject, intact: bool) -> None:
        if intact:  # now and then the file as written, which must load
            outcome(folder, suffix, valid[suffix], tally)
            return
        if suffix == ".safetensors":
            meta = data.draw(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3))
            blob = save_safetensors({k: v.contiguous() for k, v in entries.items()}, metadata=meta)
        elif suffix == ".pt":
            shape = data.draw(st.sampled_from(["dict", "bare", "list", "coefficient", "action"]))
            config: object = {k: {"steering_vector": v, "steering_coefficient": 1.0, "action": "add"}
                              for k, v in entries.items()}
            if shape == "bare":
                config = dict(entries)
            elif shape == "list":
                config = list(entries.values())
            elif shape in ("coefficient", "action") and entries:
                key = next(iter(entries))
                config = {key: {"steering_vector": entries[key],
                                "steering_coefficient": data.draw(st.sampled_from(["x", None, [1], 2.0])),
                                "action": data.draw(st.sampled_from(["add", "clamp", 3]))}}
            buffer = io.BytesIO()
            torch.save(config, buffer)
            blob = buffer.getvalue()
        else:
            arrays = {k.replace("/", "_") or "x": v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
                      for k, v in entries.items()}
            if data.draw(st.booleans()):
                arrays["layers"] = np.array(data.draw(st.lists(st.integers(-2, 40), max_size=4)))
            if data.draw(st.booleans()):
                arrays["directions"] = data.draw(tensors()).float().numpy()
            if data.draw(st.booleans()):
                arrays["meta"] = np.asarray(data.draw(st.sampled_from(['{"a": 1}', "[1]", "{", "3"])))
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            blob = buffer.getvalue()
        outcome(folder, suffix, blob, tally)

    run(check, tally, "wrong names, shapes and dtypes")


def _safetensors_headers(folder: Path, n: int) -> None:
    """safetensors files whose JSON header is made up: wrong offsets, dtypes, shapes, or not JSON at all."""
    tally: Counter = Counter()
    entry = st.fixed_dictionaries({"dtype": st.sampled_from(["F32", "F16", "I64", "XX", 3]),
                                   "shape": st.lists(st.integers(-1, 2**40), max_size=3),
                                   "data_offsets": st.lists(st.integers(-1, 2**40), max_size=3)})
    header = st.one_of(st.dictionaries(NAMES, entry, max_size=3).map(json.dumps), st.text(max_size=40))

    valid = valid_files(folder)[".safetensors"]

    @fuzz_settings(n)
    @given(text=header, body=st.binary(max_size=64), declared=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
           intact=st.booleans())
    def check(text: str, body: bytes, declared: int | None, intact: bool) -> None:
        if intact:  # now and then the file as written, which must load
            outcome(folder, ".safetensors", valid, tally)
            return
        raw = text.encode("utf-8")
        size = len(raw) if declared is None else declared
        outcome(folder, ".safetensors", struct.pack("<Q", size) + raw + body, tally)

    run(check, tally, "safetensors headers")


CASES = [_random_bytes, _truncated, _garbage_headers, _wrong_contents, _safetensors_headers]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__.strip("_"))
def test_readers_answer_every_file(case, tmp_path):
    case(tmp_path, FAST)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__.strip("_"))
def test_readers_answer_every_file_at_length(case, tmp_path):
    case(tmp_path, SLOW)
