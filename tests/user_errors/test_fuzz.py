"""Property-based tests of what a user types or hands over: each input works, or is refused with a
``TrustTraceError`` whose message is not empty; never a library's raw error, never a crash.

- dataset files (``data.load_datasets`` on a user CSV/TSV/JSONL): encodings (UTF-8, UTF-8 with a BOM,
  UTF-16, Latin-1), quoting, line endings, NaN, integers/floats/booleans/text as labels, a group column,
  empty files, huge fields, random bytes;
- dataset names (``data.dataset_names``) and checkpoint selectors (``CheckpointSeries.select``, and
  ``--revisions`` on a local series folder);
- the CLI's option parsers (``numbers``, ``gigabytes``, ``sigma``, ``transfer_pairs``, ``dimensions``,
  ``split``, ``parse_controls``);
- ``report`` on a results.csv of arbitrary columns and values.

Each test counts the inputs it tried (accepted and refused) and the module prints one line per test when it
ends (shown in pytest's summary, also without ``-s``). The default suite runs ``FAST`` examples per test;
``-m slow`` runs the same properties with ``SLOW`` examples.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trusttrace.cli import _shared
from trusttrace.core.errors import TrustTraceError
from trusttrace.data.datasets import dataset_names, load_datasets
from trusttrace.models.checkpoints import Checkpoint, CheckpointSeries
from trusttrace.report import ReportConfig, run_report

from ..support import report

FAST = {"data": 150, "bytes": 100, "names": 150, "select": 200, "revisions": 80, "options": 120, "report": 40}
SLOW_FACTOR = 10
TALLY: dict[str, Counter[str]] = defaultdict(Counter)
_ids = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def _counts() -> Iterator[None]:
    """One line per fuzz test at the end of the run: how many inputs it tried, accepted and refused."""
    yield
    for name, tally in sorted(TALLY.items()):
        report("test_fuzz", f"fuzz {name}: tried {tally['tried']} inputs ({tally['accepted']} accepted, "
                            f"{tally['refused']} refused with a TrustTraceError)")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def outcome(name: str, call: Callable[[], Any]) -> Any:
    """``call()``: its value, or None when it raised a TrustTraceError with a message; anything else raised
    fails the test (hypothesis then shrinks the input)."""
    TALLY[name]["tried"] += 1
    try:
        value = call()
    except TrustTraceError as err:
        assert str(err).strip(), f"{name}: a {type(err).__name__} without a message"
        TALLY[name]["refused"] += 1
        return None
    TALLY[name]["accepted"] += 1
    return value


def fuzz(kind: str, slow: bool) -> settings:
    return settings(max_examples=FAST[kind] * (SLOW_FACTOR if slow else 1), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


def accepted() -> int:
    return sum(tally["accepted"] for tally in TALLY.values())


def run_property(kind: str, prop: Callable[..., None], folder: Path, slow: bool) -> None:
    """Run ``prop`` over its inputs, and require that some were accepted: a reader that refused everything would
    pass every "refused cleanly" check, so a property is only a test when both outcomes occur."""
    before = accepted()
    fuzz(kind, slow)(prop)(folder)
    assert accepted() > before, f"fuzz {kind}: no input was accepted, so only refusals were tested"


# ---------------------------------------------------------------- dataset files

labels = st.one_of(st.sampled_from([0, 1, "0", "1", 0.0, 1.0, "1.0", " 1 ", "0.00"]), st.integers(-3, 3),
                   st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.text(max_size=4), st.none())
statements = st.one_of(st.text(max_size=40), st.sampled_from(["a, b", 'say "hi"', "line\nbreak", "", "  ", "ÄÖü ✓"]),
                       st.integers(0, 10).map(lambda k: "x" * (10_000 * k)), st.integers(), st.none())
ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "latin-1")


@st.composite
def statement_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """A statement file as a user might write it: columns, rows, encoding, quoting and line endings drawn."""
    suffix = draw(st.sampled_from([".csv", ".tsv", ".jsonl", ".json"]))
    if draw(st.booleans()):  # a good file, in any of the accepted forms
        columns = draw(st.sampled_from([["statement", "label"], ["statement", "label", "group"],
                                        ["label", "statement"]]))
        good = st.fixed_dictionaries({"statement": st.text(min_size=1, max_size=30).filter(str.strip),
                                      "label": st.sampled_from([0, 1, "0", "1", 0.0, 1.0, " 1 "]),
                                      "group": st.sampled_from(["g1", "g2", 3])})
        rows = [{"statement": "first", "label": 0, "group": "g1"}, {"statement": "second", "label": 1, "group": "g2"},
                *draw(st.lists(good, max_size=10))]
        rows = [{c: r[c] for c in columns} for r in rows]
    else:
        columns = draw(st.sampled_from([["statement", "label"], ["statement", "label", "group"],
                                        ["label", "statement"], ["text", "label"], ["statement"],
                                        ["Statement", "Label"]]))
        rows = draw(st.lists(st.fixed_dictionaries({c: (labels if c.lower() == "label" else statements
                                                        if c.lower() in ("statement", "text")
                                                        else st.one_of(st.text(max_size=3), st.integers(0, 3),
                                                                       st.none()))
                                                    for c in columns}), max_size=12))
    encoding = draw(st.sampled_from(ENCODINGS))
    if suffix in (".jsonl", ".json"):
        text = "\n".join(json.dumps(r, allow_nan=True) for r in rows)
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, columns, delimiter="\t" if suffix == ".tsv" else ",",
                                quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC])),
                                lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
        if draw(st.integers(0, 4)):  # mostly with a header
            writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        text = buffer.getvalue()
    return suffix, text.encode(encoding, errors="replace")


def load_user_file(name: str, folder: Path, suffix: str, blob: bytes) -> None:
    path = folder / f"d{next(_ids)}{suffix}"
    path.write_bytes(blob)
    try:
        found = outcome(name, lambda: load_datasets([str(path)]))
    finally:
        path.unlink()
    if found is not None:
        (ds,) = found.values()
        assert len(ds.statements) == len(ds.labels) == len(ds.groups) > 0
        assert set(np.unique(ds.labels).tolist()) == {0, 1}
        assert all(isinstance(s, str) and s.strip() for s in ds.statements)


@given(statement_files())
def _dataset_file(folder: Path, file: tuple[str, bytes]) -> None:
    load_user_file("dataset file", folder, *file)


@given(st.sampled_from([".csv", ".tsv", ".jsonl", ".json"]),
       st.one_of(st.binary(max_size=300), st.binary(max_size=50).map(lambda b: b"statement,label\n" + b),
                 st.binary(max_size=50).map(lambda b: b"\xff\xfe" + b), st.just(b""), st.just(b"\xef\xbb\xbf"),
                 st.just(b"statement,label\na,1\nb,0\n")))  # bytes that are a file (as .csv)
def _random_bytes(folder: Path, suffix: str, blob: bytes) -> None:
    load_user_file("dataset file of random bytes", folder, suffix, blob)


def test_dataset_files(folder: Path) -> None:
    run_property("data", _dataset_file, folder, slow=False)


@pytest.mark.slow
def test_dataset_files_slow(folder: Path) -> None:
    run_property("data", _dataset_file, folder, slow=True)


def test_dataset_random_bytes(folder: Path) -> None:
    run_property("bytes", _random_bytes, folder, slow=False)


@pytest.mark.slow
def test_dataset_random_bytes_slow(folder: Path) -> None:
    run_property("bytes", _random_bytes, folder, slow=True)


def test_the_readers_accept_every_encoding_a_user_saves(tmp_path: Path) -> None:
    """The accepted forms, once each: what the fuzzing's ``accepted`` count is made of."""
    text = "statement,label\n\"a, b\",1\nc,0\n"
    for i, encoding in enumerate(("utf-8", "utf-8-sig", "utf-16")):
        (tmp_path / f"e{i}.csv").write_bytes(text.encode(encoding))
        (ds,) = load_datasets([str(tmp_path / f"e{i}.csv")]).values()
        assert ds.statements == ("a, b", "c") and ds.labels.tolist() == [1, 0]
    (tmp_path / "t.tsv").write_text("statement\tlabel\na, b\t1.0\nc\t0\n")
    (tmp_path / "j.jsonl").write_text('{"statement": "a", "label": 1}\n\n{"statement": "c", "label": 0.0}\n')
    (tmp_path / "l.json").write_text('[{"statement": "a", "label": 1}, {"statement": "c", "label": 0}]')
    assert set(load_datasets([str(tmp_path / n) for n in ("t.tsv", "j.jsonl", "l.json")])) == {"t", "j", "l"}


