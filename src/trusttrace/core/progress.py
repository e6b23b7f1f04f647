"""How long jobs report where they are: one protocol for every stage, which the CLI draws once.

A job announces stages (a line each: "preparing the corpus", "2/4 fine-tuning") and drives bars, each
named by a key: it starts a bar with its total, then advances it or sets it, optionally with a new
description. The base class logs stages and ignores bars, so library users get log lines and nothing else.

Example:
    >>> progress = Progress()
    >>> progress.start("steps", "pre-training", total=1000)
    >>> progress.update("steps", done=10, description="pre-training (loss 5.21)")
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class Progress:
    """Where a job reports; subclass it and override what you draw. Every method may be called often."""

    def stage(self, text: str) -> None:
        """A step of the job begins (logged at INFO by default)."""
        log.info(text)

    def start(self, key: str, description: str, total: int | None, done: int = 0) -> None:
        """A bar named ``key`` (re)starts with ``total`` units (None: not known yet), ``done`` of them done."""

    def update(self, key: str, *, advance: int = 0, done: int | None = None, total: int | None = None,
               description: str | None = None) -> None:
        """Move bar ``key`` on by ``advance``, or to ``done``; change its total or description."""

    def finish(self, key: str) -> None:
        """Bar ``key`` is done with (it may be removed from view)."""
