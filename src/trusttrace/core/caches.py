"""trusttrace's own cache folders: ``$TRUSTTRACE_CACHE`` (or ``~/.cache/trusttrace``) and the caches inside it
that a variable can move or turn off."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import OptionError


def default_cache_dir() -> Path:
    """trusttrace's own cache: ``$TRUSTTRACE_CACHE`` or ``~/.cache/trusttrace``."""
    return Path(os.environ.get("TRUSTTRACE_CACHE", Path.home() / ".cache" / "trusttrace"))


CACHE_OFF = ("off", "0", "false", "no")  # values of a cache's variable that turn the cache off


def cache_folder(env: str, default: str, holds: str, off: str) -> Path | None:
    """One of trusttrace's caches: ``$env`` when set, else ``default`` inside ``default_cache_dir()``; None
    when ``$env`` is off (``CACHE_OFF``). ``holds`` and ``off`` say, for the error, what the folder holds and
    what turning it off does."""
    value = os.environ.get(env, "").strip()
    if value.lower() in CACHE_OFF:
        return None
    root = Path(value).expanduser() if value else default_cache_dir() / default
    if root.exists() and not root.is_dir():
        raise OptionError(f"{env}={value or root}: {root} is a file, not a folder. Set {env} to a folder for "
                          f"{holds}, or to off to {off}.")
    return root