# ---------------------------------------------------------------- names, selectors, revisions

@given(st.lists(st.one_of(st.sampled_from(["toxicity", "toxigen", "privacy", "all", "truthfulqa_heldout", "x.csv",
                                           "a/b", "", ".", "/", "~", "..", "\x00", "a" * 300, "x" * 5000 + ".csv"]),
                          st.text(max_size=20)), max_size=5))
def _names(folder: Path, names: list[str]) -> None:
    found = outcome("dataset names", lambda: dataset_names(names))
    if found is not None:
        assert found and set(found.values()) <= set(names)


def test_dataset_names(folder: Path) -> None:
    run_property("names", _names, folder, slow=False)


@pytest.mark.slow
def test_dataset_names_slow(folder: Path) -> None:
    run_property("names", _names, folder, slow=True)


def series(n: int) -> CheckpointSeries:
    return CheckpointSeries("m", tuple(Checkpoint(f"step{s}", s, "m", f"step{s}") for s in range(0, 10 * n, 10)),
                            "list")


selectors = st.one_of(
    st.builds(lambda k, a: f"{k}:{a}", st.sampled_from(["first", "last", "every", "log", " first", "log "]),
              st.one_of(st.integers(-3, 40).map(str), st.text(max_size=6), st.just("9" * 30), st.just("²"))),
    st.lists(st.one_of(st.sampled_from([f"step{s}" for s in range(0, 100, 10)]), st.text(max_size=6)),
             max_size=5).map(",".join),
    st.sampled_from(["", "all", " all ", ",,", ",", "first:", ":3", "first:2:3", "log:1.5"]), st.text(max_size=12))


