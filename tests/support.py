"""Helpers the tests share (fixtures stay in ``conftest.py``): the counts a run shows at its end."""

from __future__ import annotations

REPORTED: dict[str, list[str]] = {}  # test module → lines shown when the session ends (conftest prints them)


def report(module: str, line: str) -> None:
    """Keep a count (inputs tried, kills) to show at the end of the run, past pytest's capture."""
    lines = REPORTED.setdefault(module, [])
    if line not in lines:  # a module-scoped fixture torn down twice reports once
        lines.append(line)
