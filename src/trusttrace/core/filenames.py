"""Names from data as file names: one name, one file name, never a path (``safe_name``), and never two names
that one file system would take for one (``check_distinct``). ``layout`` builds every run path with these."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from .errors import UnknownNameError

_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._+=-")
_MAX_NAME = 120  # bytes of an encoded name before it is shortened (file systems allow 255; records add 12)


def safe_name(name: str) -> str:
    """A name from data (a revision, dataset, dimension, source) as one file or folder name, safely.

    Letters, digits and ``._+=-`` stay as they are (``step100``, ``ckpt_000``, ``toxicity``); every other
    character becomes ``%XX`` per UTF-8 byte (``org/branch`` → ``org%2Fbranch``, ``proxy:step0`` →
    ``proxy%3Astep0``), and so does a leading dot, so the result never holds a ``/``, is never ``.``, ``..``
    or hidden, and two different names never share a file name (``%`` itself is encoded). A name that would
    encode to more than 120 bytes keeps its first part and ends in ``~`` and 32 hex digits of its sha256
    (``~`` is otherwise encoded, so a shortened name never equals another name's full encoding).
    """
    out = []
    for i, char in enumerate(name):
        if char in _PLAIN and not (i == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
    encoded = "".join(out) or "%"
    if len(encoded) <= _MAX_NAME:
        return encoded
    head = encoded[:80]
    head = head[:head.rfind("%")] if "%" in head[-2:] else head  # never cut an escape in two
    return f"{head}~{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:32]}"


def check_distinct(names: Iterable[str], what: str) -> None:
    """Refuse two names that would share a file name: on a case-insensitive file system (macOS, Windows)
    ``Step10`` and ``step10`` are one file."""
    seen: dict[str, str] = {}
    for name in names:
        key = safe_name(name).casefold()
        if key in seen and seen[key] != name:
            raise UnknownNameError(f"{what} {seen[key]!r} and {name!r} would be stored under one file name "
                                   f"({safe_name(name)!r}) on a file system that ignores case. Rename one of them "
                                   "(e.g. copy the checkpoint folder under another name).")
        seen[key] = name