@given(st.integers(1, 10), selectors)
def _select(folder: Path, n: int, selector: str) -> None:
    whole = series(n)
    picked = outcome("selectors", lambda: whole.select(selector))
    if picked is not None:
        assert 0 < len(picked) <= len(whole) or picked is whole
        assert set(picked.names) <= set(whole.names)


def test_selectors(folder: Path) -> None:
    run_property("select", _select, folder, slow=False)


@pytest.mark.slow
def test_selectors_slow(folder: Path) -> None:
    run_property("select", _select, folder, slow=True)


@pytest.fixture(scope="module")
def local_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A series folder of three checkpoint folders (a config.json each is all ``from_local`` reads)."""
    root = tmp_path_factory.mktemp("local-series")
    for step in (0, 10, 100):
        (root / f"step{step}").mkdir()
        (root / f"step{step}" / "config.json").write_text("{}")
    return root


@given(st.lists(st.one_of(st.sampled_from(["step0", "step10", "step100"]),
                          st.sampled_from(["step0", "step10", "step100", "step999", "main", "", " step0"]),
                          st.text(max_size=8)), min_size=1, max_size=4),
       st.one_of(st.none(), st.none(), st.sampled_from(["all", "first:1", "last:2", "log:2", "every:2"]), selectors))
def _revisions(root: Path, revisions: list[str], selector: str | None) -> None:
    picked = outcome("local --revisions", lambda: CheckpointSeries.resolve(str(root), revisions).select(selector))
    if picked is not None:
        assert set(picked.names) <= {"step0", "step10", "step100"} and len(picked) > 0


def test_local_revisions(local_series: Path) -> None:
    run_property("revisions", _revisions, local_series, slow=False)


@pytest.mark.slow
def test_local_revisions_slow(local_series: Path) -> None:
    run_property("revisions", _revisions, local_series, slow=True)


# ---------------------------------------------------------------- option parsers

numbers_text = st.one_of(st.text(max_size=12), st.lists(st.one_of(st.integers(-10**30, 10**30).map(str),
                                                                  st.floats().map(repr), st.text(max_size=3)),
                                                        max_size=4).map(",".join))
sizes = st.one_of(st.text(max_size=10), st.builds(lambda n, u: f"{n}{u}", st.one_of(st.floats(0, 1e400).map(repr),
                                                                                     st.integers(0, 10**400).map(str)),
                                                  st.sampled_from(["", "GB", "gib", "M", "iB", "TB", "KiB", "x"])))


@given(st.sampled_from(["numbers-int", "numbers-float", "gigabytes", "sigma", "transfer", "dimensions", "split",
                        "controls"]),
       st.one_of(numbers_text, sizes, st.text(max_size=20), st.sampled_from(["a:b", ":b", "a:", "median", "nan",
                                                                             "inf", "-1", "1e999", "all", ",,"])))
def _option(folder: Path, parser: str, value: str) -> None:
    parse: Callable[[], Any] = {
        "numbers-int": lambda: _shared.numbers(value, "--layers", int),
        "numbers-float": lambda: _shared.numbers(value, "--alphas", float),
        "gigabytes": lambda: _shared.gigabytes(value),
        "sigma": lambda: _shared.sigma(value),
        "transfer": lambda: _shared.transfer_pairs(value),
        "dimensions": lambda: _shared.dimensions(value),
        "split": lambda: _shared.split(value),
        "controls": lambda: _shared.parse_controls(value),
    }[parser]
    got = outcome(f"option {parser}", parse)
    if parser.startswith("numbers") and got is not None:
        assert got and all(isinstance(v, int) or math.isfinite(v) for v in got)
    if parser == "gigabytes" and got is not None:
        assert math.isfinite(got) and got >= 0
    if parser == "sigma" and got is not None:
        assert math.isfinite(got) and got > 0
    if parser == "dimensions" and got is not None:
        assert got and all(d.strip() for d in got)


def test_option_parsers(folder: Path) -> None:
    run_property("options", _option, folder, slow=False)


@pytest.mark.slow
def test_option_parsers_slow(folder: Path) -> None:
    run_property("options", _option, folder, slow=True)


# ---------------------------------------------------------------- report on arbitrary tables

METRICS = ["accuracy", "accuracy_std", "accuracy_ci_low", "accuracy_ci_high", "majority_baseline", "mi_tx", "mi_ty",
           "selectivity", "control_lexical", "control_random_init", "control_shuffled", "weird"]
cells = st.one_of(st.integers(-5, 2000), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5),
                  st.none(), st.booleans())


@st.composite
def result_tables(draw: st.DrawFn) -> pd.DataFrame:
    """Mostly well-formed rows (so the figures are drawn), with columns dropped, added or scrambled."""
    n = draw(st.integers(0, 40))
    frame = pd.DataFrame({
        "revision": draw(st.lists(st.sampled_from(["step0", "step10", "step100", "main", ""]), min_size=n, max_size=n)),
        "step": draw(st.lists(st.one_of(st.sampled_from([0, 10, 100, 1000]), st.none()), min_size=n, max_size=n)),
        "dimension": draw(st.lists(st.sampled_from(["toxicity", "fairness", "x"]), min_size=n, max_size=n)),
        "layer": draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)),
        "metric": draw(st.lists(st.sampled_from(METRICS), min_size=n, max_size=n)),
        "value": draw(st.lists(st.one_of(st.floats(-1, 2), st.just(math.nan)), min_size=n, max_size=n)),
        "test_dataset": draw(st.lists(st.sampled_from(["", "privacy"]), min_size=n, max_size=n)),
    })
    for column in draw(st.lists(st.sampled_from(list(frame.columns) + ["extra", "Value"]), max_size=3)):
        action = draw(st.sampled_from(["drop", "scramble", "add"]))
        if action == "drop" and column in frame:
            frame = frame.drop(columns=column)
        elif n:
            frame[column] = draw(st.lists(cells, min_size=n, max_size=n))
    return frame


@given(result_tables())
def _report(folder: Path, table: pd.DataFrame) -> None:
    run = folder / f"run{next(_ids)}"
    run.mkdir()
    table.to_csv(run / "results.csv", index=False)
    result = outcome("report on a results.csv", lambda: run_report(ReportConfig((str(run),), png=False)))
    if result is not None:
        assert result.page.is_file()
    else:
        assert not (run / "report").exists(), "a refused report left a folder behind"


def test_report_tables(folder: Path) -> None:
    run_property("report", _report, folder, slow=False)


@pytest.mark.slow
def test_report_tables_slow(folder: Path) -> None:
    run_property("report", _report, folder, slow=True)
