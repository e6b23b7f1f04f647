"""The KV cache's name across transformers versions: newer ones take and return it as ``cache`` and deprecate
``past_key_values`` (to be removed in 5.40); older ones know only ``past_key_values``. Every forward pass that
passes or reads a cache goes through these two functions, so one release of transformers or the other works."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn


def cache_keyword(model: nn.Module) -> str:
    """The keyword ``model``'s forward takes its KV cache by: ``cache`` where it has one, else
    ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def cache_of(output: Any) -> Any:
    """The KV cache a forward pass returned, under either name (``None`` without ``use_cache``)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)
