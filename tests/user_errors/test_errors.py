"""docs/errors.md stays true: every listed mistake, run through the CLI, gives the listed exit code and message,
leaves what the list says on disk, and shows no traceback (see ``tests/user_errors/walk.py`` for the cases)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trusttrace.cli import app
from trusttrace.core import errors

from ..support import report
from .walk import CASES, Ctx, Outcome, build_context, run_case

DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
ROW = re.compile(r"^\|\s*`(?P<id>[a-z0-9-]+)`\s*\|(?P<mistake>[^|]*)\|\s*(?P<exit>\d)\s*\|(?P<message>[^|]*)\|"
                 r"(?P<disk>[^|]*)\|\s*$")
DISK = {"nothing": "nothing", "the folder as it was": "unchanged",
        "what was done, intact (`verify` lists the rest)": "resumable"}


def doc_rows() -> dict[str, dict[str, str]]:
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            rows[match["id"]] = {k: v.strip() for k, v in match.groupdict().items()}
    return rows


def fragments(message: str) -> list[str]:
    """The quoted parts of the doc's message column (each must appear in the output), ``…`` between them."""
    return [" ".join(f.split()) for f in re.findall(r"`([^`]+)`", message)]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> Ctx:
    return build_context(tmp_path_factory.mktemp("walk"))


OUTCOMES: list[Outcome] = []


@pytest.fixture(scope="module", autouse=True)
def _summary():
    yield
    counts = Counter(o.verdict for o in OUTCOMES)
    if OUTCOMES:
        report("test_errors", f"bad-input walk: {len(OUTCOMES)} inputs, "
                              + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


def test_the_doc_lists_every_case_once():
    rows = doc_rows()
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert sorted(rows) == sorted(ids), (set(rows) ^ set(ids))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_mistake_is_answered_as_the_doc_says(case, ctx, tmp_path):
    row = doc_rows()[case.id]
    outcome = run_case(case, ctx, tmp_path)
    if outcome.verdict == "skipped":
        pytest.skip(outcome.why)
    OUTCOMES.append(outcome)
    assert outcome.verdict == "ok", f"{outcome.verdict}: {outcome.why}\n{outcome.output[-1500:]}"
    assert outcome.exit_code == int(row["exit"]), outcome.output[-1500:]
    for fragment in fragments(row["message"]):
        assert fragment in outcome.output, f"{fragment!r} not in: {outcome.output[-1500:]}"
    if case.expect == "refuse":
        assert DISK.get(row["disk"]) == case.disk, f"doc says {row['disk']!r}, the case checks {case.disk!r}"


def test_debug_shows_the_traceback_and_the_default_does_not(tmp_path):
    argv = ["trace", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), "--dimensions", "toxicity"]
    plain = CliRunner().invoke(app, argv)
    debug = CliRunner().invoke(app, ["--debug", *argv])
    assert plain.exit_code == debug.exit_code == 2
    assert "Traceback" not in plain.output and "Traceback" in debug.output


def test_an_unexpected_error_is_called_a_bug(monkeypatch, tmp_path):
    from trusttrace.trace import job as trace

    def broken(config, progress=None):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(trace, "run_trace", broken)
    res = CliRunner().invoke(app, ["trace", "--model", "m", "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "internal error" in res.output and "bug in trusttrace" in res.output
    assert "Traceback" not in res.output


def test_every_usage_error_exits_2_and_every_run_failure_1():
    from trusttrace.cli._shared import exit_code

    assert {exit_code(kind("x")) for kind in errors.USAGE_ERRORS} == {2}
    assert exit_code(errors.RunFailure("x")) == exit_code(errors.DamagedFileError("x")) == 1
    assert all(issubclass(kind, ValueError) for kind in errors.USAGE_ERRORS)


@pytest.mark.parametrize("stream", ["/dev/full", "closed pipe"])
def test_an_output_the_system_refuses_is_one_line_not_a_traceback(tmp_path, stream):
    import subprocess
    import sys

    argv = [sys.executable, "-m", "trusttrace", "datasets"]
    if stream == "/dev/full":
        with open("/dev/full", "w") as full:
            done = subprocess.run(argv, stdout=full, stderr=subprocess.PIPE, text=True, check=False, timeout=120)
        err = done.stderr
        assert done.returncode == 1 and "standard output refused the command's output (No space left" in err, err
    else:  # the reader goes away before the table is written: a quiet exit 1, as `cat` does under `head`
        reader = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert reader.stdout is not None and reader.stderr is not None
        reader.stdout.close()
        err = reader.stderr.read()
        assert reader.wait(timeout=120) == 1, err
    assert "Traceback" not in err and "internal error" not in err and "Exception ignored" not in err, err
