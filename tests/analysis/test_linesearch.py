"""The Moré–Thuente line search: steps that meet the strong Wolfe conditions, and clear failures."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from trusttrace.analysis import linesearch
from trusttrace.analysis.linesearch import MoreThuente


def run_search(phi, stp: float, **kw) -> tuple[float, MoreThuente, int]:
    search = MoreThuente(**kw)
    f0, g0 = phi(0.0)
    stp = search.start(f0, g0, stp)
    evals = 0
    while search.status == "searching" and evals < 100:
        f, g = phi(stp)
        evals += 1
        stp = search.step(stp, f, g)
    return stp, search, evals


def wolfe(phi, stp: float, ftol: float = 1e-3, gtol: float = 0.9) -> bool:
    f0, g0 = phi(0.0)
    f, g = phi(stp)
    return f <= f0 + ftol * stp * g0 and abs(g) <= gtol * abs(g0)


FUNCTIONS = {
    "quadratic": lambda t: ((t - 3.0) ** 2, 2 * (t - 3.0)),
    "steep quartic": lambda t: ((t - 0.01) ** 4 - 0.001 * t, 4 * (t - 0.01) ** 3 - 0.001),
    "logistic": lambda t: (float(np.logaddexp(0, 5 - 4 * t)) + 0.01 * t * t,
                           float(-4 * np.exp(-np.logaddexp(0, 4 * t - 5))) + 0.02 * t),
    # Moré & Thuente's first test function, φ(t) = −t / (t² + β), β = 2
    "more-thuente 1": lambda t: (-t / (t * t + 2), (t * t - 2) / (t * t + 2) ** 2),
    "wiggly": lambda t: ((t - 1.5) ** 2 + 0.3 * math.sin(8 * t),
                         2 * (t - 1.5) + 2.4 * math.cos(8 * t)),
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("first", [1e-3, 0.1, 1.0, 10.0, 1000.0])
def test_the_step_meets_the_strong_wolfe_conditions(name, first):
    phi = FUNCTIONS[name]
    assert phi(0.0)[1] < 0, "every test function descends at 0, as a line search's direction must"
    stp, search, evals = run_search(phi, first, xtol=1e-12)  # a bracket may shrink as far as it needs
    assert search.status == "converged", search.message
    assert wolfe(phi, stp)
    assert evals <= 20


def test_an_exact_first_step_is_taken_at_once():
    stp, search, evals = run_search(FUNCTIONS["quadratic"], 3.0)
    assert (stp, search.status, evals) == (3.0, "converged", 1)


def test_a_bracket_too_narrow_ends_in_a_warning_not_a_loop():
    # a function whose slope never settles: curvature cannot be met with gtol this small
    phi = FUNCTIONS["wiggly"]
    stp, search, evals = run_search(phi, 10.0, ftol=1e-12, gtol=1e-9, xtol=0.1)
    assert search.status == "warning" and evals < 100
    assert phi(stp)[0] < phi(0.0)[0]  # it still returns its best step


def test_bad_input_is_refused_with_a_reason():
    search = MoreThuente()
    search.start(1.0, 0.5, 1.0)
    assert search.status == "error" and "descent" in search.message
    with pytest.raises(RuntimeError, match="has ended"):
        search.step(1.0, 0.0, 0.0)
    search = MoreThuente()
    stp = search.start(1.0, -1.0, 1.0)
    search.step(stp, float("nan"), 0.0)
    assert search.status == "error" and "not finite" in search.message
    with pytest.raises(ValueError, match="ftol < gtol"):
        MoreThuente(ftol=0.9, gtol=0.1)


def test_the_doctest_holds():
    assert doctest.testmod(linesearch).failed == 0
