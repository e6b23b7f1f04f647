"""Public names that were renamed: for one more release the old name still gives the new object, with a
``DeprecationWarning`` that says which name to write instead."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Mapping
from typing import Any

# old public name → new; the fields and behaviour are unchanged, only the name reads apart from its neighbour
RENAMED: Mapping[str, str] = {
    "EvalConfig": "SuiteConfig",  # the suite's settings, apart from EvaluateConfig (the ``evaluate`` job)
    "ProbeConfig": "ProbeFitConfig",  # how probes are fitted and scored
    "ProbeRunConfig": "ProbeJobConfig",  # the ``probe`` job
    "ProbeRunResult": "ProbeJobResult",
}
REMOVED_IN = "0.2.0"


def renamed(module: str, name: str, lookup: Callable[[str], Any], public: Collection[str]) -> Any:
    """``module``'s attribute ``name`` when it is an old name of one of its ``public`` names: the new name's
    object, from ``lookup``, with a warning.

    For a module's ``__getattr__``; any other name raises ``AttributeError`` as a missing attribute does.
    """
    new = RENAMED.get(name)
    if new is None or new not in public:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    warnings.warn(f"{module}.{name} is now {new}; the old name goes in trusttrace {REMOVED_IN}. The fields are "
                  f"the same: write {new} instead.", DeprecationWarning, stacklevel=3)
    return lookup(new)
