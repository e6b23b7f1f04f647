"""Renamed public names: the old name gives the new object for one more release, and says so."""

from __future__ import annotations

import pytest

import trusttrace
from trusttrace import evaluate
from trusttrace.core.renames import RENAMED


@pytest.mark.parametrize(("old", "new"), sorted(RENAMED.items()))
def test_an_old_top_level_name_gives_the_new_object_with_a_warning_naming_it(old: str, new: str) -> None:
    with pytest.warns(DeprecationWarning, match=rf"trusttrace\.{old} is now {new}; .* write {new} instead"):
        value = getattr(trusttrace, old)
    assert value is getattr(trusttrace, new)
    assert new in trusttrace.__all__ and old not in trusttrace.__all__


def test_the_evaluate_package_keeps_its_own_old_name_only() -> None:
    with pytest.warns(DeprecationWarning, match=r"trusttrace\.evaluate\.EvalConfig is now SuiteConfig"):
        from trusttrace.evaluate import EvalConfig  # type: ignore[attr-defined]
    assert EvalConfig is evaluate.SuiteConfig
    with pytest.raises(AttributeError, match="has no attribute 'ProbeConfig'"):
        evaluate.ProbeConfig  # noqa: B018  (a probe name was never the evaluate package's)


def test_a_name_that_never_was_is_still_missing() -> None:
    with pytest.raises(AttributeError, match="module 'trusttrace' has no attribute 'EvalConfigs'"):
        trusttrace.EvalConfigs  # noqa: B018
